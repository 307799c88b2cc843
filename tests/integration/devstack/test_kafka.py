"""The dev stack's Kafka broker: real produce and consume through aiokafka."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.support.services import Endpoints

pytestmark = [pytest.mark.kafka]


async def test_idempotent_producer_round_trip_keeps_per_key_order(
    services: Endpoints, topic_name: str
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic_name, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(
        bootstrap_servers=services.kafka_bootstrap_servers, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        sent = [(f"session-{i % 3}".encode(), f"event-{i}".encode()) for i in range(12)]
        for key, value in sent:
            await producer.send_and_wait(topic_name, value, key=key)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic_name,
        bootstrap_servers=services.kafka_bootstrap_servers,
        group_id=f"{topic_name}-reader",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        received: list[tuple[bytes, bytes, int]] = []
        while len(received) < len(sent):
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, f"no more messages after {len(received)} of {len(sent)}"
            for records in batches.values():
                received += [(r.key, r.value, r.partition) for r in records]
        partitions = consumer.partitions_for_topic(topic_name)
    finally:
        await consumer.stop()

    assert partitions == {0, 1, 2}
    for key in {key for key, _ in sent}:
        assert [v for k, v, _ in received if k == key] == [v for k, v in sent if k == key]
        assert len({p for k, _, p in received if k == key}) == 1


async def test_pipeline_topics_exist_with_three_partitions(services: Endpoints) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics(["gpu-metadata", "gpu-metadata.dlq"])
    finally:
        await admin.close()
    partitions = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
    assert partitions == {"gpu-metadata": 3, "gpu-metadata.dlq": 3}
