"""The prod Kafka quorum from ca4-platform's own rendered config, its topics Job, the tunnel, and
the metrics javaagent each broker runs."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest
import yaml
from ca4_provision.devstack.versions import JMX_EXPORTER_AGENT
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy import tier
from tests.deploy.cluster import Pod, PodFailedError, find
from tests.deploy.conftest import MavenMirror, Platform, python_client
from tests.infra.conftest import chart_dir

pytestmark = [pytest.mark.deploy, pytest.mark.slow]


def kafka_values(value_set: str) -> dict[str, Any]:
    """The chart's Kafka values with a value set's overrides on top (what the tier rendered)."""
    defaults = yaml.safe_load((chart_dir("ca4-platform") / "values.yaml").read_text())["kafka"]
    path = chart_dir("ca4-platform") / f"values-{value_set}.yaml"
    return merged(defaults, yaml.safe_load(path.read_text())["kafka"])


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's values merge: maps merge key by key, everything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        both_maps = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = merged(base[key], value) if both_maps else value
    return out


def result_line(output: str) -> dict[str, Any]:
    """The JSON a client from clients.py printed."""
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, f"the client printed no result:\n{output[-3000:]}"
    parsed: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return parsed


async def test_three_brokers_form_a_kraft_quorum(platform: Platform) -> None:
    """kafka-metadata-quorum.sh (the image's tool) sees three voters and one leader."""
    cluster = platform.cluster
    image = await cluster.images.resolve(platform.brokers[0].container["image"])
    pod = cluster.debug_pod("platform", "quorum-check")
    output = await cluster.exec_in(
        pod,
        ["kafka-metadata-quorum.sh", "--bootstrap-server", "kafka:9092", "describe", "--status"],
        image=image,
    )
    status = dict(line.split(":", 1) for line in output.splitlines() if ":" in line)
    voters = json.loads(status["CurrentVoters"])
    assert sorted(v["id"] for v in voters) == [0, 1, 2], output
    assert int(status["LeaderId"]) in {0, 1, 2}, output
    tier.passed("kafka (StatefulSet, prod: 3)")


async def test_voters_reach_the_leader_by_its_pod_name(platform: Platform) -> None:
    """The controller endpoint a leader advertises to the other voters is its pod's DNS name.

    Without one in advertised.listeners Kafka advertises the host's canonical name: "localhost"
    wherever the pod's address resolves back to that, and a follower then sends its votes and
    fetches to itself (the quorum that, now and then, never formed here).
    """
    pod_names = {f"{b.name}.kafka-headless.platform.svc.cluster.local" for b in platform.brokers}
    learned: dict[str, set[str]] = {}
    for broker in platform.brokers:
        log = broker.log.read_text(errors="replace")
        hosts = set(
            re.findall(
                r"leaderEndpoints=Endpoints\(endpoints=\{ListenerName\(CONTROLLER\)=([^/:}]+)", log
            )
        )
        learned[broker.name] = hosts
    assert any(learned.values()), "no broker logged the leader's endpoints"
    assert all(hosts <= pod_names for hosts in learned.values()), learned


async def described_topics(platform: Platform, values: dict[str, Any]) -> dict[str, Any]:
    """What the admin client, from a pod in the app namespace, says about the chart's topics."""
    pod = platform.cluster.debug_pod("app", "topics-check")
    bootstrap = "kafka.platform.svc.cluster.local:9092"
    names = [t["name"] for t in values["topics"]]
    return result_line(
        await platform.cluster.exec_in(pod, python_client("topics", bootstrap, *names))
    )


def configured_topics(values: dict[str, Any]) -> dict[str, Any]:
    """The topics as the values configure them, in the admin client's terms."""
    return {
        t["name"]: {
            "error_code": 0,
            "partitions": t["partitions"],
            "replicas": [t["replicationFactor"] or values["defaultReplicationFactor"]],
            "isr": [values["replicas"]],
            "min_insync_replicas": values["minInsyncReplicas"],
        }
        for t in values["topics"]
    }


async def test_topics_job_creates_the_configured_topics(platform: Platform) -> None:
    """Partitions, replication and min.insync.replicas as values-prod.yaml configures them."""
    values = kafka_values("prod")
    described = await described_topics(platform, values)
    assert described["brokers"] == [0, 1, 2]
    assert described["topics"] == configured_topics(values)
    assert described["topics"]["gpu-metadata"]["partitions"] == 12  # prod's, not the default 6
    assert described["topics"]["gpu-metadata"]["min_insync_replicas"] == 2
    tier.passed("kafka-topics (Job, prod)")


async def test_helm_test_lists_the_configured_topics(platform: Platform) -> None:
    """``helm test ca4-platform``'s Kafka hook: its own script, on the image's tools, against the
    prod quorum through the ``kafka`` Service."""
    hook = find(platform.docs, "Pod", "ca4-platform-test-kafka-topics")
    pod = await platform.cluster.run_pod(hook, within_s=120)
    listed = set(pod.log.read_text().splitlines())
    assert {topic["name"] for topic in kafka_values("prod")["topics"]} <= listed
    tier.passed("helm test ca4-platform (kafka hook pod)")


async def test_dev_values_run_one_broker_with_the_default_topics(dev_platform: Platform) -> None:
    """Under values-dev.yaml: a single-voter quorum, the chart's default topics, replication 1."""
    values = kafka_values("dev")
    described = await described_topics(dev_platform, values)
    assert described["brokers"] == [0]
    assert described["topics"] == configured_topics(values)
    assert described["topics"]["gpu-metadata"]["partitions"] == 6
    tier.passed("kafka + kafka-topics (dev: 1 broker)")


async def test_tunnel_listener_through_a_local_forward(platform: Platform) -> None:
    """Through stand-ins for ``ssh -L``, metadata advertises localhost; produce and consume."""
    values = kafka_values("prod")
    tunnel = values["tunnel"]
    targets = [f"{b.address}:{b.port('tunnel')}" for b in platform.brokers]
    laptop = platform.cluster.debug_pod("laptop", "developer")
    result = result_line(
        await platform.cluster.exec_in(
            laptop, python_client("tunnel", str(tunnel["advertisedBasePort"]), *targets)
        )
    )
    base = tunnel["advertisedBasePort"]
    assert result["advertised"] == [f"localhost:{base + i}" for i in range(values["replicas"])]
    assert result["consumed_back"] is True
    tier.passed("kafka tunnel listener")


async def scrape(pod: Pod) -> tuple[str, float]:
    """The pod's metrics where its prometheus.io annotations point, and the seconds it took."""
    annotations = pod.annotations or {}
    assert annotations.get("prometheus.io/scrape") == "true", f"{pod.name} is not annotated"
    port, path = annotations["prometheus.io/port"], annotations.get("prometheus.io/path", "/")
    began = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"http://{pod.address}:{port}{path}")
    response.raise_for_status()
    return response.text, time.monotonic() - began


