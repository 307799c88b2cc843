"""Fixtures for worker integration tests against the real Kafka, FerretDB and MinIO."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from ca4_worker.core.config import Settings
from ca4_worker.persistence.database import connect, init_database
from ca4_worker.persistence.documents import Doc
from ca4_worker.persistence.s3 import S3ObjectStore
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.worker.support import INDEX_BUILD_DEADLINE_S, OPERATOR_KEY_HASHES
from tests.support.services import Endpoints

PARTITIONS = 3


@pytest.fixture
async def database(services: Endpoints, database_name: str) -> AsyncIterator[AsyncDatabase[Doc]]:
    """A fresh database with the worker's collections and indexes, dropped afterwards."""
    client = connect(services.mongo_url)
    db = client[database_name]
    await init_database(db, build_deadline_s=INDEX_BUILD_DEADLINE_S)
    yield db
    await client.drop_database(database_name)
    await client.close()


@pytest.fixture
async def topic(services: Endpoints, topic_name: str) -> AsyncIterator[str]:
    """A fresh topic (and its dead-letter topic) with several partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap_servers)
    await admin.start()
    await admin.create_topics(
        [
            NewTopic(topic_name, num_partitions=PARTITIONS, replication_factor=1),
            NewTopic(f"{topic_name}.dlq", num_partitions=1, replication_factor=1),
        ]
    )
    yield topic_name
    try:
        await admin.delete_topics([topic_name, f"{topic_name}.dlq"])
    finally:
        await admin.close()


@pytest.fixture
def worker_settings(
    services: Endpoints, topic: str, database_name: str, bucket_name: str
) -> Settings:
    """Settings pointing a worker at this test's topic, database and bucket."""
    return Settings(
        kafka_bootstrap_servers=services.kafka_bootstrap_servers,
        kafka_topic=topic,
        kafka_dlq_topic=f"{topic}.dlq",
        # Groups of their own: tests running at once never rebalance each other's consumers.
        kafka_store_group=f"{topic}-store",
        kafka_archive_group=f"{topic}-archive",
        kafka_project_group=f"{topic}-project",
        mongo_url=services.mongo_url,
        mongo_db=database_name,
        s3_endpoint_url=services.s3_endpoint_url,
        s3_bucket=bucket_name,
        s3_access_key_id=services.s3_access_key_id,
        s3_secret_access_key=services.s3_secret_access_key,  # type: ignore[arg-type]
        archive_max_records=500,
        archive_max_age_s=1.0,
        retry_max_backoff_s=0.5,
        lag_poll_interval_s=0.5,
        mongo_timeout_ms=1000,
        api_key_hashes=OPERATOR_KEY_HASHES,
    )


@pytest.fixture
async def bucket(worker_settings: Settings) -> AsyncIterator[S3ObjectStore]:
    """This test's bucket, created fresh."""
    async with S3ObjectStore.from_settings(worker_settings) as objects:
        await objects.ensure_bucket()
        yield objects
