"""The FastStream store subscriber hands raw batches to the ingest service (in memory)."""

from __future__ import annotations

import json

from ca4_worker.application.ingest import IngestService
from ca4_worker.core.config import Settings
from ca4_worker.core.metrics import STORE_STAGES
from ca4_worker.messaging.store_subscriber import build_broker
from ca4_worker.persistence.memory import (
    InMemoryDeadLetters,
    InMemoryEventStore,
    InMemoryProjections,
)
from faststream.kafka import TestKafkaBroker
from prometheus_client import REGISTRY

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


def _stage_count(stage: str) -> float:
    sample = REGISTRY.get_sample_value("ca4_worker_store_stage_seconds_count", {"stage": stage})
    return sample or 0.0


async def test_every_stage_of_the_store_cycle_is_timed() -> None:
    """Two batches, one with poison: each stage of the cycle is observed, and the wait between
    the batches is observed as ``fetch_wait``; a projected event is observed once."""
    ingest = IngestService(
        store=InMemoryEventStore(),
        projections=InMemoryProjections(),
        dead_letters=InMemoryDeadLetters(),
    )
    broker = build_broker(Settings(kafka_topic="unit-topic"), ingest)
    before = {stage: _stage_count(stage) for stage in STORE_STAGES}
    projected_before = REGISTRY.get_sample_value("ca4_worker_projected_latency_seconds_count")
    async with TestKafkaBroker(broker) as test_broker:
        for value in (json.dumps(event_body(session_id="timed")).encode(), b"not json"):
            await test_broker.publish_batch(value, topic="unit-topic")
    observed = {stage: _stage_count(stage) - before[stage] for stage in STORE_STAGES}
    assert observed == {
        "fetch_wait": 1,
        "decode": 2,
        "append": 2,
        "projection": 1,
        "dead_letters": 1,
        "commit": 2,
    }
    projected = REGISTRY.get_sample_value("ca4_worker_projected_latency_seconds_count")
    assert (projected or 0) - (projected_before or 0) == 1
