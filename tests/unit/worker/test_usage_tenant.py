"""``GET /v1/usage?tenant=``: an operator reads one tenant's usage (only that tenant's records
are read), a tenant's key only its own. Without it one tenant's many records stalled every
``read:all`` report past its deadline, and no tenant's usage could be had from the API."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Any

import httpx
from ca4_worker.application.usage import UsageProjection
from ca4_worker.core.config import Settings
from ca4_worker.main import create_app
from ca4_worker.persistence.usage_memory import InMemoryUsageRecords

from tests.unit.worker.factories import TENANT_A, TENANT_B
from tests.unit.worker.usage_scenario import (
    RULES,
    START,
    RecordingRecords,
    day_record,
)

"""A tenant with more day records than any report reads within its deadline."""
WINDOW = {
    "from": START.date().isoformat(),
    "to": (START.date() + timedelta(days=1)).isoformat(),
}


def _entry(key_id: str, key: str, tenant: str, scopes: str) -> str:
    return f"{key_id}:{hashlib.sha256(key.encode()).hexdigest()}:{tenant}:{scopes}"


KEYS = ",".join(
    [
        _entry("a", "k-a", TENANT_A, "read"),
        _entry("ops", "k-ops", "platform", "read:all"),
    ]
)


def _stalling_records() -> RecordingRecords:
    """Tenant A's and B's few records, and a hostile tenant's that keep coming: any scan that
    includes that tenant's (every tenant's, or its own) runs until the report's deadline."""
    return RecordingRecords(
        day_record(TENANT_A, "a1", "vision", 10),
        day_record(TENANT_B, "b1", "b-only", 30),
        stalling=True,
    )


def _client(records: InMemoryUsageRecords, **settings: Any) -> httpx.AsyncClient:
    app = create_app(Settings(api_key_hashes=KEYS, **settings))
    app.state.usage = UsageProjection(records, rules=RULES)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker")


async def _get(client: httpx.AsyncClient, key: str, **params: str) -> httpx.Response:
    return await asyncio.wait_for(
        client.get(
            "/v1/usage",
            params={**WINDOW, **params},
            headers={"Authorization": f"Bearer {key}"},
        ),
        10,
    )


def _shape(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (row["tenant"], row["group"], row["kind"], row["held_seconds"], row["sessions"])
        for row in body["rows"]
    ]


async def test_an_operator_reads_one_tenants_usage_while_another_stalls_every_tenants() -> None:
    """A review's tenant stored ~16,000 heavy day records: every ``read:all`` report over
    those days was ``503``. One tenant's report reads only that tenant's records (its rows
    still name it), and the ``503`` of the report of every tenant says to ask for one."""
    records = _stalling_records()
    async with _client(records, usage_report_timeout_s=0.3) as client:
        every = await _get(client, "k-ops")
        one = await _get(client, "k-ops", tenant=TENANT_A)

    assert (every.status_code, every.json()) == (
        503,
        {
            "detail": "the usage report did not finish within 0.3 s; retry after the "
            "Retry-After seconds, or ask for fewer days or one tenant's (tenant=<name>)"
        },
    )
    assert one.status_code == 200, one.text
    assert (one.json()["truncated"], _shape(one.json())) == (
        False,
        [(TENANT_A, "vision", "value", 10.0, 1)],
    )
    assert records.asked == [None, TENANT_A]


async def test_a_tenant_key_may_name_its_own_tenant_and_no_other() -> None:
    """Another tenant's name is ``403`` (the same for one that does not exist: it tells
    nothing), and nothing is read; its own reads as without it."""
    records = _stalling_records()
    async with _client(records) as client:
        other = await _get(client, "k-a", tenant=TENANT_B)
        unknown = await _get(client, "k-a", tenant="no-such-tenant")
        named = await _get(client, "k-a", tenant=TENANT_A)
        unnamed = await _get(client, "k-a")

    for refused in (other, unknown):
        assert (refused.status_code, refused.json()) == (
            403,
            {
                "detail": "API key 'a' lacks the 'read:all' scope: it reads only its own "
                "tenant's usage (leave out tenant, or pass tenant=tenant-a)"
            },
        )
    assert (named.status_code, unnamed.status_code) == (200, 200)
    assert named.json() == unnamed.json()
    assert _shape(named.json()) == [(None, "vision", "value", 10.0, 1)]
    assert records.asked == [TENANT_A, TENANT_A]


async def test_a_tenant_no_key_could_belong_to_is_422() -> None:
    records = _stalling_records()
    async with _client(records) as client:
        response = await _get(client, "k-ops", tenant="a/b")

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["loc"], error["input"]) == (["query", "tenant"], "a/b")
    assert records.asked == []


def test_the_openapi_document_describes_the_tenant_parameter() -> None:
    app = create_app(Settings(api_key_hashes=KEYS))
    operation = app.openapi()["paths"]["/v1/usage"]["get"]

    [tenant] = [item for item in operation["parameters"] if item["name"] == "tenant"]
    assert tenant["in"] == "query"
    assert tenant["required"] is False
    assert "read:all" in tenant["description"]
    description = " ".join(operation["description"].split())
    assert "``tenant=<name>`` reads only that tenant's records" in description
    assert "a tenant's key only its own (any other is ``403``)" in description
    assert "another tenant's usage (tenant=)" in operation["responses"]["403"]["description"]
