"""GPU usage accounting through the real Kafka and FerretDB: exact seconds, exactly once."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from typing import Any

import pytest
from ca4_provision.cli import app
from ca4_worker.application.ports import TimedOutError
from ca4_worker.application.replay import replay_from_store
from ca4_worker.application.usage import UsageProjection, Versioned, roll_up, usage_report
from ca4_worker.bootstrap import bootstrap
from ca4_worker.core.config import Settings, get_settings
from ca4_worker.domain.records import PositionedEvent
from ca4_worker.domain.usage import GpuUsage, UsageDay
from ca4_worker.persistence import usage_mongo
from ca4_worker.persistence.documents import Doc
from ca4_worker.persistence.usage_memory import InMemoryUsageRecords
from ca4_worker.persistence.usage_mongo import YIELD_EVERY, MongoUsageRecords, day_document
from pymongo.asynchronous.database import AsyncDatabase
from typer.testing import CliRunner

from tests.integration.worker.support import (
    INDEX_BUILD_DEADLINE_S,
    produce,
    running_worker,
    wait_for,
)
from tests.unit.worker.factories import TENANT_A, gpu_sample, positioned, report_of_gpus
from tests.unit.worker.usage_scenario import (
    EXPECTED_BY_PROJECT,
    RULES,
    START,
    nlp_reports,
    scenario_events,
    seconds,
    vision_reports,
)

pytestmark = [pytest.mark.kafka, pytest.mark.mongo, pytest.mark.s3]

WINDOW = {"from": "2026-01-05", "to": "2026-01-07"}


async def _two_reports_then_midnight(
    database: AsyncDatabase[Doc], session_id: str, then: list[tuple[int, list[str]]]
) -> tuple[list[PositionedEvent], InMemoryUsageRecords, MongoUsageRecords, UsageProjection]:
    """Reports of GPUs g and k 120 and 60 s before midnight, applied, then ``then`` (seconds
    from midnight, GPUs): the events, their usage in one pass, and the records to go on with."""
    midnight = START.replace(hour=0, minute=0) + timedelta(days=1)
    plan = [(-120, ["g", "k"]), (-60, ["g", "k"]), *then]
    events = [
        report_of_gpus(offset, uuids, session_id=session_id, at=midnight + timedelta(seconds=at))
        for offset, (at, uuids) in enumerate(plan)
    ]
    once = InMemoryUsageRecords()
    await UsageProjection(once, rules=RULES).apply(events)
    records = MongoUsageRecords(database)
    await records.create_indexes(build_deadline_s=INDEX_BUILD_DEADLINE_S)
    projection = UsageProjection(records, rules=RULES)
    await projection.apply(events[:2])
    return events, once, records, projection


def _held(days: Iterable[UsageDay]) -> dict[str, dict[str, int]]:
    """Held milliseconds per day record and GPU."""
    return {
        day.document_id: {usage.gpu_uuid: usage.held_ms for usage in day.gpus.values()}
        for day in days
    }


def _by_project(body: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {row["group"]: seconds(row) for row in body["rows"]}


async def test_known_stretches_give_exact_seconds_and_replay_reproduces_them(
    worker_settings: Settings, database: AsyncDatabase[Doc]
) -> None:
    reports = [*vision_reports(), *nlp_reports()]
    settings = worker_settings.model_copy(update={"archive_enabled": False})
    await produce(settings.kafka_bootstrap_servers, settings.kafka_topic, reports)
    # A client retrying: the same event ids again, at new Kafka positions.
    await produce(settings.kafka_bootstrap_servers, settings.kafka_topic, reports[3:9])

    async with running_worker(settings) as api:

        async def all_counted() -> bool:
            body = (await api.get("/v1/usage", params=WINDOW)).json()
            return await database["events"].count_documents({}) == len(reports) and (
                _by_project(body) == EXPECTED_BY_PROJECT
            )

        await wait_for(all_counted, timeout_s=90, what="every report stored and counted")
        live = (await api.get("/v1/usage", params=WINDOW)).json()
        by_day = (await api.get("/v1/usage", params={**WINDOW, "group_by": "gpu_model"})).json()

    assert _by_project(live) == EXPECTED_BY_PROJECT
    assert {row["group"]: row["held_seconds"] for row in by_day["rows"]} == {
        "Tesla T4": 720.0,
        "NVIDIA A100-SXM4-40GB": 150.0,
    }
    stored_days = sorted([doc["_id"] async for doc in database["usage_days"].find({}, {"_id": 1})])
    assert stored_days == [
        "usage-nlp/2026-01-05",
        "usage-vision/2026-01-05",
        "usage-vision/2026-01-06",
    ]

    snapshot = await _usage_documents(database)
    async with bootstrap(settings, dead_letters=False, patient=False) as adapters:
        assert adapters.usage is not None
        # Redelivery: every stored event applied again, on top of the live records.
        await replay_from_store(adapters.store, adapters.projections, rebuild=False)
        assert await _usage_documents(database) == snapshot
        # Rebuild from the event store: the same records, field for field (versions aside).
        await replay_from_store(adapters.store, adapters.projections, rebuild=True)
        assert await _usage_documents(database) == snapshot


async def test_ca4_usage_prints_json_csv_and_a_table(
    worker_settings: Settings, database: AsyncDatabase[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = worker_settings.model_copy(update={"archive_enabled": False})
    await produce(settings.kafka_bootstrap_servers, settings.kafka_topic, vision_reports())
    async with running_worker(settings) as api:

        async def counted() -> bool:
            body = (await api.get("/v1/usage", params=WINDOW)).json()
            return _by_project(body) == {"vision": EXPECTED_BY_PROJECT["vision"]}

        await wait_for(counted, timeout_s=90, what="the vision session counted")
    monkeypatch.setenv("CA4_MONGO_URL", settings.mongo_url)
    monkeypatch.setenv("CA4_MONGO_DB", settings.mongo_db)
    monkeypatch.setenv("CA4_USAGE_PRICES", json.dumps({"Tesla T4": 0.5}))
    get_settings.cache_clear()
    try:
        window = ["--from", WINDOW["from"], "--to", WINDOW["to"]]
        as_json = await _ca4("usage", *window, "--json")
        as_csv = await _ca4("usage", *window, "--csv")
        table = await _ca4("usage", *window)
    finally:
        get_settings.cache_clear()
    assert (as_json.exit_code, as_csv.exit_code, table.exit_code) == (0, 0, 0)
    body = json.loads(as_json.stdout)
    assert _by_project(body) == {"vision": EXPECTED_BY_PROJECT["vision"]}
    assert (body["currency"], body["rows"][0]["cost"]) == ("USD", 0.1)
    assert (body["rows"][0]["tenant"], body["rows"][0]["kind"]) == (TENANT_A, "value")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [
        (row["tenant"], row["group"], row["kind"], row["held_seconds"], row["idle_seconds"])
        for row in rows
    ] == [(TENANT_A, "vision", "value", "720.0", "360.0")]
    assert "vision" in table.stdout
    # The tenant column comes first (an 80-column terminal wraps its values).
    assert "┃ tenant" in table.stdout
    assert f"│ {TENANT_A[:6]}" in table.stdout
    # With the tenant column, an 80-column terminal wraps "cost (USD)" over two lines.
    assert "cost" in table.stdout
    assert "(USD)" in table.stdout


async def _ca4(*args: str) -> Any:
    """Run ``ca4 ARGS`` in a thread (the CLI runs its own event loop)."""
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


async def _usage_documents(database: AsyncDatabase[Doc]) -> dict[str, Any]:
    """Every usage record without its write counter (a rebuild writes fewer times)."""
    return {doc["_id"]: doc async for doc in database["usage_days"].find({}, {"version": 0})}


async def test_marks_from_before_they_moved_into_day_records_are_read_and_moved(
    database: AsyncDatabase[Doc],
) -> None:
    """A deployment upgraded mid-session: its marks are in ``usage_marks`` and its day records
    have none. The new worker reads them there, counts exactly, and moves them."""
    events = scenario_events()
    records = MongoUsageRecords(database)
    await records.create_indexes(build_deadline_s=INDEX_BUILD_DEADLINE_S)
    await UsageProjection(records, rules=RULES).apply(events[:8])
    async for doc in database["usage_days"].find({"marks": {"$ne": None}}):
        legacy = {"_id": doc["session_id"], "tenant": doc["tenant"], "version": 3}
        legacy |= {key: doc["marks"][key] for key in ("applied", "gpus_dropped")}
        await database["usage_marks"].insert_one(legacy | {"marks": doc["marks"]["readings"]})
    await database["usage_days"].update_many({}, {"$unset": {"marks": ""}})

    upgraded = MongoUsageRecords(database)
    await upgraded.create_indexes(build_deadline_s=INDEX_BUILD_DEADLINE_S)
    await UsageProjection(upgraded, rules=RULES).apply(events[6:])

    rows = roll_up(
        [day async for day in upgraded.days_between(START.date(), date(2026, 1, 7), tenant=None)],
        group_by="label:project",
    )
    assert {row.group: seconds(row.model_dump()) for row in rows} == EXPECTED_BY_PROJECT
    holders = [doc["_id"] async for doc in database["usage_days"].find({"marks": {"$ne": None}})]
    assert sorted(holders) == ["usage-nlp/2026-01-05", "usage-vision/2026-01-06"]


async def test_marks_are_found_by_the_record_that_names_them_and_in_records_from_before(
    database: AsyncDatabase[Doc],
) -> None:
    """The record holding a session's marks names it (``marks_of``, on its own index), so
    they are found without reading every day record the session has: a client dating its
    reports back a day at a time since 2000 made every round read all of them (a tenth
    hostile-tenant review). Records written before the field are still found, and named on
    their next write."""

    async def named() -> dict[str, str]:
        cursor = database["usage_days"].find({"marks_of": {"$ne": None}})
        return {doc["_id"]: doc["marks_of"] async for doc in cursor}

    events = scenario_events()
    records = MongoUsageRecords(database)
    await records.create_indexes(build_deadline_s=INDEX_BUILD_DEADLINE_S)
    await UsageProjection(records, rules=RULES).apply(events[:8])
    holders = [doc["_id"] async for doc in database["usage_days"].find({"marks": {"$ne": None}})]
    assert await named() == {holder: holder.split("/")[0] for holder in holders}
    await database["usage_days"].update_many({}, {"$unset": {"marks_of": ""}})

    await UsageProjection(records, rules=RULES).apply(events[6:])

    rows = roll_up(
        [day async for day in records.days_between(START.date(), date(2026, 1, 7), tenant=None)],
        group_by="label:project",
    )
    assert {row.group: seconds(row.model_dump()) for row in rows} == EXPECTED_BY_PROJECT
    assert await named() == {
        "usage-nlp/2026-01-05": "usage-nlp",
        "usage-vision/2026-01-06": "usage-vision",
    }


async def test_marks_a_crash_left_on_two_records_from_before_marks_of_bill_a_late_reading_once(
    database: AsyncDatabase[Doc],
) -> None:
    """Killed between writing the new home and clearing the old one, both records written
    before ``marks_of``; redelivered one by one, with a late reading touching only the old
    home's day: every interval is billed once, as in one uninterrupted pass."""
    events, once, records, projection = await _two_reports_then_midnight(
        database,
        "crashed",
        [(-30, ["g", "k"]), (300, ["g"]), (-10, ["k"]), (60, ["k"])],  # a late reading of k
    )
    save, saves = records.save, 0

    async def killed_at_the_third(days: Sequence[Versioned[UsageDay]]) -> None:
        nonlocal saves
        saves += 1
        if saves == 3:
            raise RuntimeError("worker killed")
        await save(days)

    records.save = killed_at_the_third  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="worker killed"):
        await projection.apply(events[2:4])
    records.save = save  # type: ignore[method-assign]
    holders = await database["usage_days"].count_documents({"marks": {"$ne": None}})
    await database["usage_days"].update_many({}, {"$unset": {"marks_of": ""}})
    for event in events[2:]:
        await projection.apply([event])

    stored = [
        day async for day in records.days_between(START.date(), date(2026, 1, 8), tenant=None)
    ]
    assert holders == 2
    assert _held(stored) == _held(item.record for item in once.days.values())


