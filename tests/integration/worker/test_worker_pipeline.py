"""A running worker against the real Kafka, FerretDB and MinIO."""

from __future__ import annotations

import json

import httpx
import pytest
from ca4_schemas.constants import (
    HEADER_ERROR_CLASS,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    HEADER_WORKER_VERSION,
)
from ca4_worker.application.replay import replay_from_archive, replay_from_store
from ca4_worker.core.config import Settings
from ca4_worker.persistence.documents import Doc
from ca4_worker.persistence.events import MongoEventStore
from ca4_worker.persistence.projections import MongoProjections
from ca4_worker.persistence.s3 import S3ObjectStore
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.worker.checks import (
    archived_positions,
    projected_sample_total,
    stored_event_ids,
)
from tests.integration.worker.support import produce, running_worker, wait_for
from tests.support.kafka import read_topic
from tests.unit.worker.contracts import snapshot
from tests.unit.worker.factories import event_body, gpu_sample

pytestmark = [pytest.mark.kafka, pytest.mark.mongo, pytest.mark.s3]

POISON = [
    b"{not json",
    json.dumps({"event_id": "x", "schema_version": 2}).encode(),
    json.dumps({**event_body(), "schema_version": 99}).encode(),
]


def good_events(count: int, sessions: int = 10) -> list[dict[str, object]]:
    return [
        event_body(
            session_id=f"session-{index % sessions}",
            gpus=[gpu_sample(0, uuid_=f"GPU-{index % sessions}", utilization=float(index % 100))],
        )
        for index in range(count)
    ]


async def test_events_are_stored_projected_dead_lettered_and_archived(
    worker_settings: Settings,
    database: AsyncDatabase[Doc],
    bucket: S3ObjectStore,
) -> None:
    events = good_events(300)
    # U+2028 is valid in a label and stays raw in the record and the archive's line, where
    # splitting lines with str.splitlines made the whole archive object unreadable.
    events[0]["labels"] = {"note": "first\u2028second"}
    messages: list[dict[str, object] | bytes] = [*events[:150], *POISON, *events[150:]]
    topic = worker_settings.kafka_topic
    bootstrap = worker_settings.kafka_bootstrap_servers
    await produce(bootstrap, topic, messages)
    await produce(bootstrap, topic, events[:20])  # a client retrying: same event ids again

    async with running_worker(worker_settings) as api:

        async def all_stored() -> bool:
            return await database["events"].count_documents({}) >= 300

        await wait_for(all_stored, timeout_s=60, what="300 events stored")

        async def all_archived() -> bool:
            return sum((await archived_positions(bucket, topic)).values()) >= 323

        await wait_for(all_archived, timeout_s=60, what="323 records archived")
        ids = await stored_event_ids(database)
        assert sorted(ids) == sorted(str(event["event_id"]) for event in events)

        async def all_projected() -> bool:  # the projection stage follows the store
            return await projected_sample_total(database) >= 300

        await wait_for(all_projected, timeout_s=60, what="300 events projected")
        assert await projected_sample_total(database) == 300

        status = (await api.get(f"/v1/events/{events[0]['event_id']}")).json()
        assert status["stored"] is True
        assert status["projected"] is True
        missing = (await api.get("/v1/events/00000000-0000-4000-8000-000000000000")).json()
        assert missing == {
            "event_id": "00000000-0000-4000-8000-000000000000",
            "stored": False,
            "projected": False,
            "partition": None,
            "offset": None,
            "session_id": None,
            "received_at": None,
            "event": None,
        }
        sessions = (await api.get("/v1/sessions", params={"limit": 4})).json()
        assert len(sessions["items"]) == 4
        assert sessions["next_cursor"] == sessions["items"][-1]["session_id"]
        one = (await api.get("/v1/sessions/session-3")).json()
        assert one["sample_count"] == 30
        assert one["gpu_models"] == ["Tesla T4"]
        assert (await api.get("/v1/sessions/nope")).status_code == 404
        assert (await api.get("/v1/sessions/nope")).json() == {"detail": "Session not found"}
        # An offset that moves the instant before year 1 in UTC: 422 (the database's driver
        # failed to encode it, a 500).
        before_year_one = {"seen_since": "0001-01-01T00:00:00+01:00"}
        assert (await api.get("/v1/sessions", params=before_year_one)).status_code == 422
        gpu = (await api.get("/v1/gpus/GPU-3")).json()
        assert gpu["session_id"] == "session-3"
        assert (await api.get("/readyz")).status_code == 200
        metrics = (await api.get("/metrics")).text
        for name in (
            'ca4_worker_events_total{result="stored"}',
            'ca4_worker_dead_letters_total{error_class="invalid_json",tenant=""}',
            "ca4_worker_end_to_end_latency_seconds_bucket",
            "ca4_worker_processing_seconds_bucket",
            "ca4_worker_consumer_lag{",
            "ca4_worker_archive_lag{",
            "ca4_worker_archive_objects_total",
            'ca4_gpu_utilization_pct{gpu_name="Tesla T4",gpu_uuid="GPU-3",session_id="session-3",'
            'tenant="tenant-a"}',
            # The read API's own request metrics, by route template and status.
            'ca4_http_requests_total{handler="/v1/sessions/{session_id}",method="GET",status="4xx"}',
            'ca4_http_request_duration_seconds_count{handler="/v1/gpus/{gpu_uuid:path}",method="GET"}',
        ):
            assert name in metrics, name
        # Each tenant has its own series of a GPU UUID, labelled with the tenant.
        (dcgm,) = [
            line
            for line in metrics.splitlines()
            if line.startswith("DCGM_FI_DEV_GPU_UTIL{") and 'UUID="GPU-3"' in line
        ]
        assert 'tenant="tenant-a"' in dcgm

    # Every record on the topic is archived exactly once.
    on_topic = {(record.partition, record.offset) for record in await read_topic(bootstrap, topic)}
    archived = await archived_positions(bucket, topic)
    assert set(archived) == on_topic
    assert set(archived.values()) == {1}

    # Poison went to the DLQ with the original bytes and the reason.
    letters = await read_topic(bootstrap, worker_settings.kafka_dlq_topic)
    assert sorted(letter.value for letter in letters) == sorted(POISON)
    classes = sorted(dict(letter.headers)[HEADER_ERROR_CLASS].decode() for letter in letters)
    assert classes == ["invalid_json", "schema_invalid", "unknown_schema_version"]
    for letter in letters:
        headers = dict(letter.headers)
        assert headers[HEADER_SOURCE_TOPIC].decode() == topic
        assert int(headers[HEADER_SOURCE_PARTITION]) >= 0
        assert int(headers[HEADER_SOURCE_OFFSET]) >= 0
        assert headers[HEADER_WORKER_VERSION]

    # Replay from the store and from the archive reproduce the live projections.
    projections = MongoProjections(database)
    live = await snapshot(projections)
    store = MongoEventStore(database, topic=topic)
    await replay_from_store(store, projections, rebuild=True)
    assert await snapshot(projections) == live
    outcome = await replay_from_archive(
        bucket, projections, prefix="raw", topic=topic, rebuild=True
    )
    assert outcome.events == 300
    assert await snapshot(projections) == live


