"""The bad-input table against the real Kafka: each is refused and the topic stays empty."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.integration.processor.conftest import RunningProcessor, TopicReader, start_processor
from tests.support.services import Endpoints
from tests.unit.processor.bad_inputs import (
    BAD_REQUESTS,
    MAX_BODY_BYTES,
    MAX_BODY_WEIGHT,
    BadRequest,
    error_text,
)
from tests.unit.processor.test_bad_inputs import send

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
async def table_processor(services: Endpoints) -> AsyncIterator[RunningProcessor]:
    """One app and one topic for the whole table (each case checks the topic stays empty)."""
    import uuid

    topic = f"test-gpu-metadata-bad-{uuid.uuid4().hex[:10]}"
    lifespan, client = await start_processor(
        services, topic, MAX_BODY_BYTES=MAX_BODY_BYTES, MAX_BODY_WEIGHT=MAX_BODY_WEIGHT
    )
    try:
        yield RunningProcessor(client, TopicReader(services.kafka_bootstrap_servers, topic))
    finally:
        await client.aclose()
        await asyncio.wait_for(lifespan.__aexit__(None, None, None), timeout=30)


@pytest.mark.parametrize("case", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
async def test_bad_request_is_refused_and_the_topic_stays_empty(
    table_processor: RunningProcessor, case: BadRequest
) -> None:
    response = await send(table_processor.client, case)

    assert response.status_code == case.status, response.text[:500]
    assert case.expect in error_text(response.json()), error_text(response.json())
    assert await table_processor.topic.message_count() == 0
