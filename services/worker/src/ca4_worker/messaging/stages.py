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

from collections.abc import Sequence

from ca4_worker.application.ingest import IngestService
from ca4_worker.application.projector import ProjectionService, StoreHandoff
from ca4_worker.core import metrics
from ca4_worker.core.config import Settings
from ca4_worker.core.gc_pause import gc_paused
from ca4_worker.messaging.batch_consumer import BatchConsumer, Record
from ca4_worker.messaging.records import raw_record
from ca4_worker.messaging.store_progress import StoreWatermark


def store_consumer(
    settings: Settings,
    ingest: IngestService,
    watermark: StoreWatermark,
    handoff: StoreHandoff | None = None,
) -> BatchConsumer:
    """The store stage's consumer (not started); it hands its decisions to ``handoff``."""

    async def store(batch: Sequence[Record]) -> None:
        with gc_paused():
            records = [raw_record(record) for record in batch]
            outcome = await ingest.handle_batch(records)
        if handoff is not None:
            handoff.put((record.position for record in records), outcome.to_project)

    return BatchConsumer(
        name="store",
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=settings.kafka_topic,
        group_id=settings.kafka_store_group,
        handler=store,
        max_records=settings.store_max_records,
        max_partition_fetch_bytes=settings.store_max_partition_fetch_bytes,
        stage_seconds=metrics.STORE_STAGE_SECONDS,
        after_batch=watermark.advance,
    )


def projection_consumer(
    settings: Settings, projector: ProjectionService, watermark: StoreWatermark
) -> BatchConsumer:
    """The projection stage's consumer (not started)."""

    async def project(batch: Sequence[Record]) -> None:
        with gc_paused():
            await projector.handle_batch([raw_record(record) for record in batch])

    return BatchConsumer(
        name="projection",
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=settings.kafka_topic,
        group_id=settings.kafka_project_group,
        handler=project,
        max_records=settings.projection_max_records,
        max_partition_fetch_bytes=settings.store_max_partition_fetch_bytes,
        stage_seconds=metrics.PROJECTION_STAGE_SECONDS,
    )
