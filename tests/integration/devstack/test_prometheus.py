"""The dev stack's Prometheus: ready, scraping our jobs, alert rules loaded."""

from __future__ import annotations

import httpx
import pytest
from ca4_provision.devstack.settings import DevstackSettings

from tests.support.services import Endpoints

pytestmark = [pytest.mark.prometheus]


@pytest.fixture
def prometheus_url(services: Endpoints) -> str:
    if services.prometheus_url is None:
        raise RuntimeError("CA4_PROMETHEUS_URL is not set; `ca4 devstack env` sets it")
    return services.prometheus_url


async def test_ready_and_scraping_processor_and_worker(prometheus_url: str) -> None:
    async with httpx.AsyncClient(base_url=prometheus_url, timeout=5) as client:
        ready = await client.get("/-/ready")
        targets = (await client.get("/api/v1/targets")).json()["data"]["activeTargets"]

    assert ready.status_code == 200
    scraped = {t["labels"]["job"]: t["scrapeUrl"] for t in targets}
    ports = DevstackSettings.from_env().ports
    assert scraped["processor"] == f"http://127.0.0.1:{ports.processor}/metrics"
    assert scraped["worker"] == f"http://127.0.0.1:{ports.worker}/metrics"


async def test_loads_the_repository_alert_rules(prometheus_url: str) -> None:
    async with httpx.AsyncClient(base_url=prometheus_url, timeout=5) as client:
        config = (await client.get("/api/v1/status/config")).json()["data"]["yaml"]
    assert "observability/prometheus/rules/*.yml" in config
