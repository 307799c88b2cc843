"""ca4-platform's Prometheus Deployment on the Debian binary: rendered args, rules, relabels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy import tier
from tests.deploy.cluster import LocalCluster, Manifest, Pod, find
from tests.deploy.conftest import App, Platform
from tests.deploy.discovery import with_file_discovery, write_targets

pytestmark = [pytest.mark.deploy, pytest.mark.slow]


@pytest.fixture(scope="session")
async def prometheus(platform: Platform) -> AsyncIterator[Pod]:
    """The rendered Prometheus, its pod discovery swapped for a file of the tier's running pods."""
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
        yield pod
    finally:
        await cluster.stop(pod)


async def query(pod: Pod, promql: str) -> list[dict[str, Any]]:
    """The instant vector a query returns."""
    async with httpx.AsyncClient(timeout=5) as http:
        answer = await http.get(
            f"http://{pod.address}:{pod.port('http')}/api/v1/query", params={"query": promql}
        )
    result: list[dict[str, Any]] = answer.json()["data"]["result"]
    return result


async def up_by_job(pod: Pod, job: str, expected: int) -> list[dict[str, Any]]:
    """``up{job=...}`` once it has ``expected`` series all 1 (or whatever it has after 60 s: the
    default scrape interval is 15 s, the file discovery refreshes every 5 s)."""
    series: list[dict[str, Any]] = []
    for _ in range(120):
        series = await query(pod, f'up{{job="{job}"}}')
        if len(series) == expected and all(s["value"][1] == "1" for s in series):
            break
        await asyncio.sleep(0.5)
    return series


async def test_prometheus_scrapes_every_broker_as_job_kafka(
    platform: Platform, prometheus: Pod
) -> None:
    """The relabelling of the rendered config keeps each broker once (its listener ports relabel
    onto the annotated metrics port) as job ``kafka``, up; the alerts' Kafka series arrive."""
    brokers = platform.brokers
    series = await up_by_job(prometheus, "kafka", len(brokers))
    assert sorted(s["metric"]["instance"] for s in series) == sorted(
        f"{b.address}:{(b.annotations or {})['prometheus.io/port']}" for b in brokers
    ), series
    assert [s["value"][1] for s in series] == ["1"] * len(brokers), series
    assert {(s["metric"]["namespace"], s["metric"]["pod"]) for s in series} == {
        ("platform", b.name) for b in brokers
    }
    under_replicated = await query(
        prometheus, 'kafka_server_replicamanager_underreplicatedpartitions{job="kafka"}'
    )
    assert sorted(s["metric"]["pod"] for s in under_replicated) == sorted(b.name for b in brokers)
    assert {s["value"][1] for s in under_replicated} == {"0"}
    controllers = await query(
        prometheus, "sum(kafka_controller_kafkacontroller_activecontrollercount)"
    )
    assert [s["value"][1] for s in controllers] == ["1"], controllers


async def test_prometheus_loads_the_rules_and_scrapes_the_app_pods(
    platform: Platform, prometheus: Pod, app: App
) -> None:
    """Every rendered rule group loads; the relabelled jobs ``processor``, ``worker``,
    ``reader`` and ``kafka`` (one target per broker) are up."""
    cluster = platform.cluster
    write_targets(cluster, cluster.state / "prometheus-targets.json")  # the app pods too now
    rules = find(platform.docs, "ConfigMap", "prometheus-rules")["data"]
    expected_groups = sorted(
        group["name"] for text in rules.values() for group in yaml.safe_load(text)["groups"]
    )
    base = f"http://{prometheus.address}:{prometheus.port('http')}"
    async with httpx.AsyncClient(timeout=5) as http:
        loaded = (await http.get(f"{base}/api/v1/rules")).json()["data"]["groups"]
    assert sorted(g["name"] for g in loaded) == expected_groups
    jobs = (("processor", 1), ("worker", 1), ("reader", 1), ("kafka", len(platform.brokers)))
    for job, count in jobs:
        series = await up_by_job(prometheus, job, count)
        assert [s["value"][1] for s in series] == ["1"] * count, (job, series)
    tier.passed("prometheus (Deployment)")


def _provided(cluster: LocalCluster, secret: Manifest) -> bool:
    try:
        cluster.secret(secret["metadata"]["namespace"], secret["metadata"]["name"])
    except KeyError:
        return False
    return True


async def test_helm_test_finds_prometheus_and_alertmanager_answering(
    platform: Platform, prometheus: Pod
) -> None:
    """``helm test ca4-platform``'s monitoring hook: its own script (a query, the CA4 rules
    loaded, Alertmanager ready) through the Services' names, with both running."""
    cluster = platform.cluster
    receivers = tier.alertmanager_receivers(platform.docs, "http://127.0.0.1:9")
    cluster.add(secret for secret in receivers if not _provided(cluster, secret))
    (alertmanager,) = cluster.plan(find(platform.docs, "Deployment", "alertmanager"))
    try:
        await cluster.start(alertmanager)
        await cluster.wait_ready(alertmanager, within_s=60)
        hook = find(platform.docs, "Pod", "ca4-platform-test-monitoring")
        pod = await cluster.run_pod(hook, within_s=90)
    finally:
        await cluster.stop(alertmanager)
    # Alertmanager's "OK" has no line break: the hook's last line reads "OKmonitoring answers".
    assert pod.log.read_text().rstrip().endswith("monitoring answers")
    tier.passed("helm test ca4-platform (monitoring hook pod)")
