"""The event-store subscriber: a FastStream batch subscriber in consumer group ``ca4-store``.

Auto-commit is off and acknowledgement manual: :class:`StorePipeline` commits each batch's
offsets, per partition, once the batch is stored and projected, while the next batch is being
stored. The handler waits out database outages itself (backoff, no commit); an unexpected error
rewinds every partition to its oldest uncommitted offset, so nothing past it is committed.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage

from ca4_worker.core.config import Settings
from ca4_worker.core.gc_pause import gc_paused
from ca4_worker.messaging.records import raw_record
from ca4_worker.messaging.store_pipeline import Offsets, StorePipeline


async def _keep_bytes(message: Any) -> None:
    """Skip FastStream's body decoding: poison bytes must reach the handler untouched."""
    return


class _NoOffsets:
    """Stands in for the consumer under FastStream's in-memory test broker, which has none."""

    def assignment(self) -> set[TopicPartition]:
        return set()

    async def commit(self, offsets: Offsets) -> None:
        return

    def seek(self, partition: TopicPartition, offset: int) -> None:
        return


def build_broker(settings: Settings, pipeline: StorePipeline) -> KafkaBroker:
    """A broker with the store subscriber registered (started by the app's lifespan)."""
    broker = KafkaBroker(settings.kafka_bootstrap_servers, client_id="ca4-worker")

    @broker.subscriber(
        settings.kafka_topic,
        group_id=settings.kafka_store_group,
        batch=True,
        max_records=settings.store_max_records,
        max_partition_fetch_bytes=settings.store_max_partition_fetch_bytes,
        batch_timeout_ms=settings.store_batch_timeout_ms,
        ack_policy=AckPolicy.MANUAL,
        listener=pipeline.rebalance_listener(),
        auto_offset_reset="earliest",
        decoder=_keep_bytes,
    )
    async def store_events(message: KafkaMessage) -> None:
        """Store, project or dead-letter one batch of records."""
        records = message.raw_message
        batch = records if isinstance(records, (tuple, list)) else (records,)
        consumer = message.consumer
        with gc_paused():
            await pipeline.handle(
                [raw_record(record) for record in batch],
                consumer if isinstance(consumer, AIOKafkaConsumer) else _NoOffsets(),
            )

    return broker
