"""With the broker stopped the API answers 503 (never 202); once it is back, a retry is accepted."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.integration.processor.conftest import AUTH, RunningProcessor
from tests.support.devstack import DevstackControl
from tests.support.reports import make_report

pytestmark = [pytest.mark.kafka, pytest.mark.disruptive, pytest.mark.slow]


async def test_kafka_down_is_503_and_a_retry_after_recovery_is_accepted(
    processor: RunningProcessor, devstack: DevstackControl
) -> None:
    report = make_report()
    warm_up = await processor.client.post("/v1/metadata", json=make_report(), headers=AUTH)
    assert warm_up.status_code == 202

    await devstack.stop("kafka")
    down = await processor.client.post("/v1/metadata", json=report, headers=AUTH)
    ready = await processor.client.get("/readyz")

    assert down.status_code == 503, down.text
    assert int(down.headers["retry-after"]) > 0
    assert "nothing was accepted" in down.json()["detail"]
    assert ready.status_code == 503

    await devstack.start("kafka")
    retried = await _post_until_accepted(processor, report, timeout_s=90)

    assert retried["event_id"] == report["event_id"]
    records = await processor.topic.read(expected=2, timeout_s=60)
    event_ids = [json.loads(r.value)["event_id"] for r in records]
    # The 503'd attempt may still land later (aiokafka retries); the worker deduplicates by id.
    assert report["event_id"] in event_ids
    assert (await processor.client.get("/readyz")).status_code == 200


async def _post_until_accepted(
    processor: RunningProcessor, report: dict[str, object], timeout_s: float
) -> dict[str, object]:
    """Retry like the SDK does (same event_id) until Kafka acknowledges it."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = await processor.client.post("/v1/metadata", json=report, headers=AUTH)
        if response.status_code == 202:
            receipt: dict[str, object] = response.json()
            return receipt
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline, "Kafka came back but the API still answers 503"
        await asyncio.sleep(1)
