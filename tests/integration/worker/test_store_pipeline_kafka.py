"""The store subscriber against the real Kafka and FerretDB: a projection that fails is consumed
again from the oldest uncommitted offset, and the group commits exactly to the end."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from ca4_worker.application.ingest import IngestService
from ca4_worker.core.config import Settings
from ca4_worker.domain.records import PositionedEvent
from ca4_worker.messaging.store_pipeline import StorePipeline
from ca4_worker.messaging.store_subscriber import build_broker
from ca4_worker.persistence.memory import InMemoryDeadLetters
from ca4_worker.persistence.mongo import (
    Doc,
    MongoEventStore,
    MongoProjections,
    guards_belong_in_filters,
)
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.worker.checks import projected_sample_total
from tests.integration.worker.support import produce, topic_partitions, wait_for
from tests.unit.worker.factories import event_body

pytestmark = [pytest.mark.kafka, pytest.mark.mongo]

EVENTS = 1500


class FailingProjections(MongoProjections):
    """Real projections whose second round raises, as a bug in one batch would."""

    def __init__(self, database: AsyncDatabase[Doc], *, guards_in_filters: bool) -> None:
        super().__init__(database, guards_in_filters=guards_in_filters)
        self.rounds = 0

    async def apply(self, events: Sequence[PositionedEvent]) -> None:
        self.rounds += 1
        if self.rounds == 2:
            raise RuntimeError("injected projection bug")
        await super().apply(events)


async def committed_offsets(settings: Settings) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.kafka_store_group)
    finally:
        await admin.close()
    return {
        tp.partition: meta.offset
        for tp, meta in offsets.items()
        if tp.topic == settings.kafka_topic
    }


async def test_a_failed_projection_is_consumed_again_and_projected_exactly_once(
    worker_settings: Settings, database: AsyncDatabase[Doc]
) -> None:
    settings = worker_settings.model_copy(update={"store_max_records": 200})
    bootstrap, topic = settings.kafka_bootstrap_servers, settings.kafka_topic
    await produce(bootstrap, topic, [event_body(session_id=f"s{i % 7}") for i in range(EVENTS)])
    partitions = await topic_partitions(bootstrap, topic)
    projections = FailingProjections(
        database, guards_in_filters=await guards_belong_in_filters(database)
    )
    ingest = IngestService(
        store=MongoEventStore(database, topic=topic),
        projections=projections,
        dead_letters=InMemoryDeadLetters(),
        max_backoff_s=0.2,
    )
    pipeline = StorePipeline(ingest)
    broker = build_broker(settings, pipeline)
    await broker.start()
    try:

        async def all_projected_and_committed() -> bool:
            committed = await committed_offsets(settings)
            return (
                await projected_sample_total(database) >= EVENTS
                and sum(committed.values()) == EVENTS
                and len(committed) == len(partitions)
            )

        await wait_for(all_projected_and_committed, timeout_s=90, what="all projected, committed")
    finally:
        await pipeline.close()
        await broker.stop()

    assert projections.rounds > 2  # the failure happened, and later rounds ran
    assert await database["events"].count_documents({}) == EVENTS
    assert await projected_sample_total(database) == EVENTS
    assert sum((await committed_offsets(settings)).values()) == EVENTS
