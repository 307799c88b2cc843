"""Simulated outages: `ca4 devstack stop` really takes a service away and `start` brings it back."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer
from ca4_provision.devstack.health import UnhealthyError, http_ok, kafka_ready, mongo_ready

from tests.support.devstack import DevstackControl
from tests.support.services import Endpoints

pytestmark = [pytest.mark.disruptive, pytest.mark.slow]


@pytest.mark.kafka
async def test_kafka_outage_and_recovery(services: Endpoints, devstack: DevstackControl) -> None:
    await devstack.stop("kafka")
    with pytest.raises(UnhealthyError):
        await kafka_ready(services.kafka_bootstrap_servers)

    await devstack.start("kafka")
    producer = AIOKafkaProducer(
        bootstrap_servers=services.kafka_bootstrap_servers, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        metadata = await producer.send_and_wait("gpu-metadata", b"after-outage", key=b"probe")
    finally:
        await producer.stop()
    assert metadata.offset >= 0


@pytest.mark.mongo
async def test_database_outage_and_recovery(services: Endpoints, devstack: DevstackControl) -> None:
    await devstack.stop("mongo")
    with pytest.raises(UnhealthyError):
        await mongo_ready(services.mongo_url)

    await devstack.start("mongo")
    await mongo_ready(services.mongo_url)


@pytest.mark.s3
async def test_s3_outage_and_recovery(services: Endpoints, devstack: DevstackControl) -> None:
    ready = f"{services.s3_endpoint_url}/minio/health/ready"
    await devstack.stop("s3")
    with pytest.raises(UnhealthyError):
        await http_ok(ready)

    await devstack.start("s3")
    await http_ok(ready)