async def test_a_new_consumer_group_rereading_everything_counts_nothing_twice(
    worker_settings: Settings, database: AsyncDatabase[Doc]
) -> None:
    events = good_events(200, sessions=7)
    await produce(worker_settings.kafka_bootstrap_servers, worker_settings.kafka_topic, events)
    no_archive = worker_settings.model_copy(update={"archive_enabled": False})
    async with running_worker(no_archive):
        await wait_for(lambda: _projected(database, 200), timeout_s=60, what="200 events projected")
    before = await snapshot(MongoProjections(database))
    redelivery = no_archive.model_copy(update={"kafka_store_group": "ca4-store-redelivery"})
    async with running_worker(redelivery) as api:
        await wait_for(lambda: _group_caught_up(api), timeout_s=60, what="second group caught up")
    assert await snapshot(MongoProjections(database)) == before
    assert await database["events"].count_documents({}) == 200
    assert await projected_sample_total(database) == 200


async def _projected(database: AsyncDatabase[Doc], count: int) -> bool:
    return await projected_sample_total(database) >= count


async def _group_caught_up(api: httpx.AsyncClient) -> bool:
    metrics = (await api.get("/metrics")).text
    lines = [
        line
        for line in metrics.splitlines()
        if line.startswith('ca4_worker_consumer_lag{group="ca4-store-redelivery"')
    ]
    return len(lines) == 3 and all(line.endswith(" 0.0") for line in lines)


