"""The event-store subscriber: a FastStream batch subscriber in consumer group ``ca4-store``.

Auto-commit is off (``NACK_ON_ERROR``): FastStream commits the consumer's position after the
handler returns, i.e. after the batch is durable in the store and projections. The handler
waits out database outages itself (backoff, no commit); an unexpected error nacks the batch,
which seeks back to its first offsets so nothing past it is committed.
"""

from __future__ import annotations

from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage

from ca4_worker.application.ingest import IngestService
from ca4_worker.core.config import Settings
from ca4_worker.core.gc_pause import gc_paused
from ca4_worker.messaging.records import raw_record


async def _keep_bytes(message: Any) -> None:
    """Skip FastStream's body decoding: poison bytes must reach the handler untouched."""
    return


def build_broker(settings: Settings, ingest: IngestService) -> KafkaBroker:
    """A broker with the store subscriber registered (started by the app's lifespan)."""
    broker = KafkaBroker(settings.kafka_bootstrap_servers, client_id="ca4-worker")

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
        with gc_paused():
            await ingest.handle_batch([raw_record(record) for record in batch])

    return broker
