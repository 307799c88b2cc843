"""GPU usage accounting on the in-memory records: exact seconds, exactly once, the read API."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tracemalloc
from collections.abc import AsyncGenerator, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from ca4_schemas import GpuMetadataReported
from ca4_worker.application.usage import UsageProjection, Versioned, roll_up, usage_report
from ca4_worker.core.config import Settings
from ca4_worker.domain.records import Position, PositionedEvent
from ca4_worker.domain.usage import (
    USAGE_MAX_ENTRIES_PER_DAY,
    USAGE_MAX_LABEL_SETS_PER_DAY,
    GpuUsage,
    UsageDay,
    split_by_day,
)
from ca4_worker.main import create_app
from ca4_worker.persistence.usage_memory import InMemoryUsageRecords
from ca4_worker.persistence.usage_mongo import day_from_document

from tests.unit.worker.factories import TENANT_A, TENANT_B, event_body, gpu_sample, positioned
from tests.unit.worker.usage_scenario import (
    EXPECTED_BY_PROJECT,
    EXPECTED_VISION_BY_DAY,
    RULES,
    START,
    scenario_events,
    seconds,
)


async def _by_project(records: InMemoryUsageRecords) -> dict[str, dict[str, float]]:
    days = [
        day
        async for day in records.days_between(
            START.date(), START.date().replace(day=7), tenant=None
        )
    ]
    return {row.group: seconds(row.model_dump()) for row in roll_up(days, group_by="label:project")}


async def _applied_in(batches: Sequence[Sequence[PositionedEvent]]) -> InMemoryUsageRecords:
    records = InMemoryUsageRecords()
    projection = UsageProjection(records, rules=RULES)
    for batch in batches:
        await projection.apply(batch)
    return records


async def test_known_stretches_give_exact_seconds_per_project_and_day() -> None:
    records = await _applied_in([scenario_events()])
    assert await _by_project(records) == EXPECTED_BY_PROJECT
    vision = {
        item.record.day.isoformat(): _day_seconds(item.record)
        for item in records.days.values()
        if item.record.session_id == "usage-vision"
    }
    assert vision == EXPECTED_VISION_BY_DAY


def _day_seconds(day: UsageDay) -> dict[str, float]:
    usage = day.gpus["GPU-usage-t4", 0]
    return {
        "held_seconds": usage.held_ms / 1000,
        "busy_seconds": usage.busy_ms / 1000,
        "idle_seconds": usage.idle_ms / 1000,
    }


async def test_batching_redelivery_and_duplicates_change_nothing() -> None:
    events = scenario_events()
    one_by_one = await _applied_in([[event] for event in events])
    redelivered = await _applied_in([events[:7], events[3:12], events, events[10:]])
    assert await _by_project(one_by_one) == EXPECTED_BY_PROJECT
    assert await _by_project(redelivered) == EXPECTED_BY_PROJECT


def _saves_of_the_round_after(first: int) -> list[list[str]]:
    """The record ids each save of applying ``scenario_events()[first:]`` writes, on top of
    the records of the events before it (one batch each)."""
    events = scenario_events()
    records = InMemoryUsageRecords()
    asyncio.run(UsageProjection(records, rules=RULES).apply(events[:first]))
    calls: list[list[str]] = []
    save = records.save

    async def noted(days: Sequence[Versioned[UsageDay]]) -> None:
        calls.append([item.record.document_id for item in days])
        await save(days)

    records.save = noted  # type: ignore[method-assign]
    asyncio.run(UsageProjection(records, rules=RULES).apply(events[first:]))
    return calls


def test_a_round_across_midnight_writes_days_then_the_home_then_clears_the_old_one() -> None:
    # Events 8-10: the vision session's last intervals before midnight, the report at midnight
    # moves its marks to the next day (and the nlp session's reports after them).
    assert _saves_of_the_round_after(8) == [
        ["usage-vision/2026-01-05"],
        ["usage-vision/2026-01-06", "usage-nlp/2026-01-05"],
        ["usage-vision/2026-01-05"],
    ]


@contextlib.contextmanager
def _killed_at_save(records: InMemoryUsageRecords, saves_first: int) -> Iterator[None]:
    """The worker dies at the save after ``saves_first`` saves went through."""
    save = records.save
    calls = 0

    async def dying(days: Sequence[Versioned[UsageDay]]) -> None:
        nonlocal calls
        calls += 1
        if calls > saves_first:
            raise RuntimeError("worker killed")
        await save(days)

    records.save = dying  # type: ignore[method-assign]
    try:
        yield
    finally:
        records.save = save  # type: ignore[method-assign]


@pytest.mark.parametrize("dies_at", [0, 1, 2])
async def test_a_crash_at_any_write_of_a_round_counts_nothing_twice(dies_at: int) -> None:
    records = InMemoryUsageRecords()
    projection = UsageProjection(records, rules=RULES)
    events = scenario_events()
    await projection.apply(events[:8])
    with pytest.raises(RuntimeError, match="worker killed"), _killed_at_save(records, dies_at):
        await projection.apply(events[8:])
    await projection.apply(events[6:])  # redelivery from before the crash
    assert await _by_project(records) == EXPECTED_BY_PROJECT
    holding = [
        item.record.document_id for item in records.days.values() if item.record.marks is not None
    ]
    assert sorted(holding) == ["usage-nlp/2026-01-05", "usage-vision/2026-01-06"]


def _held_seconds(records: InMemoryUsageRecords) -> dict[str, dict[str, float]]:
    return {
        key: {uuid: usage.held_ms / 1000 for uuid, usage in item.record.gpus.items()}
        for key, item in sorted(records.days.items())
    }


async def test_marks_left_behind_by_a_crash_never_bill_a_late_reading_twice() -> None:
    """Killed before the old home is cleared, redelivered in smaller batches, then a late
    reading that touches only the old home's day: the newer home's marks must still win."""
    midnight = START.replace(hour=0, minute=0) + timedelta(days=1)

    def report(offset: int, seconds_from_midnight: int, uuids: list[str]) -> PositionedEvent:
        body = event_body(
            session_id="s",
            occurred_at=midnight + timedelta(seconds=seconds_from_midnight),
            gpus=[gpu_sample(index, uuid_=uuid) for index, uuid in enumerate(uuids)],
        )
        return PositionedEvent(
            event=GpuMetadataReported.model_validate(body), position=Position(0, offset)
        )

    events = [
        report(0, -120, ["g", "k"]),
        report(1, -60, ["g", "k"]),
        report(2, -30, ["g", "k"]),
        report(3, 300, ["g"]),  # the marks move to the next day
        report(4, -10, ["k"]),  # a late reading of k, from before midnight
        report(5, 60, ["k"]),
    ]
    once = InMemoryUsageRecords()
    await UsageProjection(once, rules=RULES).apply(events)

    records = InMemoryUsageRecords()
    projection = UsageProjection(records, rules=RULES)
    await projection.apply(events[:2])
    # Killed before clearing the old home (the third write of the round).
    with pytest.raises(RuntimeError, match="worker killed"), _killed_at_save(records, 2):
        await projection.apply(events[2:4])
    for event in events[2:]:
        await projection.apply([event])
    assert _held_seconds(records) == _held_seconds(once)


async def test_a_round_writes_one_record_per_session_with_its_marks() -> None:
    """Seconds and marks in one statement: 200 sessions of 4 GPUs, two reports each (in
    calls of at most 100 statements, the default chunk)."""
    start = START - timedelta(hours=1)
    events = [
        PositionedEvent(
            event=GpuMetadataReported.model_validate(
                event_body(
                    session_id=f"s-{session}",
                    occurred_at=start + timedelta(seconds=30 * report),
                    gpus=[gpu_sample(index) for index in range(4)],
                )
            ),
            position=Position(session % 3, 2 * session + report),
        )
        for session in range(200)
        for report in range(2)
    ]
    records = InMemoryUsageRecords()
    projection = UsageProjection(records, rules=RULES)
    await projection.apply(events[0::2])
    calls: list[int] = []
    save = records.save

    async def counted(days: Sequence[Versioned[UsageDay]]) -> None:
        calls.append(len(days))
        await save(days)

    records.save = counted  # type: ignore[method-assign]
    await projection.apply(events[1::2])
    assert calls == [100, 100]
    assert all(item.record.marks is not None for item in records.days.values())
    assert sum(len(item.record.gpus) for item in records.days.values()) == 800


async def test_rebuild_after_reset_reproduces_the_records() -> None:
    records = await _applied_in([scenario_events()])
    before = await _by_project(records)
    await records.reset()
    await UsageProjection(records, rules=RULES).apply(scenario_events())
    assert await _by_project(records) == before == EXPECTED_BY_PROJECT


def test_roll_ups_by_model_and_runtime_and_prices() -> None:
    day = UsageDay(
        session_id="s",
        day=START.date(),
        tenant=TENANT_A,
        labels={"project": "p"},
        runtime="colab",
    )

    day.gpus = {
        ("g1", 0): GpuUsage("g1", "Tesla T4", held_ms=7_200_000, busy_ms=3_600_000, idle_ms=0),
        ("g2", 0): GpuUsage("g2", "L4", held_ms=3_600_000, busy_ms=0, idle_ms=3_600_000),
    }
    by_model = roll_up([day], group_by="gpu_model", prices={"Tesla T4": 0.35})
    assert [(row.group, row.held_hours, row.cost, row.unpriced_hours) for row in by_model] == [
        ("Tesla T4", 2.0, 0.7, 0.0),
        ("L4", 1.0, 0.0, 1.0),
    ]
    by_runtime = roll_up([day], group_by="runtime")
    assert [(row.group, row.held_hours, row.idle_hours, row.gpus) for row in by_runtime] == [
        ("colab", 3.0, 1.0, 2)
    ]
    assert roll_up([day], group_by="label:team")[0].group == "(none)"


def test_intervals_split_at_utc_midnight() -> None:
    before = START.replace(hour=23, minute=59, second=30)
    after = before.replace(day=6, hour=0, minute=0, second=45)
    assert [(day.isoformat(), ms) for day, ms in split_by_day(before, after)] == [
        ("2026-01-05", 30_000),
        ("2026-01-06", 45_000),
    ]


def test_days_are_utc_days_whatever_offset_a_time_comes_in() -> None:
    """A stored mark may come back in another ``tzinfo`` than the event's UTC: in UTC+2 both
    ends of this interval fall on the same local day, but it crosses UTC midnight."""
    plus_two = timezone(timedelta(hours=2))
    before = START.replace(hour=23, minute=59, second=30)
    after = before.replace(day=6, hour=0, minute=0, second=45)
    assert [
        (day.isoformat(), ms)
        for day, ms in split_by_day(before.astimezone(plus_two), after.astimezone(plus_two))
    ] == [("2026-01-05", 30_000), ("2026-01-06", 45_000)]
    same_day = before.replace(minute=0)
    assert [
        (day.isoformat(), ms) for day, ms in split_by_day(same_day.astimezone(plus_two), before)
    ] == [("2026-01-05", 3_540_000)]
    assert split_by_day(before, before) == []
    assert split_by_day(before, same_day) == []


def _key_entry(key_id: str, key: str, tenant: str, scopes: str) -> str:
    return f"{key_id}:{hashlib.sha256(key.encode()).hexdigest()}:{tenant}:{scopes}"


@pytest.fixture
async def usage_api(tmp_path: Path) -> Any:
    keys = tmp_path / "keys"
    keys.write_text(
        "\n".join(
            [
                _key_entry("a", "k-a", TENANT_A, "read"),
                _key_entry("b", "k-b", TENANT_B, "read"),
                _key_entry("ops", "k-ops", "platform", "read:all"),
                _key_entry("w", "k-w", TENANT_A, "write"),
            ]
        )
    )
    app = create_app(Settings(api_keys_file=keys, usage_prices={"Tesla T4": 0.35}))
    records = await _applied_in([scenario_events()])
    app.state.usage = UsageProjection(records, rules=RULES)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        yield client


async def _get(client: httpx.AsyncClient, key: str, **params: str) -> httpx.Response:
    return await client.get("/v1/usage", params=params, headers={"Authorization": f"Bearer {key}"})


async def test_the_usage_route_answers_per_project_within_the_tenant(usage_api: Any) -> None:
    window = {"from": "2026-01-05", "to": "2026-01-07"}
    own = await _get(usage_api, "k-a", **window)
    assert own.status_code == 200
    body = own.json()
    assert (body["from"], body["to"], body["group_by"], body["currency"]) == (
        "2026-01-05",
        "2026-01-07",
        "label:project",
        "USD",
    )
    assert {row["group"]: seconds(row) for row in body["rows"]} == EXPECTED_BY_PROJECT
    vision = next(row for row in body["rows"] if row["group"] == "vision")
    assert vision["cost"] == pytest.approx(720 / 3600 * 0.35)
    other = await _get(usage_api, "k-b", **window)
    assert other.json()["rows"] == []
    every = await _get(usage_api, "k-ops", **window, group_by="gpu_model")
    assert [row["group"] for row in every.json()["rows"]] == ["Tesla T4", "NVIDIA A100-SXM4-40GB"]


async def test_the_usage_route_refuses_bad_input_and_keys(usage_api: Any) -> None:
    backwards = await _get(usage_api, "k-a", **{"from": "2026-01-07", "to": "2026-01-05"})
    too_long = await _get(usage_api, "k-a", **{"from": "2000-01-01", "to": "2026-01-05"})
    for refused, start in ((backwards, "2026-01-07"), (too_long, "2000-01-01")):
        assert (refused.status_code, refused.json()) == (
            422,
            {
                "detail": [
                    {
                        "type": "value_error",
                        "loc": ["query", "from"],
                        "msg": "from must be before to, at most 366 days apart",
                        "input": start,
                    }
                ]
            },
        )
    assert (await _get(usage_api, "k-a", group_by="host")).status_code == 422
    assert (await _get(usage_api, "k-w")).status_code == 403
    assert (await usage_api.get("/v1/usage")).status_code == 401


async def test_a_default_from_before_year_one_is_422_not_500(usage_api: Any) -> None:
    response = await _get(usage_api, "k-a", to="0001-01-03")

    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": [
                {
                    "type": "value_error",
                    "loc": ["query", "to"],
                    "msg": "to leaves no room for the default 7 days before it",
                    "input": "0001-01-03",
                }
            ]
        },
    )


class EndlessRecords(InMemoryUsageRecords):
    """Day records that keep coming until released (a long range of a large tenant)."""

    def __init__(self) -> None:
        super().__init__()
        self.scans = 0
        """Scans running: a report closes its scan however it ends."""
        self.scanning = asyncio.Event()
        self.release = asyncio.Event()

    async def days_between(
        self, start: date, end: date, *, tenant: str | None
    ) -> AsyncGenerator[UsageDay]:
        self.scans += 1
        self.scanning.set()
        try:
            while not self.release.is_set():
                await asyncio.sleep(0.01)
                yield UsageDay("s", start, TENANT_A, labels={}, runtime="colab")
        finally:
            self.scans -= 1


def _usage_app(records: InMemoryUsageRecords, **settings: Any) -> httpx.AsyncClient:
    keys = _key_entry("a", "k-a", TENANT_A, "read")
    app = create_app(Settings(api_key_hashes=keys, **settings))
    app.state.usage = UsageProjection(records, rules=RULES)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker")


async def test_a_usage_report_past_its_deadline_is_503_and_its_scan_closed() -> None:
    """A report read and summed a tenant's whole range with no deadline: 8,000 large day
    records took 7 s of the event loop, and a longer range would run for minutes."""
    records = EndlessRecords()
    async with _usage_app(records, usage_report_timeout_s=0.2) as client:
        response = await asyncio.wait_for(_get(client, "k-a"), 5)

    assert (response.status_code, response.json()) == (
        503,
        {
            "detail": "the usage report did not finish within 0.2 s; retry after the "
            "Retry-After seconds, or ask for fewer days"
        },
    )
    assert response.headers["Retry-After"] == "5"
    assert records.scans == 0


async def test_usage_reports_in_flight_are_capped_per_process() -> None:
    """Past the cap with no room to wait, a report is ``429`` at once (a report that can wait
    waits its turn: ``test_usage_slots.py``)."""
    records = EndlessRecords()
    async with _usage_app(
        records, usage_max_reports_in_flight=1, usage_max_reports_waiting=0
    ) as client:
        first = asyncio.create_task(_get(client, "k-a"))
        await asyncio.wait_for(records.scanning.wait(), 5)
        second = await asyncio.wait_for(_get(client, "k-a"), 5)
        records.release.set()
        answered = await first

    assert (second.status_code, second.json()) == (
        429,
        {
            "detail": "this worker already has 1 usage reports in flight (0 more of every "
            "tenant waiting); retry after the Retry-After seconds"
        },
    )
    assert second.headers["Retry-After"] == "1"
    assert answered.status_code == 200


async def test_a_usage_report_holds_its_groups_not_its_records() -> None:
    """A review's tenant of a year of day records with 64 GPUs and long labels each: the report
    read them all into a list (about 120 KiB a record) and ran the worker out of memory."""
    records = InMemoryUsageRecords()
    labels = {f"label{index}": "\N{GRINNING FACE}" * 256 for index in range(32)}
    for session in range(3):
        for offset in range(120):
            day = UsageDay(
                session_id=f"s{session}",
                day=START.date() + timedelta(days=offset),
                tenant=TENANT_A,
                labels=labels,
                runtime="colab",
                gpus={
                    (f"GPU-{gpu}", 0): GpuUsage(f"GPU-{gpu}", "NVIDIA H100", held_ms=60_000)
                    for gpu in range(64)
                },
            )
            records.days[day.document_id] = Versioned(day, 1)
    end = START.date() + timedelta(days=366)

    tracemalloc.start()
    try:
        report = await usage_report(
            records,
            START.date(),
            end,
            tenant=TENANT_A,
            group_by="gpu_model",
            prices={},
            currency="USD",
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert [(row.group, row.held_hours, row.gpus, row.sessions) for row in report.rows] == [
        ("NVIDIA H100", 3 * 120 * 64 / 60, 64, 3)
    ]
    assert peak < 2 * 1024 * 1024


async def test_an_event_stored_with_a_year_1_time_is_counted_like_any_other() -> None:
    # The edge refuses such a report now, but events stored before it did are still read:
    # the day arithmetic overflowed, which stalled every tenant's projection round.
    year_one = datetime(1, 1, 1, 0, 0, 30, tzinfo=UTC)
    events = [
        PositionedEvent(
            GpuMetadataReported.model_validate(
                event_body(session_id="old-clock", occurred_at=at, received_at=datetime.now(UTC))
            ),
            Position(0, offset),
        )
        for offset, at in enumerate((year_one, year_one + timedelta(seconds=10)))
    ]
    held = _held_seconds(await _applied_in([events]))
    assert {day: sum(gpus.values()) for day, gpus in held.items()} == {"old-clock/0001-01-01": 10.0}


_MORNING = datetime(2026, 1, 6, 1, 0, tzinfo=UTC)
"""Far from midnight: every labelled run below fits in one day record."""


def _labelled_run(runs: Sequence[tuple[str, int]], *, every_s: int = 60) -> list[PositionedEvent]:
    """One busy GPU of one session every ``every_s``, labelled ``run`` by each (name, reports)
    in turn: ``new Reporter(labels=...)`` between experiments of one notebook."""
    names = [name for name, count in runs for _ in range(count)]
    return [
        positioned(
            0,
            offset,
            session_id="notebook",
            occurred_at=_MORNING + timedelta(seconds=every_s * offset),
            labels={"project": "vision", "run": name},
            gpus=[gpu_sample(0, uuid_="GPU-labelled", utilization=90.0, memory_used=1000.0)],
        )
        for offset, name in enumerate(names)
    ]


async def _held_by(records: InMemoryUsageRecords, group_by: str) -> dict[str, float]:
    days = [item.record for item in records.days.values()]
    return {row.group: row.held_seconds for row in roll_up(days, group_by=group_by)}


async def test_labels_changed_mid_day_bill_each_label_set_its_own_time() -> None:
    """An interval counts under the labels of the report that closes it: the whole day used to
    go to the newest labels (a bill by run gave the day's last experiment everything)."""
    events = _labelled_run([("exp-1", 60), ("exp-2", 2)])
    for batches in ([events], [[event] for event in events], [events[:30], events[25:]]):
        records = await _applied_in(batches)
        assert await _held_by(records, "label:run") == {"exp-1": 3540.0, "exp-2": 120.0}
        assert await _held_by(records, "label:project") == {"vision": 3660.0}
        assert await _held_by(records, "gpu_model") == {"Tesla T4": 3660.0}


def _batchings(events: list[PositionedEvent]) -> list[list[list[PositionedEvent]]]:
    """One batch, then one event per batch: a rebuild and the live rounds (whose first report
    makes a record that holds no time yet) must bill alike, at the caps too."""
    return [[events], [[event] for event in events]]


@pytest.mark.parametrize("one_by_one", [False, True], ids=["one-batch", "event-by-event"])
async def test_label_sets_past_the_cap_bill_under_the_last_one_kept(one_by_one: bool) -> None:
    runs = [(f"exp-{index:02d}", 3) for index in range(20)]
    records = await _applied_in(_batchings(_labelled_run(runs))[one_by_one])
    [day] = [item.record for item in records.days.values()]
    assert len(day.label_sets) == USAGE_MAX_LABEL_SETS_PER_DAY
    held = await _held_by(records, "label:run")
    assert held == {
        "exp-00": 120.0,
        **{f"exp-{index:02d}": 180.0 for index in range(1, 7)},
        "exp-07": 180.0 * 13,  # its own and the twelve sets past the cap
    }
    assert sum(held.values()) == (60 - 1) * 60


@pytest.mark.parametrize("one_by_one", [False, True], ids=["one-batch", "event-by-event"])
@pytest.mark.parametrize(
    ("char", "count", "kept"),
    [
        # 31 labels of 256 characters and a run: two sets of about 8,000 bytes fit.
        ("v", 31, ["exp-1", "exp-2"]),
        # 15 in four-byte characters: a set weighs about 15,400 bytes, so one fits (counted
        # in characters, as before, all eight did: about 120 KB a record, rewritten a round).
        ("\U00020000", 15, ["exp-1"]),
    ],
    ids=["ascii", "four-byte-characters"],
)
async def test_label_sets_stop_at_the_bytes_a_record_may_hold(
    char: str, count: int, kept: list[str], one_by_one: bool
) -> None:
    long_labels = {f"k{key:02d}": char * 256 for key in range(count)}
    events = [
        positioned(
            0,
            offset,
            session_id="bloat",
            occurred_at=_MORNING + timedelta(seconds=60 * offset),
            labels={**long_labels, "run": f"exp-{offset}"},
            gpus=[gpu_sample(0, uuid_="GPU-bloat", utilization=90.0, memory_used=1000.0)],
        )
        for offset in range(8)
    ]
    records = await _applied_in(_batchings(events)[one_by_one])
    [day] = [item.record for item in records.days.values()]
    # The first report closes no interval; time past the last set kept goes under it.
    assert [labels["run"] for labels in day.label_sets] == kept
    held = dict.fromkeys(kept, 60.0) | {kept[-1]: 60.0 * (8 - len(kept))}
    assert await _held_by(records, "label:run") == held


async def test_a_label_set_heavier_than_the_bound_is_billed_under_itself() -> None:
    # 32 labels of 256 four-byte characters (32,864 bytes): an event accepted before the edge
    # bounded labels in bytes. Its record has no set yet, so it keeps this one.
    heaviest = {f"k{key:02d}": "\U00020000" * 256 for key in range(32)}
    events = [
        positioned(
            0,
            offset,
            session_id="heavy",
            occurred_at=_MORNING + timedelta(seconds=60 * offset),
            labels=heaviest,
            gpus=[gpu_sample(0, uuid_="GPU-heavy", utilization=90.0, memory_used=1000.0)],
        )
        for offset in range(3)
    ]
    records = await _applied_in([events])
    [day] = [item.record for item in records.days.values()]
    assert day.label_sets == [heaviest]
    assert await _held_by(records, "label:k00") == {"\U00020000" * 256: 120.0}


async def test_a_record_from_before_label_sets_keeps_its_time_under_its_labels() -> None:
    events = _labelled_run([("exp-1", 3), ("exp-2", 2)])
    records = await _applied_in([events[:3]])
    for item in records.days.values():  # as a worker before label sets stored it
        item.record.label_sets.clear()
    projection = UsageProjection(records, rules=RULES)
    await projection.apply(events[3:])
    assert await _held_by(records, "label:run") == {"exp-1": 120.0, "exp-2": 120.0}


@pytest.mark.parametrize("one_by_one", [False, True], ids=["one-batch", "event-by-event"])
async def test_past_the_entries_a_record_may_hold_a_gpu_stays_under_its_newest_label_set(
    one_by_one: bool,
) -> None:
    gpus = [gpu_sample(index, utilization=90.0, memory_used=1000.0) for index in range(64)]
    events = [
        positioned(
            0,
            offset,
            session_id="wide",
            occurred_at=_MORNING + timedelta(seconds=60 * offset),
            labels={"run": f"exp-{offset // 3}"},
            gpus=gpus,
        )
        for offset in range(24)
    ]
    records = await _applied_in(_batchings(events)[one_by_one])
    [day] = [item.record for item in records.days.values()]
    assert len(day.gpus) == USAGE_MAX_ENTRIES_PER_DAY
    held = await _held_by(records, "label:run")
    assert held == {"exp-0": 2 * 60.0 * 64, "exp-1": (24 - 3) * 60.0 * 64}
    assert sum(usage.held_ms for usage in day.gpus.values()) == 23 * 60_000 * 64


def _stored_day(gpus: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {
        "_id": "s/2026-01-05",
        "session_id": "s",
        "day": "2026-01-05",
        "tenant": TENANT_A,
        "version": 3,
        "labels": {"run": "b"},
        "runtime": "colab",
        "applied": {"p0": 9},
        "gpus": gpus,
        "marks": None,
        **fields,
    }


def _held_by_run(doc: dict[str, Any]) -> dict[str, int]:
    day = day_from_document(doc).record
    return {day.labels_of(usage)["run"]: usage.held_ms for usage in day.gpus.values()}


def _t4(held_ms: int) -> dict[str, Any]:
    return {"gpu_uuid": "G", "gpu_model": "T4", "held_ms": held_ms, "busy_ms": 0, "idle_ms": 0}


def test_a_record_from_the_first_label_set_version_keeps_all_its_time() -> None:
    """That version stored an entry per GPU and set in ``gpus``; reading kept only the last."""
    doc = _stored_day(
        [_t4(1000) | {"label_set": 0}, _t4(500) | {"label_set": 1}],
        label_sets=[{"run": "a"}, {"run": "b"}],
    )
    assert _held_by_run(doc) == {"a": 1000, "b": 500}


def test_time_a_worker_from_before_label_sets_added_goes_under_the_labels_it_wrote() -> None:
    split = [_t4(1000) | {"label_set": 0}, _t4(200) | {"label_set": 1}]
    doc = _stored_day(
        [_t4(1500)],
        labels={"run": "c"},
        label_sets=[{"run": "a"}, {"run": "b"}],
        by_label_set=split,
    )
    assert _held_by_run(doc) == {"a": 1000, "b": 200, "c": 300}
