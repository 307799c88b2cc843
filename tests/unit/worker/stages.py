"""The store stage and the projection stage on the same records, as the worker runs them:
the store handles a batch and reports its progress, then the projection stage projects it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka import TopicPartition
from ca4_worker.application.ingest import BatchOutcome, IngestService
from ca4_worker.application.projector import ProjectionService
from ca4_worker.domain.records import RawRecord
from ca4_worker.messaging.store_progress import StoreWatermark
from ca4_worker.persistence.memory import (
    InMemoryDeadLetters,
    InMemoryEventStore,
    InMemoryProjections,
)


class StoreThenProject:
    """``handle_batch`` stores, then projects, and returns the counts of both."""

    def __init__(
        self,
        store: InMemoryEventStore,
        projections: InMemoryProjections,
        letters: InMemoryDeadLetters,
        **store_options: Any,
    ) -> None:
        options = {"max_backoff_s": 0.01, **store_options}
        self.watermark = StoreWatermark(store_group="ca4-store")
        self.ingest = IngestService(
            store=store, projections=projections, dead_letters=letters, **options
        )
        self.projector = ProjectionService(
            store=store,
            projections=projections,
            dead_letters=letters,
            progress=self.watermark,
            max_backoff_s=options["max_backoff_s"],
            max_attempts=options.get("max_attempts", 5),
        )

    async def handle_batch(self, records: Sequence[RawRecord]) -> BatchOutcome:
        stored = await self.ingest.handle_batch(records)
        self.watermark.advance(next_offsets(records))
        projected = await self.projector.handle_batch(records)
        return BatchOutcome(
            stored.stored,
            stored.duplicate,
            stored.dead_lettered + projected.dead_lettered,
            stored.stored_per_partition,
        )


def next_offsets(records: Sequence[RawRecord]) -> dict[TopicPartition, int]:
    """The offset after each partition's last record."""
    offsets: dict[TopicPartition, int] = {}
    for item in records:
        partition = TopicPartition(item.topic, item.partition)
        offsets[partition] = max(offsets.get(partition, 0), item.offset + 1)
    return offsets