async def test_stored_events_are_projected_by_the_projection_stage_later(
    worker_settings: Settings, database: AsyncDatabase[Doc]
) -> None:
    """A worker that only stores (projection stage off) answers ``stored: true, projected:
    false``; a worker started later with the stage on projects them from where the
    ``ca4-project`` group stands, exactly once."""
    events = good_events(120, sessions=6)
    await produce(worker_settings.kafka_bootstrap_servers, worker_settings.kafka_topic, events)
    store_only = worker_settings.model_copy(
        update={"projection_enabled": False, "archive_enabled": False}
    )
    async with running_worker(store_only) as api:

        async def all_stored() -> bool:
            return await database["events"].count_documents({}) >= 120

        await wait_for(all_stored, timeout_s=60, what="120 events stored")
        status = (await api.get(f"/v1/events/{events[-1]['event_id']}")).json()
        assert (status["stored"], status["projected"]) == (True, False)
        assert await database["sessions"].count_documents({}) == 0
        ready = (await api.get("/readyz")).json()
        assert "projection_consumer" not in ready["checks"]

    async with running_worker(worker_settings.model_copy(update={"archive_enabled": False})) as api:

        async def all_projected() -> bool:
            return await projected_sample_total(database) >= 120

        await wait_for(all_projected, timeout_s=60, what="120 events projected")
        status = (await api.get(f"/v1/events/{events[-1]['event_id']}")).json()
        assert (status["stored"], status["projected"]) == (True, True)
        assert (await api.get("/readyz")).json()["checks"]["projection_consumer"] is True
    assert await projected_sample_total(database) == 120


async def test_one_worker_projects_what_its_store_stage_handed_over(
    worker_settings: Settings, database: AsyncDatabase[Doc]
) -> None:
    """On one worker the projection stage takes every record's decision from the store stage
    (none decoded twice or looked up), on every partition: the handoff keeps only partitions
    this process projects, so a wrong idea of them would send every record down the slow
    path without any other sign."""
    settings = worker_settings.model_copy(
        # No reading of the store group's offsets from Kafka: only the store stage here tells
        # the projection stage what is stored, as on a worker that stores what it projects.
        update={"archive_enabled": False, "store_progress_poll_s": 60.0}
    )
    bootstrap, topic = settings.kafka_bootstrap_servers, settings.kafka_topic
    async with running_worker(settings) as api:
        await produce(bootstrap, topic, good_events(12, sessions=12))  # both stages joined
        await wait_for(lambda: _projected(database, 12), timeout_s=60, what="warm-up projected")
        before = _projection_records(await api.get("/metrics"))
        events = [
            event_body(
                session_id=f"handoff-{index % 30}",
                gpus=[gpu_sample(gpu, uuid_=f"GPU-{index % 30}-{gpu}") for gpu in range(4)],
            )
            for index in range(300)
        ]
        await produce(bootstrap, topic, events)
        await wait_for(lambda: _projected(database, 312), timeout_s=60, what="300 projected")
        after = _projection_records(await api.get("/metrics"))
    partitions = await database["events"].distinct("partition")
    assert len(partitions) == 3, partitions
    assert after["handoff"] - before["handoff"] == 300
    assert after["decoded"] - before["decoded"] == 0


def _projection_records(response: httpx.Response) -> dict[str, float]:
    values = {"handoff": 0.0, "decoded": 0.0}
    for line in response.text.splitlines():
        for source in values:
            if line.startswith(f'ca4_worker_projection_records_total{{source="{source}"}}'):
                values[source] = float(line.rsplit(" ", 1)[1])
    return values


async def test_the_read_api_alone_reaches_only_the_database(
    worker_settings: Settings, database: AsyncDatabase[Doc]
) -> None:
    """The chart's reader (``CA4_CONSUMERS_ENABLED=false``) may reach the database and nothing
    else (its NetworkPolicy): it started a Kafka producer all the same, so in prod it would have
    failed at start. Here Kafka and S3 are a closed port."""
    nowhere = "127.0.0.1:1"
    reader = worker_settings.model_copy(
        update={
            "consumers_enabled": False,
            "kafka_bootstrap_servers": nowhere,
            "s3_endpoint_url": f"http://{nowhere}",
        }
    )
    async with running_worker(reader) as api:
        ready = await api.get("/readyz")
        sessions = await api.get("/v1/sessions")

    assert (ready.status_code, ready.json()) == (
        200,
        {"status": "ready", "checks": {"database": True}},
    )
    assert (sessions.status_code, sessions.json()) == (200, {"items": [], "next_cursor": None})
