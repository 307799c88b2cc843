"""Against the real Kafka: the topic's own max.message.bytes decides what is too large (413)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from ca4_processor.core.config import Settings
from ca4_processor.main import create_app

from tests.integration.processor.conftest import (
    AUTH,
    RunningProcessor,
    TopicReader,
    start_processor,
)
from tests.support.reports import make_report
from tests.support.services import Endpoints
from tests.unit.processor.bad_inputs import KEY_HASHES

pytestmark = pytest.mark.kafka

TOPIC_LIMIT = 20_000
"""Far below the producer's 1 MiB max_request_size, so only the broker's value explains a 413."""


@pytest.fixture
async def small_topic_processor(
    services: Endpoints, topic_name: str
) -> AsyncIterator[RunningProcessor]:
    """The processor on a topic that takes at most 20,000 bytes per message."""
    lifespan, client = await start_processor(
        services, topic_name, topic_configs={"max.message.bytes": str(TOPIC_LIMIT)}
    )
    try:
        yield RunningProcessor(client, TopicReader(services.kafka_bootstrap_servers, topic_name))
    finally:
        await client.aclose()
        await asyncio.wait_for(lifespan.__aexit__(None, None, None), timeout=30)


async def test_report_over_the_topic_limit_is_413_naming_the_limit(
    small_topic_processor: RunningProcessor,
) -> None:
    response = await small_topic_processor.client.post(
        "/v1/metadata", json=make_report(gpus=64), headers=AUTH
    )

    assert response.status_code == 413, response.text[:500]
    assert f"over the limit of {TOPIC_LIMIT} bytes per Kafka message" in response.json()["detail"]
    assert await small_topic_processor.topic.message_count() == 0


async def test_batch_publishes_the_others_and_rejects_only_the_oversized_one(
    small_topic_processor: RunningProcessor,
) -> None:
    reports = [make_report(), make_report(gpus=64), make_report()]

    response = await small_topic_processor.client.post(
        "/v1/metadata/batch", json={"reports": reports}, headers=AUTH
    )

    assert response.status_code == 207, response.text[:500]
    body = response.json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted"]
    assert str(TOPIC_LIMIT) in body["results"][1]["errors"][0]["msg"]
    records = await small_topic_processor.topic.read(expected=2)
    assert sorted(json.loads(r.value)["event_id"] for r in records) == sorted(
        [reports[0]["event_id"], reports[2]["event_id"]]
    )


async def test_configured_limit_overrides_the_topic(services: Endpoints, topic_name: str) -> None:
    lifespan, client = await start_processor(services, topic_name, KAFKA_MAX_MESSAGE_BYTES=1500)
    try:
        response = await client.post("/v1/metadata", json=make_report(gpus=3), headers=AUTH)
    finally:
        await client.aclose()
        await asyncio.wait_for(lifespan.__aexit__(None, None, None), timeout=30)

    assert response.status_code == 413
    assert "over the limit of 1500 bytes" in response.json()["detail"]


async def test_without_a_topic_config_the_producer_request_size_is_the_limit(
    services: Endpoints, topic_name: str
) -> None:
    # The topic does not exist at start, so the broker has no max.message.bytes to tell.
    report = make_report(gpus=64)
    for gpu in report["payload"]["gpus"]:
        gpu["processes"] = [{"pid": pid, "name": "p" * 100} for pid in range(256)]
    app = create_app(
        Settings(
            KAFKA_BOOTSTRAP_SERVERS=services.kafka_bootstrap_servers,
            KAFKA_TOPIC=topic_name,
            API_KEY_HASHES=KEY_HASHES,
        )
    )
    async with (
        LifespanManager(app, startup_timeout=30) as running,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(running.app), base_url="http://processor", timeout=60
        ) as client,
    ):
        response = await client.post("/v1/metadata", json=report, headers=AUTH)

    assert response.status_code == 413, response.text[:500]
    assert f"over the limit of {1024 * 1024} bytes" in response.json()["detail"]
