"""Real-Kafka fixtures: the processor in-process on the test's own topic, and a topic reader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from asgi_lifespan import LifespanManager
from ca4_processor.core.config import Settings
from ca4_processor.main import create_app

from tests.support.kafka import TopicReader
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
            **{
                "KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap_servers,
                "KAFKA_TOPIC": topic,
                "API_KEY_HASHES": KEY_HASHES,
                "RATE_LIMIT_PER_SECOND": 0,
                "MONGO_URL": services.mongo_url,
                "MONGO_DB": CLAIMS_DATABASE,
                **settings,
            }
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
