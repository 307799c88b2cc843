"""Every PromQL expression of the dashboards and alert rules, against the real Prometheus.

After real traffic (an accepted report, a rejected one and a poison message that the worker
dead-letters), each expression must evaluate without error, and each Pipeline-dashboard
expression must return at least one series.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from ca4_provision.verify.checks import build_test_report
from ca4_provision.verify.settings import VerifySettings

from tests.integration.observability.conftest import Pipeline
from tests.unit.observability.promql import Expression, dashboard_expressions, rule_expressions

pytestmark = [pytest.mark.kafka, pytest.mark.mongo, pytest.mark.prometheus, pytest.mark.e2e]

SERIES_TIMEOUT_S = 90.0
AUTH = {"Authorization": "Bearer ca4-dev-key"}


async def send_traffic(pipeline: Pipeline) -> None:
    """One accepted report (waited for until stored), one rejected, one dead letter."""
    report = await asyncio.to_thread(
        build_test_report,
        VerifySettings(EDGE_API_URL=pipeline.processor_url),
        f"ca4-promql-{uuid.uuid4().hex[:8]}",
    )
    async with httpx.AsyncClient(timeout=10.0) as http:
        accepted = await http.post(
            f"{pipeline.processor_url}/v1/metadata", json=report, headers=AUTH
        )
        assert accepted.status_code == 202, accepted.text
        rejected = await http.post(
            f"{pipeline.processor_url}/v1/metadata", json={"event_id": "nope"}, headers=AUTH
        )
        assert rejected.status_code == 422, rejected.text
        producer = AIOKafkaProducer(bootstrap_servers=pipeline.endpoints.kafka_bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait("gpu-metadata", b"{not json", key=b"ca4-promql-poison")
        finally:
            await producer.stop()
        deadline = time.monotonic() + 60
        while True:
            status = await http.get(
                f"{pipeline.worker_url}/v1/events/{report['event_id']}", headers=AUTH
            )
            if status.status_code == 200 and status.json().get("stored"):
                return
            assert time.monotonic() < deadline, f"worker never stored the event: {status.text}"
            await asyncio.sleep(0.5)


async def evaluate(http: httpx.AsyncClient, prometheus_url: str, promql: str) -> list[object]:
    response = await http.get(f"{prometheus_url}/api/v1/query", params={"query": promql})
    body = response.json()
    assert body["status"] == "success", f"{promql}\n-> {body.get('errorType')}: {body.get('error')}"
    result: list[object] = body["data"]["result"]
    return result


@pytest.fixture(scope="module")
async def traffic(pipeline: Pipeline) -> tuple[Pipeline, float]:
    """The pipeline after traffic, and one deadline shared by all expressions (not one each)."""
    await send_traffic(pipeline)
    return pipeline, time.monotonic() + SERIES_TIMEOUT_S


@pytest.mark.parametrize(
    "expression", dashboard_expressions() + rule_expressions(), ids=lambda e: e.origin
)
async def test_expression_evaluates(
    traffic: tuple[Pipeline, float], expression: Expression
) -> None:
    pipeline, deadline = traffic
    must_have_series = expression.dashboard == "pipeline"
    async with httpx.AsyncClient(timeout=10.0) as http:
        while True:
            result = await evaluate(http, pipeline.prometheus_url, expression.promql)
            if result or not must_have_series:
                return
            assert time.monotonic() < deadline, (
                f"{expression.origin} returned no series after traffic:\n{expression.promql}"
            )
            await asyncio.sleep(2.0)


def test_expressions_are_found() -> None:
    origins = [e.origin for e in dashboard_expressions()]
    assert len(origins) >= 20
    assert len(rule_expressions()) >= 9
    assert json.dumps(origins)