async def test_a_worker_from_before_marks_of_moving_the_home_never_bills_twice(
    database: AsyncDatabase[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling upgrade (or a rollback): a worker from before ``marks_of`` moves a named home
    to a new day. It clears the old home's marks but not its name, and names no new home; the
    late readings that follow touch only the old day, and must still fold from the new one."""
    events, once, records, projection = await _two_reports_then_midnight(
        database,
        "mixed",
        [(-30, ["g", "k"]), (300, ["g"]), (-10, ["k"]), (-5, ["k"]), (60, ["k"])],
    )
    with monkeypatch.context() as older_worker:
        older_worker.setattr(
            usage_mongo,
            "day_document",
            lambda day, version: {
                key: value for key, value in day_document(day, version).items() if key != "marks_of"
            },
        )
        await projection.apply(events[2:4])
    assert [doc async for doc in database["usage_days"].find({"marks_of": "mixed"})] != []
    for event in events[4:]:
        await projection.apply([event])

    days = records.days_between(START.date(), date(2026, 1, 8), tenant=None)
    assert _held([day async for day in days]) == _held(item.record for item in once.days.values())


async def test_labels_changed_mid_day_are_billed_apart_also_after_an_upgrade(
    database: AsyncDatabase[Doc],
) -> None:
    """Records written before label sets (no ``label_sets``, no ``label_set`` per GPU) keep
    their time under their labels; what follows is billed under each report's own labels."""
    events = [
        positioned(
            0,
            offset,
            session_id="notebook",
            occurred_at=START + timedelta(seconds=60 * offset),
            labels={"project": "vision", "run": "exp-1" if offset < 4 else "exp-2"},
            gpus=[gpu_sample(0, uuid_="GPU-labelled", utilization=90.0, memory_used=1000.0)],
        )
        for offset in range(7)
    ]
    records = MongoUsageRecords(database)
    await records.create_indexes(build_deadline_s=INDEX_BUILD_DEADLINE_S)
    await UsageProjection(records, rules=RULES).apply(events[:4])
    await database["usage_days"].update_many(
        {}, {"$unset": {"label_sets": "", "gpus.$[].label_set": ""}}
    )
    legacy = [doc async for doc in database["usage_days"].find({})]
    assert [("label_sets" in doc, [gpu.keys() for gpu in doc["gpus"]]) for doc in legacy] == [
        (False, [{"gpu_uuid", "gpu_model", "held_ms", "busy_ms", "idle_ms"}])
    ]
    await UsageProjection(records, rules=RULES).apply(events[4:])

    days = [day async for day in records.days_between(START.date(), date(2026, 1, 7), tenant=None)]
    by_run = {row.group: row.held_seconds for row in roll_up(days, group_by="label:run")}
    assert by_run == {"exp-1": 180.0, "exp-2": 180.0}
    [stored] = [doc async for doc in database["usage_days"].find({})]
    assert stored["label_sets"] == [
        {"project": "vision", "run": "exp-1"},
        {"project": "vision", "run": "exp-2"},
    ]
    assert sorted((part["label_set"], part["held_ms"]) for part in stored["by_label_set"]) == [
        (0, 180_000),
        (1, 180_000),
    ]
    # What a worker rolled back to before label sets reads: each GPU's whole day.
    assert [(gpu["gpu_uuid"], gpu["held_ms"]) for gpu in stored["gpus"]] == [
        ("GPU-labelled", 360_000)
    ]


async def test_time_a_worker_from_before_label_sets_adds_is_billed_under_its_labels(
    database: AsyncDatabase[Doc],
) -> None:
    """A rollback (or a rolling upgrade's old pod) rewrites ``gpus`` with its own additions and
    the labels of its newest event, and leaves the split as it was: nothing is lost either way."""
    events = [
        positioned(
            0,
            offset,
            session_id="notebook",
            occurred_at=START + timedelta(seconds=60 * offset),
            labels={"run": "exp-1" if offset < 3 else "exp-2"},
            gpus=[gpu_sample(0, uuid_="GPU-labelled", utilization=90.0, memory_used=1000.0)],
        )
        for offset in range(5)
    ]
    records = MongoUsageRecords(database)
    await records.create_indexes(build_deadline_s=INDEX_BUILD_DEADLINE_S)
    await UsageProjection(records, rules=RULES).apply(events)
    # The old worker's write: 120 s more in the GPU's total, under labels it names.
    await database["usage_days"].update_one(
        {},
        {
            "$inc": {"gpus.0.held_ms": 120_000, "gpus.0.busy_ms": 120_000},
            "$set": {"labels": {"run": "exp-3"}},
        },
    )

    days = [day async for day in records.days_between(START.date(), date(2026, 1, 7), tenant=None)]
    by_run = {row.group: row.held_seconds for row in roll_up(days, group_by="label:run")}
    assert by_run == {"exp-1": 120.0, "exp-2": 120.0, "exp-3": 120.0}


async def _many_days(database: AsyncDatabase[Doc], count: int) -> MongoUsageRecords:
    """``count`` day records of one tenant, each of 8 GPUs."""
    gpus = {
        (f"GPU-{index}", 0): GpuUsage(f"GPU-{index}", "NVIDIA H100", held_ms=60_000)
        for index in range(8)
    }
    await database["usage_days"].insert_many(
        [
            day_document(
                UsageDay(
                    f"s{index}",
                    START.date() + timedelta(days=index % 300),
                    TENANT_A,
                    labels={"project": "vision"},
                    runtime="colab",
                    gpus=gpus,
                ),
                1,
            )
            for index in range(count)
        ]
    )
    return MongoUsageRecords(database)


async def test_a_usage_scan_lets_the_event_loop_run_every_few_records(
    database: AsyncDatabase[Doc],
) -> None:
    """A report decodes and sums on the event loop the stages share: a whole fetched batch of
    100 large records (tens of milliseconds) ran without a turn for anything else."""
    records = await _many_days(database, 300)
    read = 0
    most_between_turns = 0
    read_at_last_turn = 0
    done = False

    async def other_work() -> None:
        nonlocal read_at_last_turn
        while not done:
            read_at_last_turn = read
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    async for _ in records.days_between(START.date(), START.date().replace(year=2027), tenant=None):
        read += 1
        most_between_turns = max(most_between_turns, read - read_at_last_turn)
    done = True
    await other

    assert read == 300
    assert most_between_turns <= YIELD_EVERY


async def test_a_usage_report_past_its_deadline_times_out(database: AsyncDatabase[Doc]) -> None:
    records = await _many_days(database, 2_000)
    end = START.date().replace(year=2027)

    with pytest.raises(TimedOutError, match=r"did not finish within 0\.05 s"):
        await usage_report(
            records,
            START.date(),
            end,
            tenant=TENANT_A,
            group_by="gpu_model",
            prices={},
            currency="USD",
            deadline_s=0.05,
        )
    report = await usage_report(
        records, START.date(), end, tenant=TENANT_A, group_by="gpu_model", prices={}, currency="USD"
    )
    assert [(row.group, row.gpus, row.sessions) for row in report.rows] == [
        ("NVIDIA H100", 8, 2_000)
    ]


async def test_a_usage_report_read_from_the_database_folds_groups_past_its_cap(
    database: AsyncDatabase[Doc],
) -> None:
    """Group values are the tenant's: 400 distinct GPU models, a cap of 100. The rows read
    back from the database are the cap's groups and one ``(other)``, and add up to the whole."""
    await database["usage_days"].insert_many(
        [
            day_document(
                UsageDay(
                    f"s{session}",
                    START.date(),
                    TENANT_A,
                    labels={"project": "vision"},
                    runtime="colab",
                    gpus={
                        (f"GPU-{session}-{gpu}", 0): GpuUsage(
                            f"GPU-{session}-{gpu}", f"model-{session}-{gpu}", held_ms=1_000 * gpu
                        )
                        for gpu in range(8)
                    },
                ),
                1,
            )
            for session in range(50)
        ]
    )
    records = MongoUsageRecords(database)
    end = START.date() + timedelta(days=1)

    capped = await usage_report(
        records,
        START.date(),
        end,
        tenant=TENANT_A,
        group_by="gpu_model",
        prices={},
        currency="USD",
        deadline_s=15,
        max_groups=100,
    )
    whole = await usage_report(
        records, START.date(), end, tenant=TENANT_A, group_by="gpu_model", prices={}, currency="USD"
    )

    assert (capped.truncated, len(capped.rows), capped.rows[-1].group) == (True, 101, "(other)")
    assert (whole.truncated, len(whole.rows)) == (False, 400)
    assert (
        sum(row.held_seconds for row in capped.rows)
        == 50 * sum(range(8))
        == sum(row.held_seconds for row in whole.rows)
    )
    assert capped.rows[-1].gpus == 300
    kept = {row.group: row for row in whole.rows}
    assert all(row == kept[row.group] for row in capped.rows[:-1])


async def test_a_report_of_every_tenant_from_the_database_keeps_tenants_and_synthetic_rows_apart(
    database: AsyncDatabase[Doc],
) -> None:
    """Read back from the database, a report of every tenant's records (``read:all``, ``ca4
    usage``) has a row per tenant and group: another tenant's time under the same project
    name, or under a value spelled ``(none)``, keeps a row of its own, and one tenant's many
    values leave the other's few their rows."""

    def one_gpu(tenant: str, session: str, project: str | None, held_s: int) -> Doc:
        labels = {} if project is None else {"project": project}
        gpu = GpuUsage(f"GPU-{session}", "NVIDIA H100", held_ms=held_s * 1000)
        day = UsageDay(session, START.date(), tenant, labels, "colab", gpus={gpu.key: gpu})
        return day_document(day, 1)

    noise = [one_gpu("evil", f"e{index}", f"junk{index}", 1) for index in range(60)]
    await database["usage_days"].insert_many(
        [
            *noise,
            one_gpu("evil", "e-victim", "victim-proj", 500 * 3600),
            one_gpu("evil", "e-none", "(none)", 7),
            one_gpu(TENANT_A, "v1", "victim-proj", 10 * 3600),
            one_gpu(TENANT_A, "v2", None, 20),
        ]
    )
    records = MongoUsageRecords(database)
    end = START.date() + timedelta(days=1)

    capped = await usage_report(
        records, START.date(), end, tenant=None, group_by="label:project", prices={},
        currency="USD", max_groups=20,
    )  # fmt: skip
    whole = await usage_report(
        records, START.date(), end, tenant=None, group_by="label:project", prices={},
        currency="USD",
    )  # fmt: skip
    own = await usage_report(
        records, START.date(), end, tenant=TENANT_A, group_by="label:project", prices={},
        currency="USD",
    )  # fmt: skip

    def shape(rows: list[Any]) -> list[tuple[Any, ...]]:
        return [(row.tenant, row.group, row.kind, row.held_seconds) for row in rows]

    victims = [(TENANT_A, "victim-proj", "value", 36_000.0), (TENANT_A, "(none)", "none", 20.0)]
    assert [row for row in shape(capped.rows) if row[0] == TENANT_A] == victims
    assert [row for row in shape(whole.rows) if row[0] == TENANT_A] == victims
    assert shape(own.rows) == [(None, *row[1:]) for row in victims]
    # Without a cap the other tenant's rows are its own, its "(none)" a value.
    evil = {(row.group, row.kind): row.held_seconds for row in whole.rows if row.tenant == "evil"}
    assert (evil[("victim-proj", "value")], evil[("(none)", "value")], len(evil)) == (
        1_800_000.0,
        7.0,
        62,
    )
    # With the cap, that tenant's rows past its share are in its own "(other)", last of its.
    assert capped.truncated
    assert len(capped.rows) <= 20 + 1
    assert [row.kind for row in capped.rows if row.tenant == "evil"][-1] == "other"
    assert sum(row.held_seconds for row in capped.rows) == sum(evil.values()) + 36_020.0
