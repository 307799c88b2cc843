"""A usage report's groups are bounded: group values are the tenant's (label values, GPU model
names), and one report of many distinct values held every one of them."""

from __future__ import annotations

import csv
import hashlib
import io
import tracemalloc
from datetime import timedelta
from typing import Any

import httpx
import pytest
from ca4_worker.application.usage import UsageProjection, Versioned, roll_up, usage_report
from ca4_worker.core.config import Settings
from ca4_worker.domain.usage import GpuUsage, UsageDay
from ca4_worker.main import create_app
from ca4_worker.persistence.usage_memory import InMemoryUsageRecords
from ca4_worker.usage_cli import csv_text, table
from rich.console import Console

from tests.unit.worker.factories import TENANT_A, TENANT_B
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
                (f"GPU-{session}-{gpu}", 0): GpuUsage(
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
    whole = [
        row.model_dump()
        for row in roll_up(every, group_by="gpu_model", prices=prices, per_tenant=False)
    ]

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


TENANT_EVIL = "evil"
"""A tenant that reports under another tenant's project names and values."""


def _day(
    tenant: str, session: str, project: str | None, held_s: int, model: str = "H100"
) -> UsageDay:
    """One day record of one GPU held ``held_s`` seconds, labelled ``project`` (or not)."""
    return UsageDay(
        session_id=session,
        day=START.date(),
        tenant=tenant,
        labels={} if project is None else {"project": project},
        runtime="colab",
        gpus={(f"GPU-{session}", 0): GpuUsage(f"GPU-{session}", model, held_ms=held_s * 1000)},
    )


def _stored(*days: UsageDay) -> InMemoryUsageRecords:
    records = InMemoryUsageRecords()
    for day in days:
        records.days[day.document_id] = Versioned(day, 1)
    return records


async def _read(
    records: InMemoryUsageRecords, key: str, group_by: str, **settings: Any
) -> dict[str, Any]:
    """``GET /v1/usage`` with ``key``: ``k-a`` reads TENANT_A's records, ``k-ops`` every one."""
    keys = "\n".join(
        [
            f"a:{hashlib.sha256(b'k-a').hexdigest()}:{TENANT_A}:read",
            f"ops:{hashlib.sha256(b'k-ops').hexdigest()}:platform:read:all",
        ]
    )
    app = create_app(Settings(api_key_hashes=keys, **settings))
    app.state.usage = UsageProjection(records, rules=RULES)
    window = {
        "from": START.date().isoformat(),
        "to": (START.date() + timedelta(days=1)).isoformat(),
    }
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        response = await client.get(
            "/v1/usage",
            params={**window, "group_by": group_by},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _shape(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (row["tenant"], row["group"], row["kind"], row["held_seconds"], row["sessions"])
        for row in rows
    ]


async def test_a_report_across_tenants_never_merges_one_tenants_time_into_anothers_row() -> None:
    """A review's tenant reported 500 h under the victim's project name: a ``read:all`` report
    by project showed one row of 510 h, and a bill by label put the 500 h on the victim."""
    records = _stored(
        _day(TENANT_EVIL, "e1", "victim-proj", 500 * 3600),
        _day(TENANT_A, "v1", "victim-proj", 10 * 3600),
        _day(TENANT_A, "v2", "victim-other", 20 * 3600),
    )

    every = await _read(records, "k-ops", "label:project")
    own = await _read(records, "k-a", "label:project")

    # Per tenant, then largest first.
    assert _shape(every["rows"]) == [
        (TENANT_EVIL, "victim-proj", "value", 500 * 3600.0, 1),
        (TENANT_A, "victim-other", "value", 20 * 3600.0, 1),
        (TENANT_A, "victim-proj", "value", 10 * 3600.0, 1),
    ]
    # A tenant's own report is unchanged but for the (null) tenant field.
    assert _shape(own["rows"]) == [
        (None, "victim-other", "value", 20 * 3600.0, 1),
        (None, "victim-proj", "value", 10 * 3600.0, 1),
    ]


async def test_group_by_tenant_gives_one_row_per_tenant() -> None:
    records = _stored(
        _day(TENANT_EVIL, "e1", "victim-proj", 500),
        _day(TENANT_A, "v1", "victim-proj", 10),
        _day(TENANT_A, "v2", None, 20),
    )

    every = await _read(records, "k-ops", "tenant")
    own = await _read(records, "k-a", "tenant")

    assert _shape(every["rows"]) == [
        (TENANT_EVIL, TENANT_EVIL, "value", 500.0, 1),
        (TENANT_A, TENANT_A, "value", 30.0, 2),
    ]
    assert _shape(own["rows"]) == [(None, TENANT_A, "value", 30.0, 2)]


async def test_a_value_named_like_a_synthetic_row_keeps_a_row_of_its_own() -> None:
    """A label value ``(none)`` merged with the records without the label, and a value
    ``(other)`` with the groups past the cap (even with ``truncated: false``)."""
    records = _stored(
        _day(TENANT_A, "s1", "(none)", 100),
        _day(TENANT_A, "s2", None, 200),
        _day(TENANT_A, "s3", "(other)", 300),
        _day(TENANT_A, "s4", "later", 50),
    )

    uncapped = await _read(records, "k-a", "label:project")
    capped = await _read(records, "k-a", "label:project", usage_max_groups=3)

    assert uncapped["truncated"] is False
    assert _shape(uncapped["rows"]) == [
        (None, "(other)", "value", 300.0, 1),
        (None, "(none)", "none", 200.0, 1),
        (None, "(none)", "value", 100.0, 1),
        (None, "later", "value", 50.0, 1),
    ]
    assert capped["truncated"] is True
    assert _shape(capped["rows"]) == [
        (None, "(other)", "value", 300.0, 1),
        (None, "(none)", "none", 200.0, 1),
        (None, "(none)", "value", 100.0, 1),
        (None, "(other)", "other", 50.0, 1),
    ]


async def test_one_tenants_many_groups_do_not_crowd_anothers_out_of_a_spanning_report() -> None:
    """A review's tenant made 1,000 distinct project values before another tenant's records
    were read: with the cap kept first met across tenants, every later tenant's row was in
    ``(other)``. The cap is now shared fairly: a tenant with few groups keeps them, the one
    with many is cut to what is left, each tenant's groups first met, one ``(other)`` each."""
    noise = [_day(TENANT_EVIL, f"e{index}", f"junk{index:03d}", 1) for index in range(100)]
    records = _stored(
        *noise,
        _day(TENANT_A, "v1", "vision", 10),
        _day(TENANT_A, "v2", "nlp", 20),
        _day(TENANT_B, "b1", "b-only", 30),
    )

    every = await _read(records, "k-ops", "label:project", usage_max_groups=12)

    rows = every["rows"]
    assert every["truncated"] is True
    assert [row for row in _shape(rows) if row[0] != TENANT_EVIL] == [
        (TENANT_A, "nlp", "value", 20.0, 1),
        (TENANT_A, "vision", "value", 10.0, 1),
        (TENANT_B, "b-only", "value", 30.0, 1),
    ]
    evil = [row for row in rows if row["tenant"] == TENANT_EVIL]
    # The other tenants' 3 groups and 9 of evil's, the first it sent, then its (other).
    assert [row["group"] for row in evil[:-1]] == sorted(f"junk{i:03d}" for i in range(9))
    assert (evil[-1]["kind"], evil[-1]["held_seconds"], evil[-1]["sessions"]) == ("other", 91, 91)
    assert sum(row["held_seconds"] for row in rows) == 100 + 10 + 20 + 30


async def test_ca4_usage_shows_each_rows_tenant_and_kind() -> None:
    """``ca4 usage`` reads every tenant: its table and CSV name each row's tenant."""
    records = _stored(
        _day(TENANT_EVIL, "e1", "victim-proj", 500),
        _day(TENANT_A, "v1", "victim-proj", 10),
        _day(TENANT_A, "v2", None, 20),
    )
    report = await usage_report(
        records,
        START.date(),
        START.date() + timedelta(days=1),
        tenant=None,
        group_by="label:project",
        prices={},
        currency="USD",
    )

    console = Console(width=200, record=True)
    console.print(table(report))
    lines = console.export_text().splitlines()
    rows = list(csv.DictReader(io.StringIO(csv_text(report))))

    assert [(row["tenant"], row["group"], row["kind"], row["held_seconds"]) for row in rows] == [
        (TENANT_EVIL, "victim-proj", "value", "500.0"),
        (TENANT_A, "(none)", "none", "20.0"),
        (TENANT_A, "victim-proj", "value", "10.0"),
    ]
    header = next(line for line in lines if "held h" in line)
    assert [cell.strip() for cell in header.split("┃")[1:3]] == ["tenant", "group"]
    cells = [[cell.strip() for cell in line.split("│")[1:3]] for line in lines if "│" in line]
    assert [TENANT_EVIL, "victim-proj"] in cells
    assert [TENANT_A, "victim-proj"] in cells