def values_of(text: str, name: str) -> list[float]:
    """Every sample of one metric in a scrape (Prometheus text format)."""
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


async def test_brokers_export_their_jmx_metrics_on_the_annotated_port(
    platform: Platform, dev_platform: Platform, maven_mirror: MavenMirror
) -> None:
    """Every broker (prod's three, dev's one) runs the javaagent its init container fetched and
    checked: a real scrape of the annotated port holds the series the alerts and the runbook read,
    with the values a healthy quorum has (nothing under-replicated or offline, one controller)."""
    for value_set, running in (("prod", platform), ("dev", dev_platform)):
        scrapes = {}
        for broker in running.brokers:
            log = broker.log.read_text(errors="replace")
            assert f"sha256 {JMX_EXPORTER_AGENT.sha256} as pinned" in log, log[-2000:]
            text, seconds = await scrape(broker)
            scrapes[broker.name] = text
            samples = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
            tier.TIMINGS[f"{value_set}: {broker.name} /metrics, {samples} samples"] = seconds
        for name, text in scrapes.items():
            under_replicated = values_of(
                text, "kafka_server_replicamanager_underreplicatedpartitions"
            )
            assert under_replicated == [0], name
            assert values_of(text, "kafka_server_replicamanager_partitioncount")[0] > 0, name
            assert values_of(text, "kafka_server_brokertopicmetrics_messagesin_total"), name
            produce = [
                line
                for line in text.splitlines()
                if line.startswith("kafka_network_requestmetrics_totaltimems{")
                and 'request="Produce"' in line
            ]
            assert produce, f"{name}: the runbook's Produce latency series is missing"
        active = [
            value
            for text in scrapes.values()
            for value in values_of(text, "kafka_controller_kafkacontroller_activecontrollercount")
        ]
        assert sum(active) == 1, active  # one active controller in the quorum
        offline = [
            value
            for text in scrapes.values()
            for value in values_of(text, "kafka_controller_kafkacontroller_offlinepartitionscount")
        ]
        assert offline, "no broker exports OfflinePartitionsCount"
        assert max(offline) == 0, offline
    fetched = [path for path in maven_mirror.fetched if path.endswith(JMX_EXPORTER_AGENT.path)]
    assert len(fetched) >= len(platform.brokers) + len(dev_platform.brokers), maven_mirror.fetched
    tier.passed("kafka metrics (JMX exporter javaagent)")
    tier.passed("Maven Central (kafka.metrics.agent.repositoryUrl)")


async def test_a_tool_run_beside_the_broker_starts_no_second_agent(platform: Platform) -> None:
    """``kubectl exec kafka-0 -- kafka-topics.sh`` (ca4 verify runs the console consumer so) works:
    the javaagent joins the broker's JVM only. Had the chart put it in the container's KAFKA_OPTS,
    every tool would start a second agent on the broker's metrics port and exit."""
    broker = platform.brokers[0]
    cluster = platform.cluster
    listing = ["kafka-topics.sh", "--bootstrap-server", "localhost:9092", "--list"]
    output = await cluster.exec_beside(broker, listing)
    assert "gpu-metadata" in output.splitlines(), output[-2000:]
    agent = next(e["value"] for e in broker.container["env"] if e["name"] == "BROKER_KAFKA_OPTS")
    with pytest.raises(PodFailedError, match="Address already in use"):
        await cluster.exec_beside(broker, listing, {"KAFKA_OPTS": agent})
