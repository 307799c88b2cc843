"""Simulated outages: `ca4 devstack stop` really takes a service away and `start` brings it back."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer
from ca4_provision.devstack.health import UnhealthyError, http_ok, kafka_ready, mongo_ready

from tests.support.devstack import DevstackControl, health_collection_locked
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


@pytest.mark.mongo
async def test_a_database_that_pings_but_answers_no_query_is_reported_wedged(
    services: Endpoints, devstack: DevstackControl
) -> None:
    """The store wedge of FerretDB v1: ping answered while every query waited for the pool."""
    await devstack.require_ours("postgres")
    await mongo_ready(services.mongo_url)  # creates the health check's scratch collection

    async with health_collection_locked():
        with pytest.raises(UnhealthyError, match=r"^wedged: ping answers but a query on "):
            await mongo_ready(services.mongo_url, query_deadline_s=2)
        status = (await devstack.status())["ferretdb"]

    assert status["state"] == "unhealthy"
    assert status["detail"].startswith("wedged: ping answers but a query on ca4_devstack.health")
    await mongo_ready(services.mongo_url)


@pytest.mark.s3
async def test_s3_outage_and_recovery(services: Endpoints, devstack: DevstackControl) -> None:
    ready = f"{services.s3_endpoint_url}/minio/health/ready"
    await devstack.stop("s3")
    with pytest.raises(UnhealthyError):
        await http_ok(ready)

    await devstack.start("s3")
    await http_ok(ready)
