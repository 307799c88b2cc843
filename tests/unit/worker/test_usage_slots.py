"""Usage reports in flight per tenant and per worker: one tenant's long reports must not take
``GET /v1/usage`` from every other tenant."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator
from datetime import date
from typing import Any

import httpx
from ca4_worker.application.usage import UsageProjection
from ca4_worker.core.config import Settings
from ca4_worker.domain.usage import UsageDay
from ca4_worker.main import create_app
from ca4_worker.persistence.usage_memory import InMemoryUsageRecords
from prometheus_client import REGISTRY

from tests.unit.worker.factories import TENANT_A, TENANT_B
from tests.unit.worker.usage_scenario import RULES

TENANT_C = "tenant-c"


class SlowTenantRecords(InMemoryUsageRecords):
    """Tenant A's day records keep coming until released (a year of a large tenant's records);
    every other tenant's (and ``read:all``'s) are read at once."""

    def __init__(self, *, stubborn: bool = False) -> None:
        super().__init__()
        self.stubborn = stubborn
        """Keep going when the report's deadline cancels the scan (a call that ignores it)."""
        self.scans = 0
        """Tenant A's scans running."""
        self.scanning = asyncio.Event()
        self.release = asyncio.Event()

    async def days_between(
        self, start: date, end: date, *, tenant: str | None
    ) -> AsyncGenerator[UsageDay]:
        if tenant != TENANT_A:
            async for day in super().days_between(start, end, tenant=tenant):
                yield day
            return
        self.scans += 1
        self.scanning.set()
        try:
            while not self.release.is_set():
                try:
                    await asyncio.sleep(0.01)
                except asyncio.CancelledError:
                    if not self.stubborn:
                        raise
                yield UsageDay("s", start, TENANT_A, labels={}, runtime="colab")
        finally:
            self.scans -= 1


def _entry(key_id: str, key: str, tenant: str, scopes: str) -> str:
    return f"{key_id}:{hashlib.sha256(key.encode()).hexdigest()}:{tenant}:{scopes}"


KEYS = ",".join(
    [
        _entry("a", "k-a", TENANT_A, "read"),
        _entry("a2", "k-a2", TENANT_A, "read"),
        _entry("b", "k-b", TENANT_B, "read"),
        _entry("c", "k-c", TENANT_C, "read"),
        _entry("ops", "k-ops", "platform", "read:all"),
    ]
)


def _client(records: InMemoryUsageRecords, **settings: Any) -> httpx.AsyncClient:
    app = create_app(Settings(api_key_hashes=KEYS, **settings))
    app.state.usage = UsageProjection(records, rules=RULES)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker")


async def _get(client: httpx.AsyncClient, key: str) -> httpx.Response:
    return await client.get("/v1/usage", headers={"Authorization": f"Bearer {key}"})


async def test_one_tenants_long_reports_leave_room_for_every_other_tenant() -> None:
    """Two long reports of one key held both of the worker's report slots, and every other
    tenant's report was ``429`` until they ended (a review: 40 of 40). A tenant now has one
    report running at a time; its next waits its turn, and another tenant's runs meanwhile."""
    records = SlowTenantRecords()
    async with _client(records) as client:
        attack = [asyncio.create_task(_get(client, "k-a")) for _ in range(2)]
        await asyncio.wait_for(records.scanning.wait(), 5)
        await asyncio.sleep(0.05)  # the second has reached its turn check by now
        running = records.scans
        victim = await asyncio.wait_for(_get(client, "k-b"), 5)
        every_tenant = await asyncio.wait_for(_get(client, "k-ops"), 5)
        records.release.set()
        attackers = await asyncio.wait_for(asyncio.gather(*attack), 5)

    assert victim.status_code == 200
    assert every_tenant.status_code == 200
    assert running == 1
    assert [response.status_code for response in attackers] == [200, 200]


async def test_a_tenants_reports_past_its_cap_and_room_to_wait_are_429_at_once() -> None:
    records = SlowTenantRecords()
    async with _client(records, usage_max_reports_waiting_per_tenant=1) as client:
        first = asyncio.create_task(_get(client, "k-a"))
        await asyncio.wait_for(records.scanning.wait(), 5)
        queued = asyncio.create_task(_get(client, "k-a2"))  # another key of the same tenant
        await asyncio.sleep(0.05)
        refused = await asyncio.wait_for(_get(client, "k-a"), 5)
        other = await asyncio.wait_for(_get(client, "k-b"), 5)
        records.release.set()
        answered = await asyncio.wait_for(asyncio.gather(first, queued), 5)

    assert (refused.status_code, refused.json()) == (
        429,
        {
            "detail": "tenant 'tenant-a' already has 1 usage reports in flight here (1 more "
            "waiting); retry after the Retry-After seconds"
        },
    )
    assert refused.headers["Retry-After"] == "1"
    assert other.status_code == 200
    assert [response.status_code for response in answered] == [200, 200]


async def test_a_report_that_waits_half_its_deadline_is_429_naming_the_cap() -> None:
    records = SlowTenantRecords(stubborn=True)
    settings = {"usage_max_reports_in_flight": 1, "usage_report_timeout_s": 0.3}
    async with _client(records, **settings) as client:
        first = asyncio.create_task(_get(client, "k-a"))
        await asyncio.wait_for(records.scanning.wait(), 5)
        late = await asyncio.wait_for(_get(client, "k-b"), 5)
        records.release.set()
        await first

    assert (late.status_code, late.json()) == (
        429,
        {
            "detail": "this worker already has 1 usage reports in flight (none freed within "
            "0.15 s); retry after the Retry-After seconds"
        },
    )


async def test_a_report_refused_after_waiting_for_other_tenants_does_not_spend_its_budget() -> None:
    """The wait for a usage slot was left out of the read budget only once the slot was got: a
    report refused after waiting behind other tenants' reports paid the whole wait, and its
    tenant's next reads were ``429``."""
    records = SlowTenantRecords(stubborn=True)
    settings = {
        "usage_max_reports_in_flight": 1,
        "usage_report_timeout_s": 1.0,  # refused after waiting 0.5 s
        "read_budget_per_tenant": 0.1,
        "read_budget_burst_s": 0.2,
    }
    async with _client(records, **settings) as client:
        first = asyncio.create_task(_get(client, "k-a"))
        try:
            await asyncio.wait_for(records.scanning.wait(), 5)
            spent_before = _read_seconds(TENANT_B)
            late = await asyncio.wait_for(_get(client, "k-b"), 5)
            spent = _read_seconds(TENANT_B) - spent_before
        finally:
            records.release.set()  # a stubborn scan would outlive the test
            await first
        again = await asyncio.wait_for(_get(client, "k-b"), 5)  # the slot is free now

    assert late.status_code == 429
    assert "usage reports in flight" in late.json()["detail"]
    assert spent < 0.1  # not the 0.5 s it waited
    assert again.status_code == 200, again.json()


def _read_seconds(tenant: str) -> float:
    return REGISTRY.get_sample_value("ca4_worker_read_seconds_total", {"tenant": tenant}) or 0.0
