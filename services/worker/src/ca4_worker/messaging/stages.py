"""The worker's two consumer groups on the events topic, each a :class:`BatchConsumer`.

- ``ca4-store`` (the store stage): decode, guard, append, dead-letter, commit. It reports each
  durable batch to the :class:`StoreWatermark` before committing.
- ``ca4-project`` (the projection stage): waits for the watermark, projects what the store
  kept, commits. A partition this group has never committed starts at the earliest record,
  like the store group: the position guards make re-projecting what is already projected a
  no-op. Starting where the store group is would skip events whose projection a crash left
  half done, so it is an operator's choice at an upgrade (``docs/architecture.md``,
  "Latency"), not a default.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Mapping, Sequence

from aiokafka import TopicPartition

from ca4_worker.application.ingest import IngestService
from ca4_worker.application.projector import ProjectionService, StoreHandoff
from ca4_worker.core import metrics
from ca4_worker.core.config import Settings
from ca4_worker.core.gc_pause import collect_garbage_now_and_then, gc_paused
from ca4_worker.domain.records import PositionedEvent, RawRecord
from ca4_worker.messaging.batch_consumer import BatchConsumer, Record
from ca4_worker.messaging.records import raw_record
from ca4_worker.messaging.store_progress import StoreWatermark

PROJECTION_FETCH_BYTES = 1024 * 1024
"""Bytes the projection stage fetches per partition per request: it keeps polling while a
round runs, so it needs no large fetch to keep up, and each stage's fetch buffers count
against the worker's memory."""


def store_consumer(
    settings: Settings,
    ingest: IngestService,
    watermark: StoreWatermark,
    handoff: StoreHandoff | None = None,
) -> BatchConsumer:
    """The store stage's consumer (not started).

    A batch counts as handled for the projection stage (watermark, handoff) only once its
    commit landed: a batch whose commit was refused is handled again by the partition's next
    owner, whose decisions may differ (an event dead-lettered here after unexpected errors may
    be stored there).
    """
    decided: deque[tuple[list[RawRecord], list[PositionedEvent]]] = deque()

    async def store(batch: Sequence[Record]) -> None:
        with gc_paused():
            records = [raw_record(record) for record in batch]
            outcome = await ingest.handle_batch(records)
        decided.append((records, outcome.to_project))
        collect_garbage_now_and_then()

    def committed(offsets: Mapping[TopicPartition, int]) -> None:
        handled, kept = decided.popleft()
        if not offsets:
            return
        if handoff is not None:
            done = {partition.partition for partition in offsets}
            handoff.put(
                (record for record in handled if record.partition in done),
                (item for item in kept if item.position.partition in done),
            )
        watermark.advance(offsets)

    def assigned(partitions: Collection[TopicPartition]) -> None:
        # Each partition's stored counter from the moment this worker owns it, at 0: a new
        # owner (a restart, a rebalance) that stores nothing would otherwise export no series
        # for it, and CA4StorePartitionStalling could never fire for the partition it stalls on.
        for partition in partitions:
            metrics.PARTITION_STORED.labels(str(partition.partition))

    return BatchConsumer(
        name="store",
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=settings.kafka_topic,
        group_id=settings.kafka_store_group,
        handler=store,
        max_records=settings.store_max_records,
        max_bytes=settings.store_max_bytes,
        max_partition_fetch_bytes=settings.store_max_partition_fetch_bytes,
        stage_seconds=metrics.STORE_STAGE_SECONDS,
        after_commit=committed,
        on_assigned=assigned,
    )


def projection_consumer(
    settings: Settings, projector: ProjectionService, watermark: StoreWatermark
) -> BatchConsumer:
    """The projection stage's consumer (not started)."""

    async def project(batch: Sequence[Record]) -> None:
        await projector.handle_batch([raw_record(record) for record in batch])
        collect_garbage_now_and_then()

    return BatchConsumer(
        name="projection",
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=settings.kafka_topic,
        group_id=settings.kafka_project_group,
        handler=project,
        max_records=settings.projection_max_records,
        max_bytes=settings.projection_max_bytes,
        max_partition_fetch_bytes=PROJECTION_FETCH_BYTES,
        stage_seconds=metrics.PROJECTION_STAGE_SECONDS,
    )
