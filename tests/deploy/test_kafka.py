"""The prod Kafka quorum from ca4-platform's own rendered config, its topics Job, the tunnel."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.deploy import tier
from tests.deploy.conftest import Platform, python_client
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
