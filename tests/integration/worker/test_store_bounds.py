"""Nothing stalls the store: a refused document and a bloating session, against the real
Kafka and database, with the worker running."""

from __future__ import annotations

import time

import pytest
from ca4_schemas.constants import HEADER_ERROR_CLASS
from ca4_worker.core.config import Settings
from ca4_worker.domain.projection import SESSION_MAX_GPU_MODELS
from ca4_worker.persistence import events as event_store
from ca4_worker.persistence.documents import Doc
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.worker.checks import stored_event_ids
from tests.integration.worker.support import produce, running_worker, wait_for
from tests.support.kafka import read_topic
from tests.unit.worker.factories import event_body, gpu_sample

pytestmark = [pytest.mark.kafka, pytest.mark.mongo]

# Past the server's 48 MB message limit, so the driver itself refuses it (FerretDB v1 stores a
# 17 MiB document that MongoDB and DocumentDB would refuse; the worker's own guards cover that).
OVER_THE_MESSAGE_LIMIT = "x" * 49_000_000


async def test_a_document_too_large_is_dead_lettered_and_the_partition_moves_on(
    worker_settings: Settings,
    database: AsyncDatabase[Doc],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every event on one partition (one session), the poison in the middle of them.
    events = [event_body(session_id="one-partition") for _ in range(40)]
    poison = str(events[17]["event_id"])
    real_document = event_store.event_document

    def padded(positioned, **kwargs):  # type: ignore[no-untyped-def]
        document = real_document(positioned, **kwargs)
        if document["_id"] == poison:
            document["padding"] = OVER_THE_MESSAGE_LIMIT  # the driver refuses it: DocumentTooLarge
        return document

    monkeypatch.setattr(event_store, "event_document", padded)
    bootstrap, topic = worker_settings.kafka_bootstrap_servers, worker_settings.kafka_topic
    await produce(bootstrap, topic, events)
    worker_settings = worker_settings.model_copy(update={"archive_enabled": False})

    async with running_worker(worker_settings) as api:

        async def the_rest_stored() -> bool:
            return await database["events"].count_documents({}) >= 39

        await wait_for(the_rest_stored, timeout_s=60, what="39 events stored")
        later = [event_body(session_id="one-partition") for _ in range(5)]
        await produce(bootstrap, topic, later)  # the partition moves on

        async def later_projected() -> bool:
            session = await database["sessions"].find_one({"_id": "one-partition"})
            return session is not None and session["sample_count"] == 44

        await wait_for(later_projected, timeout_s=60, what="the later events projected")
        status = (await api.get(f"/v1/events/{poison}")).json()
        assert status["stored"] is False

    expected = {str(event["event_id"]) for event in [*events, *later]} - {poison}
    assert set(await stored_event_ids(database)) == expected
    [letter] = await read_topic(bootstrap, worker_settings.kafka_dlq_topic)
    assert dict(letter.headers)[HEADER_ERROR_CLASS] == b"store_document_too_large"
    assert str(poison).encode() in letter.value


async def test_a_bloating_session_stays_capped_and_ordinary_reports_flow(
    worker_settings: Settings, database: AsyncDatabase[Doc]
) -> None:
    # A hostile key holder: one session, 64 GPUs a report, every GPU name new.
    bloat = [
        event_body(
            session_id="bloat",
            gpus=[
                gpu_sample(i, uuid_=f"GPU-bloat-{i}", name=f"model-{report}-{i}") for i in range(64)
            ],
        )
        for report in range(600)
    ]
    # Ordinary sessions, some of them sharing the bloating session's partition.
    ordinary = [
        event_body(
            session_id=f"ordinary-{index % 30}",
            gpus=[gpu_sample(g, uuid_=f"GPU-ord-{index % 30}-{g}") for g in range(3)],
        )
        for index in range(300)
    ]
    bootstrap, topic = worker_settings.kafka_bootstrap_servers, worker_settings.kafka_topic
    worker_settings = worker_settings.model_copy(update={"archive_enabled": False})
    async with running_worker(worker_settings):
        await produce(bootstrap, topic, bloat)
        await produce(bootstrap, topic, ordinary)
        sent = time.monotonic()

        async def ordinary_projected() -> bool:
            total = 0
            async for session in database["sessions"].find({"_id": {"$regex": "^ordinary-"}}):
                total += session["sample_count"]
            return total == 300

        await wait_for(ordinary_projected, timeout_s=120, what="the ordinary reports projected")
        took = time.monotonic() - sent

    session = await database["sessions"].find_one({"_id": "bloat"})
    assert session is not None
    assert session["sample_count"] == 600
    assert len(session["gpu_models"]) == SESSION_MAX_GPU_MODELS
    assert session["gpu_models_dropped"] == 599 * 64
    # Nothing lost: every accepted event is stored (none needed the dead-letter queue).
    assert len(await stored_event_ids(database)) == 900
    assert await read_topic(bootstrap, worker_settings.kafka_dlq_topic) == []
    print(f"ordinary reports projected {took:.1f} s after being sent behind the bloat")
