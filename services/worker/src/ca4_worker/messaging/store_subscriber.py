"""The event-store subscriber: a FastStream batch subscriber in consumer group ``ca4-store``.

Auto-commit is off (``NACK_ON_ERROR``): the handler commits the consumer's position
(``message.ack``) once the batch is durable in the store and projections. The handler
waits out database outages itself (backoff, no commit); an unexpected error nacks the batch,
which seeks back to its first offsets so nothing past it is committed.
"""

from __future__ import annotations

import time
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage

from ca4_worker.application.ingest import IngestService
from ca4_worker.core import metrics
from ca4_worker.core.config import Settings
from ca4_worker.core.gc_pause import gc_paused
from ca4_worker.messaging.records import raw_record


async def _keep_bytes(message: Any) -> None:
    """Skip FastStream's body decoding: poison bytes must reach the handler untouched."""
    return


def build_broker(settings: Settings, ingest: IngestService) -> KafkaBroker:
    """A broker with the store subscriber registered (started by the app's lifespan)."""
    broker = KafkaBroker(settings.kafka_bootstrap_servers, client_id="ca4-worker")
    cycle = _CycleClock()

    @broker.subscriber(
        settings.kafka_topic,
        group_id=settings.kafka_store_group,
        batch=True,
        max_records=settings.store_max_records,
        max_partition_fetch_bytes=settings.store_max_partition_fetch_bytes,
        batch_timeout_ms=settings.store_batch_timeout_ms,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        auto_offset_reset="earliest",
        decoder=_keep_bytes,
    )
    async def store_events(message: KafkaMessage) -> None:
        """Store, project or dead-letter one batch of records."""
        records = message.raw_message
        batch = records if isinstance(records, (tuple, list)) else (records,)
        cycle.batch_arrived()
        with gc_paused():
            await ingest.handle_batch([raw_record(record) for record in batch])
        # Committed here rather than by FastStream after the return, to time the commit; a
        # raising handler still leaves the nack (seek back) to FastStream.
        with metrics.STORE_STAGE_SECONDS.labels("commit").time():
            await message.ack()
        cycle.batch_done()

    return broker


class _CycleClock:
    """Times ``fetch_wait``: from one batch's commit to the next batch reaching the handler."""

    def __init__(self) -> None:
        self._done: float | None = None

    def batch_arrived(self) -> None:
        if self._done is not None:
            metrics.STORE_STAGE_SECONDS.labels("fetch_wait").observe(
                time.perf_counter() - self._done
            )

    def batch_done(self) -> None:
        self._done = time.perf_counter()
