"""A usage report's groups are bounded: group values are the tenant's (label values, GPU model
names), and one report of many distinct values held every one of them."""

from __future__ import annotations

import hashlib
import tracemalloc
from datetime import timedelta
from typing import Any

import httpx
import pytest
from ca4_worker.application.usage import UsageProjection, Versioned, roll_up
from ca4_worker.core.config import Settings
from ca4_worker.domain.usage import GpuUsage, UsageDay
from ca4_worker.main import create_app
from ca4_worker.persistence.usage_memory import InMemoryUsageRecords

from tests.unit.worker.factories import TENANT_A
from tests.unit.worker.usage_scenario import RULES, START

LONG = "\N{GRINNING FACE}" * 118
"""Most of a 128-character GPU name, as the review's reports sent."""


def _records(sessions: int, gpus: int) -> InMemoryUsageRecords:
    """``sessions`` day records of ``gpus`` GPUs each, every GPU of a model of its own."""
    records = InMemoryUsageRecords()
    for session in range(sessions):
        day = UsageDay(
            session_id=f"s{session}",
            day=START.date(),
            tenant=TENANT_A,
            labels={"project": "p"},
            runtime="colab",
            gpus={
                f"GPU-{session}-{gpu}": GpuUsage(
                    f"GPU-{session}-{gpu}",
                    f"{LONG}{session:06d}-{gpu:03d}",
                    held_ms=60_000 * (gpu + 1),
                    busy_ms=30_000 * gpu,
                    idle_ms=1_000 * session,
                )
                for gpu in range(gpus)
            },
        )
        records.days[day.document_id] = Versioned(day, 1)
    return records


def _client(records: InMemoryUsageRecords, **settings: Any) -> httpx.AsyncClient:
    keys = f"a:{hashlib.sha256(b'k-a').hexdigest()}:{TENANT_A}:read"
    app = create_app(Settings(api_key_hashes=keys, **settings))
    app.state.usage = UsageProjection(records, rules=RULES)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker")


async def _report(records: InMemoryUsageRecords, **settings: Any) -> httpx.Response:
    window = {
        "from": START.date().isoformat(),
        "to": (START.date() + timedelta(days=1)).isoformat(),
    }
    async with _client(records, **settings) as client:
        return await client.get(
            "/v1/usage",
            params={**window, "group_by": "gpu_model"},
            headers={"Authorization": "Bearer k-a"},
        )


SUMMED = ("held_seconds", "busy_seconds", "idle_seconds", "unpriced_hours", "cost")


def _totals(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {name: sum(row[name] for row in rows) for name in SUMMED}


async def test_groups_past_the_cap_are_summed_in_one_other_row_that_keeps_the_totals() -> None:
    """A review's tenant sent 64 GPUs of distinct 128-character names per report: 200
    sessions gave 12,800 groups, 1,500 day records 96,000 (+458 MiB, a 31 MiB answer, rows
    and JSON built on the event loop after the deadline). Past the cap, the rest is one
    ``(other)`` row, and nothing is lost from the totals."""
    records = _records(sessions=30, gpus=8)  # 240 groups
    prices = {f"{LONG}{session:06d}-001": 2.0 for session in range(30)}
    every = [item.record for item in records.days.values()]
    whole = [row.model_dump() for row in roll_up(every, group_by="gpu_model", prices=prices)]

    response = await _report(records, usage_max_groups=50, usage_prices=prices)

    assert response.status_code == 200
    body = response.json()
    rows = body["rows"]
    assert body["truncated"] is True
    assert len(rows) == 51
    other = rows[-1]
    assert other["group"] == "(other)"
    # The first groups met keep their rows (one session's 8 models after another), exactly.
    met_first = [f"{LONG}{session:06d}-{gpu:03d}" for session in range(7) for gpu in range(8)][:50]
    assert {row["group"] for row in rows[:-1]} == set(met_first)
    by_group = {row["group"]: row for row in whole}
    assert all(row == by_group[row["group"]] for row in rows[:-1])
    assert [row["held_seconds"] for row in rows[:-1]] == sorted(
        (row["held_seconds"] for row in rows[:-1]), reverse=True
    )
    # Everything else is in (other): the totals are those of every group (each row's cost is
    # rounded to 6 places).
    assert _totals(rows) == pytest.approx(_totals(whole), abs=len(whole) * 1e-6)
    assert (other["gpus"], other["sessions"]) == (240 - 50, 30 - 6)


async def test_a_report_under_the_cap_is_not_truncated() -> None:
    records = _records(sessions=30, gpus=8)

    response = await _report(records, usage_max_groups=240)

    body = response.json()
    assert (response.status_code, body["truncated"], len(body["rows"])) == (200, False, 240)
    assert "(other)" not in {row["group"] for row in body["rows"]}


async def test_a_report_of_many_groups_holds_no_more_than_its_cap() -> None:
    """Groups are folded as they come, never all built and then cut: the report's peak
    allocation follows the cap, not the tenant's distinct values."""
    records = _records(sessions=100, gpus=64)  # 6,400 groups of 128-character names

    tracemalloc.start()
    try:
        response = await _report(records, usage_max_groups=100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.status_code == 200
    # About 2.7 MiB with the app itself; 17 MiB when every group was held (before the cap).
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.1f} MiB"
    body = response.json()
    assert (body["truncated"], len(body["rows"])) == (True, 101)
    held = sum(row["held_seconds"] for row in body["rows"])
    assert held == 100 * sum(60 * (gpu + 1) for gpu in range(64))
