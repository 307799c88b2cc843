"""The FastStream store subscriber hands raw batches to the ingest service (in memory)."""

from __future__ import annotations

import json

from ca4_worker.application.ingest import IngestService
from ca4_worker.core.config import Settings
from ca4_worker.messaging.store_subscriber import build_broker
from ca4_worker.persistence.memory import (
    InMemoryDeadLetters,
    InMemoryEventStore,
    InMemoryProjections,
)
from faststream.kafka import TestKafkaBroker

from tests.unit.worker.factories import event_body


async def test_batch_with_poison_is_stored_and_dead_lettered() -> None:
    store, projections, letters = InMemoryEventStore(), InMemoryProjections(), InMemoryDeadLetters()
    ingest = IngestService(store=store, projections=projections, dead_letters=letters)
    settings = Settings(kafka_topic="unit-topic")
    broker = build_broker(settings, ingest)
    good = event_body(session_id="fs")
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish_batch(json.dumps(good).encode(), b"not json", topic="unit-topic")
    assert await store.count() == 1
    assert [letter.error_class for letter in letters.letters] == ["invalid_json"]
    assert letters.letters[0].record.value == b"not json"
