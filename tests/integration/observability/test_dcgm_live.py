"""DCGM-style PromQL against the real Prometheus, on series the worker exported from reports."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.integration.observability.conftest import Pipeline
from tests.unit.worker.factories import event_body, gpu_sample

pytestmark = [pytest.mark.kafka, pytest.mark.mongo, pytest.mark.prometheus, pytest.mark.e2e]

AUTH = {"Authorization": "Bearer ca4-dev-key"}
SERVER_STAMPED = {"received_at", "key_id", "tenant"}


def client_report(**kwargs: Any) -> dict[str, Any]:
    """A report as a client posts it (no fields the processor stamps)."""
    body = event_body(occurred_at=datetime.now(UTC), **kwargs)
    return {**{k: v for k, v in body.items() if k not in SERVER_STAMPED}, "schema_version": 1}


async def test_avg_gpu_util_by_model_name_returns_series(pipeline: Pipeline) -> None:
    project = f"dcgm-live-{uuid.uuid4().hex[:8]}"
    reports = [
        client_report(
            session_id=f"{project}-{index}",
            labels={"project": project},
            gpus=[
                gpu_sample(0, uuid_=f"GPU-{project}-{index}-t4", utilization=20.0 + 40 * index),
                gpu_sample(
                    1,
                    uuid_=f"GPU-{project}-{index}-a100",
                    name="NVIDIA A100-SXM4-40GB",
                    utilization=90.0,
                ),
            ],
        )
        for index in range(2)
    ]
    query = f'avg by (modelName) (DCGM_FI_DEV_GPU_UTIL{{project="{project}"}})'
    async with httpx.AsyncClient(timeout=10.0) as http:
        for report in reports:
            posted = await http.post(
                f"{pipeline.processor_url}/v1/metadata", json=report, headers=AUTH
            )
            assert posted.status_code == 202, posted.text
        deadline = time.monotonic() + 90
        while True:
            response = await http.get(
                f"{pipeline.prometheus_url}/api/v1/query", params={"query": query}
            )
            body = response.json()
            assert body["status"] == "success", body
            by_model = {
                item["metric"]["modelName"]: float(item["value"][1])
                for item in body["data"]["result"]
            }
            if len(by_model) == 2:
                break
            assert time.monotonic() < deadline, f"no DCGM series in Prometheus: {body}"
            await asyncio.sleep(2.0)
    assert by_model == {"Tesla T4": 40.0, "NVIDIA A100-SXM4-40GB": 90.0}
