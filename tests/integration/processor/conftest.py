"""Real-Kafka fixtures: the processor in-process on the test's own topic, and a topic reader."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from asgi_lifespan import LifespanManager
from ca4_processor.core.config import Settings
from ca4_processor.main import create_app

from tests.support.services import Endpoints
from tests.unit.processor.bad_inputs import KEY_HASHES, VALID_KEY

AUTH = {"Authorization": f"Bearer {VALID_KEY}"}
CLAIMS_DATABASE = "test_ca4_processor"
"""Where the processor tests' session claims go (every test reports as tenant ``tests``)."""
PARTITIONS = 3


async def create_topic(
    bootstrap_servers: str,
    topic: str,
    partitions: int = PARTITIONS,
    configs: dict[str, str] | None = None,
) -> None:
    """Create the test's own topic with several partitions, so keying by session_id matters."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=partitions,
                    replication_factor=1,
                    topic_configs=configs or {},
                )
            ]
        )
    finally:
        await admin.close()


@dataclass
class TopicReader:
    """Reads a topic from the beginning without a consumer group (nothing to clean up)."""

    bootstrap_servers: str
    topic: str

    async def _consumer(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False
        )
        await consumer.start()
        partitions = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        return consumer

    async def message_count(self) -> int:
        """How many messages the topic holds (sum of end offsets)."""
        consumer = await self._consumer()
        try:
            offsets = await consumer.end_offsets(list(consumer.assignment()))
            return sum(offsets.values())
        finally:
            await consumer.stop()

    async def read(self, expected: int, timeout_s: float = 30.0) -> list[ConsumerRecord[Any, Any]]:
        """Every message, once at least ``expected`` arrived (fails after ``timeout_s``)."""
        consumer = await self._consumer()
        records: list[ConsumerRecord[Any, Any]] = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(records) < expected and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for batch in batches.values():
                    records.extend(batch)
            # One more short poll, so an unexpected extra message is seen too.
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                records.extend(batch)
        finally:
            await consumer.stop()
        assert len(records) >= expected, f"only {len(records)} of {expected} messages arrived"
        return records


@dataclass
class RunningProcessor:
    """The processor app, served in-process, and a reader for its topic."""

    client: httpx.AsyncClient
    topic: TopicReader


async def start_processor(
    services: Endpoints, topic: str, topic_configs: dict[str, str] | None = None, **settings: Any
) -> tuple[LifespanManager, httpx.AsyncClient]:
    """Create the topic, then start the real app (real Kafka) publishing to it."""
    await create_topic(services.kafka_bootstrap_servers, topic, configs=topic_configs)
    app = create_app(
        Settings(
            KAFKA_BOOTSTRAP_SERVERS=services.kafka_bootstrap_servers,
            KAFKA_TOPIC=topic,
            API_KEY_HASHES=KEY_HASHES,
            RATE_LIMIT_PER_SECOND=0,
            MONGO_URL=services.mongo_url,
            MONGO_DB=CLAIMS_DATABASE,
            **settings,
        )
    )
    lifespan = LifespanManager(app, startup_timeout=30)
    await lifespan.__aenter__()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(lifespan.app), base_url="http://processor", timeout=60
    )
    return lifespan, client


@pytest.fixture
async def processor(services: Endpoints, topic_name: str) -> AsyncIterator[RunningProcessor]:
    """The processor against the dev stack's Kafka, on this test's own topic."""
    lifespan, client = await start_processor(services, topic_name, PUBLISH_TIMEOUT_S=3.0)
    try:
        yield RunningProcessor(client, TopicReader(services.kafka_bootstrap_servers, topic_name))
    finally:
        await client.aclose()
        await asyncio.wait_for(lifespan.__aexit__(None, None, None), timeout=30)
