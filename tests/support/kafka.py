"""Reading a test's topic back: every record on it, without a consumer group (nothing to
clean up), in one place for the processor, worker and tenancy tests."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


@dataclass
class TopicReader:
    """Reads ``topic`` from the beginning."""

    bootstrap_servers: str
    topic: str

    async def partitions(self) -> list[TopicPartition]:
        """The topic's partitions, straight from the broker."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        await admin.start()
        try:
            described = await admin.describe_topics([self.topic])
        finally:
            await admin.close()
        ids = sorted(item["partition"] for entry in described for item in entry["partitions"])
        return [TopicPartition(self.topic, partition) for partition in ids]

    async def message_count(self) -> int:
        """How many messages the topic holds (end minus beginning offsets)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers)
        await consumer.start()
        try:
            partitions = await self.partitions()
            ends = await consumer.end_offsets(partitions)
            starts = await consumer.beginning_offsets(partitions)
            return sum(ends[tp] - starts[tp] for tp in partitions)
        finally:
            await consumer.stop()

    async def read(
        self, expected: int = 0, timeout_s: float = 30.0
    ) -> list[ConsumerRecord[Any, Any]]:
        """Every record on the topic once at least ``expected`` are there (fails after
        ``timeout_s``); with ``expected=0``, what is there now."""
        deadline = time.monotonic() + timeout_s
        partitions = await self.partitions()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False
        )
        await consumer.start()
        records: list[ConsumerRecord[Any, Any]] = []
        try:
            consumer.assign(partitions)
            # Explicit seeks: seek_to_beginning() resolves lazily and position() may not see it.
            for tp, start in (await consumer.beginning_offsets(partitions)).items():
                consumer.seek(tp, start)
            while True:
                ends = await consumer.end_offsets(partitions)
                while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
                    for batch in (await consumer.getmany(timeout_ms=1000)).values():
                        records.extend(batch)
                if len(records) >= expected or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        finally:
            await consumer.stop()
        assert len(records) >= expected, f"only {len(records)} of {expected} messages arrived"
        return records


async def read_topic(bootstrap_servers: str, topic: str) -> list[ConsumerRecord[Any, Any]]:
    """Every record on ``topic`` now."""
    return await TopicReader(bootstrap_servers, topic).read()
