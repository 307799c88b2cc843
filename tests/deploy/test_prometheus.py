"""ca4-platform's Prometheus Deployment on the Debian binary: rendered args, rules, relabels."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import yaml

from tests.deploy import tier
from tests.deploy.cluster import find
from tests.deploy.conftest import App, Platform
from tests.deploy.discovery import with_file_discovery, write_targets

pytestmark = [pytest.mark.deploy, pytest.mark.slow]


async def test_prometheus_loads_the_rules_and_scrapes_the_app_pods(
    platform: Platform, app: App
) -> None:
    """Every rendered rule group loads; the relabelled jobs ``processor`` and ``worker`` are up."""
    cluster = platform.cluster
    rendered = find(platform.docs, "ConfigMap", "prometheus-config")["data"]["prometheus.yml"]
    targets = cluster.state / "prometheus-targets.json"
    write_targets(cluster, targets)
    cluster.replace_data(
        "ConfigMap",
        "monitoring",
        "prometheus-config",
        "prometheus.yml",
        with_file_discovery(rendered, targets),
    )
    (pod,) = cluster.plan(find(platform.docs, "Deployment", "prometheus"))
    try:
        await cluster.start(pod)
        await cluster.wait_ready(pod, within_s=60)
        rules = find(platform.docs, "ConfigMap", "prometheus-rules")["data"]
        expected_groups = sorted(
            group["name"] for text in rules.values() for group in yaml.safe_load(text)["groups"]
        )
        base = f"http://{pod.address}:{pod.port('http')}"
        async with httpx.AsyncClient(timeout=5) as http:
            loaded = (await http.get(f"{base}/api/v1/rules")).json()["data"]["groups"]
            assert sorted(g["name"] for g in loaded) == expected_groups

            async def up() -> dict[str, str]:
                result = (await http.get(f"{base}/api/v1/query", params={"query": "up"})).json()
                return {s["metric"]["job"]: s["value"][1] for s in result["data"]["result"]}

            for _ in range(80):
                jobs = await up()
                if jobs.get("processor") == "1" and jobs.get("worker") == "1":
                    break
                await asyncio.sleep(0.5)
            assert jobs.get("processor") == "1", jobs
            assert jobs.get("worker") == "1", jobs
    finally:
        await cluster.stop(pod)
    tier.passed("prometheus (Deployment)")
