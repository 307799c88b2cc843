"""Helm: both charts lint and render for default, dev and prod values; every manifest validates
against the Kubernetes schemas of the targeted K3s minor; the security properties hold."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from ca4_provision.devstack.versions import IMAGE_TAGS, JMX_EXPORTER_AGENT, MAVEN_CENTRAL

from tests.infra.conftest import (
    CHARTS,
    KUBE_VERSION,
    REPO,
    VALUE_SETS,
    Manifest,
    chart_dir,
    make_default,
    pod_spec,
    run,
    template,
    values_args,
    workloads,
)
from tests.infra.test_links import Peer, allowed, by_name, compose

pytestmark = pytest.mark.stand_in(
    "helm install into K3s: no Kubernetes here; ran instead: the real helm template and lint of "
    "both charts, kubernetes schema validation (the deploy tier runs some pods as processes)"
)

SCHEMA_VERSION = ".".join(KUBE_VERSION.split(".")[:2]) + ".0"


CASES = [(c, v) for c in CHARTS for v in VALUE_SETS]


@pytest.mark.parametrize("helm_fixture", ["helm", "helm4"])
@pytest.mark.parametrize(("chart", "value_set"), CASES)
def test_helm_lint(
    request: pytest.FixtureRequest, helm_fixture: str, chart: str, value_set: str
) -> None:
    result = run(
        [
            request.getfixturevalue(helm_fixture),
            "lint",
            str(chart_dir(chart)),
            "--strict",
            "--namespace",
            CHARTS[chart],
            "--kube-version",
            KUBE_VERSION,
            *values_args(chart, value_set),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("chart", "value_set"), CASES)
def test_manifests_validate_against_kubernetes_schema(
    rendered: Any, chart: str, value_set: str
) -> None:
    docs = rendered[(chart, value_set)]
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(
                f"{doc['kind']}/{doc['metadata']['name']}: {error.message} at {list(error.path)}"
            )


@pytest.mark.parametrize(("chart", "value_set"), CASES)
def test_containers_have_probes_resources_and_hardened_contexts(
    rendered: Any, chart: str, value_set: str
) -> None:
    for doc in workloads(rendered[(chart, value_set)]):
        spec = pod_spec(doc)
        name = doc["metadata"]["name"]
        pod_ctx = spec.get("securityContext", {})
        assert pod_ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            ctx = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["capabilities"]["drop"] == ["ALL"], where
            assert not ctx.get("privileged", False), where
            # No exception: Alloy tails pod logs through the API server, not from the host.
            assert ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot"), (
                f"{where} may run as root"
            )
            assert pod_ctx.get("runAsUser", 1) != 0, where
            limits = container["resources"]["limits"]
            requests = container["resources"]["requests"]
            assert {"cpu", "memory"} <= set(limits), where
            assert {"cpu", "memory"} <= set(requests), where
            assert ":" in container["image"], where
            assert not container["image"].endswith(":latest"), where
            if doc["kind"] != "Job" and container in spec["containers"]:
                assert "readinessProbe" in container, where
                assert "livenessProbe" in container, where


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_app_wiring(rendered: Any, value_set: str) -> None:
    docs = rendered[("ca4-app", value_set)]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    deployments = {
        d["metadata"]["labels"]["app.kubernetes.io/name"]: d for d in by_kind["Deployment"]
    }
    readers = {"reader"} if value_set == "prod" else set()  # the read API apart in prod
    assert set(deployments) == {"processor", "worker", *readers}
    ports = {"processor": 8000, "worker": 8001, "reader": 8001}
    for name, deployment in deployments.items():
        port = ports[name]
        spec = pod_spec(deployment)
        container = spec["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["ports"][0]["containerPort"] == port
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        assert spec["automountServiceAccountToken"] is False
    secret_env = {
        e["name"]
        for d in deployments.values()
        for e in pod_spec(d)["containers"][0]["env"]
        if "valueFrom" in e
    }
    assert secret_env == {"CA4_MONGO_URL"}
    for deployment in deployments.values():  # one keys file, mounted by all, reloaded live
        spec = pod_spec(deployment)
        container = spec["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["CA4_API_KEYS_FILE"] == "/etc/ca4/keys/api-keys"
        mount = next(m for m in container["volumeMounts"] if m["name"] == "api-keys")
        assert (mount["mountPath"], mount["readOnly"]) == ("/etc/ca4/keys", True)
        volume = next(v for v in spec["volumes"] if v["name"] == "api-keys")
        assert "subPath" not in mount, "a subPath mount is never refreshed by the kubelet"
        assert volume["secret"]["items"] == [{"key": "api-key-hashes", "path": "api-keys"}]
    config = by_kind["ConfigMap"][0]["data"]
    assert config["CA4_KAFKA_TOPIC"] == "gpu-metadata"
    assert config["CA4_KAFKA_DLQ_TOPIC"] == "gpu-metadata.dlq"
    (ingress,) = by_kind["Ingress"]
    backends = {
        path["backend"]["service"]["name"].rsplit("-", 1)[-1]
        for path in ingress["spec"]["rules"][0]["http"]["paths"]
    }
    read_backend = "reader" if readers else "worker"
    assert backends == {"processor", read_backend}, "one edge URL: ingest and read routes"
    paths = {path["path"] for path in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert "/sdk" in paths, "notebooks install the SDK from the edge"
    pdbs = by_kind.get("PodDisruptionBudget", [])
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    if value_set == "dev":  # one replica each: no autoscaling, no disruption budget
        assert not pdbs
        assert not hpas
    else:
        assert len(pdbs) == 2 + len(readers)
        assert hpas[0]["spec"]["scaleTargetRef"]["name"].endswith("-processor")


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_app_network_policies(rendered: Any, value_set: str) -> None:
    policies = {
        d["metadata"]["name"]: d
        for d in rendered[("ca4-app", value_set)]
        if d["kind"] == "NetworkPolicy"
    }
    deny = next(p for n, p in policies.items() if n.endswith("default-deny"))
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"]
    assert "egress" not in deny["spec"]
    processor = next(p for n, p in policies.items() if n.endswith("-processor"))
    sources = processor["spec"]["ingress"][0]["from"]
    namespaces = {
        s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for s in sources
        if "namespaceSelector" in s
    }
    assert namespaces == {"kube-system", "monitoring"}, "processor: only Traefik and Prometheus"
    same_namespace = [s["podSelector"] for s in sources if "namespaceSelector" not in s]
    assert same_namespace == [{"matchLabels": {"app.kubernetes.io/name": "ca4-app-test"}}], (
        "processor: in its own namespace, only the helm test pod"
    )
    egress_ports = {
        p["port"] for rule in processor["spec"]["egress"] for p in rule.get("ports", [])
    }
    assert 27017 in egress_ports, "processor: session ownership claims live in the database"


def test_the_reader_serves_reads_apart_from_the_consumers(rendered: Any) -> None:
    """Prod's reads go to pods of their own: the worker's image with its consumers off, which
    reach the database and nothing else (no Kafka, no S3), and which `helm test` asks too."""
    docs = rendered[("ca4-app", "prod")]
    reader = by_name(docs, "Deployment", "ca4-app-reader")
    worker = by_name(docs, "Deployment", "ca4-app-worker")
    (container,) = pod_spec(reader)["containers"]
    assert container["image"] == pod_spec(worker)["containers"][0]["image"]
    assert env_of(container)["CA4_CONSUMERS_ENABLED"] == "false"
    assert reader["spec"]["replicas"] == 2
    policy = by_name(docs, "NetworkPolicy", "ca4-app-reader")
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 27017}, "the reader reaches DNS and the database only"
    (test_pod,) = [d for d in docs if d["kind"] == "Pod"]
    assert "http://ca4-app-reader:80/readyz" in test_pod["spec"]["containers"][0]["command"][-1]
    test_policy = by_name(docs, "NetworkPolicy", "ca4-app-test")
    reached = [s["podSelector"]["matchLabels"] for s in test_policy["spec"]["egress"][1]["to"]]
    assert {"app.kubernetes.io/name": "reader", "app.kubernetes.io/instance": "ca4-app"} in reached
    for value_set in ("default", "dev"):  # off: the worker serves reads, as before
        names = {d["metadata"]["name"] for d in rendered[("ca4-app", value_set)]}
        assert not {n for n in names if n.endswith("-reader")}, value_set


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_platform_kafka_kraft_and_tunnel_listener(rendered: Any, value_set: str) -> None:
    docs = rendered[("ca4-platform", value_set)]
    sts = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "kafka")
    replicas = sts["spec"]["replicas"]
    assert sts["spec"]["serviceName"] == "kafka-headless"
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    headless = next(
        d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "kafka-headless"
    )
    assert headless["spec"]["clusterIP"] == "None"
    props = next(d for d in docs if d["metadata"]["name"] == "kafka-config")["data"][
        "server.properties.in"
    ]
    settings = dict(line.split("=", 1) for line in props.splitlines() if "=" in line)
    assert settings["process.roles"] == "broker,controller"
    assert len(settings["controller.quorum.voters"].split(",")) == replicas
    assert "TUNNEL://localhost:@TUNNEL_PORT@" in settings["advertised.listeners"]
    assert "INTERNAL://@POD_HOST@:9092" in settings["advertised.listeners"]
    # voters learn the leader's controller endpoint from it (test_kafka.py, deploy tier)
    assert "CONTROLLER://@POD_HOST@:9093" in settings["advertised.listeners"]
    tunnels = sorted(
        (
            d
            for d in docs
            if d["kind"] == "Service" and d["metadata"]["name"].startswith("kafka-tunnel-")
        ),
        key=lambda d: d["metadata"]["name"],
    )
    assert [t["spec"]["ports"][0]["nodePort"] for t in tunnels] == [
        30094 + i for i in range(replicas)
    ]
    for i, tunnel in enumerate(tunnels):
        assert tunnel["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == f"kafka-{i}"
    job = next(d for d in docs if d["kind"] == "Job")
    script = pod_spec(job)["containers"][0]["command"][-1]
    assert "--if-not-exists" in script
    assert "gpu-metadata.dlq" in script


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_platform_kafka_capacity_fits_each_broker_volume(rendered: Any, value_set: str) -> None:
    """Retention by bytes as well as time, compressed topics, and a data volume per broker that
    holds every partition's retention plus its active segment (each broker may host them all)."""
    docs = rendered[("ca4-platform", value_set)]
    props = next(d for d in docs if d["metadata"]["name"] == "kafka-config")["data"][
        "server.properties.in"
    ]
    settings = dict(line.strip().split("=", 1) for line in props.splitlines() if "=" in line)
    assert int(settings["log.retention.hours"]) >= 1
    assert settings["compression.type"] == "gzip"
    per_partition = int(settings["log.retention.bytes"]) + int(settings["log.segment.bytes"])
    job = next(d for d in docs if d["kind"] == "Job")
    script = pod_spec(job)["containers"][0]["command"][-1]
    partitions = sum(int(n) for n in re.findall(r"--partitions[= ](\d+)", script))
    assert partitions > 0, script
    sts = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "kafka")
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert claim.endswith("Gi")
    assert partitions * per_partition <= int(claim[:-2]) * 2**30


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_platform_kafka_rolls_one_broker_after_another_is_back(
    rendered: Any, value_set: str
) -> None:
    """Readiness sees the listener open, not the broker back in sync: a rolling update that
    restarted the next broker at once could leave a partition under min.insync.replicas (2 of 3
    in prod), and every acks=all publish failed (the processor's 503) until it caught up."""
    sts = kafka_statefulset(rendered[("ca4-platform", value_set)])
    assert sts["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert sts["spec"]["minReadySeconds"] == 60


JVM_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_platform_kafka_heap_holds_the_log_cleaner_buffer(rendered: Any, value_set: str) -> None:
    """The log cleaner allocates its dedupe buffer whole in the heap at start: a dev broker with
    a 256m heap died of OutOfMemoryError on Kafka's 128 MiB default. Each value set's heap keeps
    at least twice the buffer and 256 MiB besides it (384m with 128 MiB runs in the deploy tier),
    and the container's limit about 300Mi above the heap for what the JVM holds outside it."""
    docs = rendered[("ca4-platform", value_set)]
    props = next(d for d in docs if d["metadata"]["name"] == "kafka-config")["data"][
        "server.properties.in"
    ]
    settings = dict(line.strip().split("=", 1) for line in props.splitlines() if "=" in line)
    dedupe = int(settings["log.cleaner.dedupe.buffer.size"])
    sts = by_name(docs, "StatefulSet", "kafka")
    (broker,) = [c for c in pod_spec(sts)["containers"] if c["name"] == "kafka"]
    heap_opts = next(e["value"] for e in broker["env"] if e["name"] == "KAFKA_HEAP_OPTS")
    match = re.search(r"-Xmx(\d+)([kmg]?)\b", heap_opts, re.I)
    assert match, heap_opts
    xmx = int(match.group(1)) * JVM_UNITS[match.group(2).lower()]
    assert xmx >= 2 * dedupe, (heap_opts, dedupe)
    assert xmx - dedupe >= 256 * 2**20, (heap_opts, dedupe)
    limit = broker["resources"]["limits"]["memory"]
    assert limit.endswith(("Mi", "Gi")), limit
    limit_bytes = int(limit[:-2]) * (2**20 if limit.endswith("Mi") else 2**30)
    assert limit_bytes >= xmx + 300 * 2**20, (limit, heap_opts)


def test_dev_kafka_uses_a_small_log_cleaner_buffer() -> None:
    """Dev's one broker compacts little: 32 MiB, not Kafka's 128 MiB (the chart's default)."""
    dev = yaml.safe_load((chart_dir("ca4-platform") / "values-dev.yaml").read_text())
    default = yaml.safe_load((chart_dir("ca4-platform") / "values.yaml").read_text())
    assert dev["kafka"]["logCleanerDedupeBufferBytes"] == 32 * 2**20
    assert default["kafka"]["logCleanerDedupeBufferBytes"] == 128 * 2**20


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_platform_namespaces_rbac_and_policies(rendered: Any, value_set: str) -> None:
    docs = rendered[("ca4-platform", value_set)]
    namespaces = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Namespace"}
    assert set(namespaces) == {"monitoring", "app"}
    assert (
        namespaces["app"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        == "restricted"
    )
    roles = [d for d in docs if d["kind"] == "ClusterRole"]
    for role in roles:
        for rule in role["rules"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, "platform RBAC is read-only"
    deny = [
        d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "default-deny"
    ]
    assert {d["metadata"]["namespace"] for d in deny} == {"platform", "monitoring"}
    prometheus = next(d for d in docs if d["metadata"]["name"] == "prometheus-config")
    assert "kubernetes_sd_configs" in prometheus["data"]["prometheus.yml"]
    rules = next(d for d in docs if d["metadata"]["name"] == "prometheus-rules")
    assert rules["data"], "alert rules from observability/ are packaged"


# --- Kafka broker metrics: the JMX exporter javaagent, scraped as job "kafka" -------------------


def kafka_statefulset(docs: list[Manifest]) -> Manifest:
    """ca4-platform's Kafka StatefulSet."""
    return by_name(docs, "StatefulSet", "kafka")


def env_of(container: Manifest) -> dict[str, str]:
    """A container's literal env values."""
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def mounted_volume(spec: Manifest, container: Manifest, path: str) -> tuple[Manifest, Manifest]:
    """The volumeMount of ``container`` that holds ``path``, and the pod volume behind it."""
    mount = next(
        m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")
    )
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    return mount, volume


def _relabel_label(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def discovered_targets(workload: Manifest) -> list[dict[str, str]]:
    """What Kubernetes pod discovery (role pod) yields for one pod of a workload: one target per
    container port, with the ``__meta_kubernetes_pod_*`` labels the relabel rules read."""
    template_meta = workload["spec"]["template"]["metadata"]
    base = {
        "__meta_kubernetes_namespace": workload["metadata"]["namespace"],
        "__meta_kubernetes_pod_name": f"{workload['metadata']['name']}-0",
        "__meta_kubernetes_pod_ip": "10.42.0.7",
    }
    for key, value in template_meta.get("labels", {}).items():
        base[f"__meta_kubernetes_pod_label_{_relabel_label(key)}"] = value
    for key, value in template_meta.get("annotations", {}).items():
        base[f"__meta_kubernetes_pod_annotation_{_relabel_label(key)}"] = str(value)
    return [
        {**base, "__address__": f"10.42.0.7:{port['containerPort']}"}
        for container in pod_spec(workload)["containers"]
        for port in container.get("ports", [])
    ]


def relabel(rules: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, str] | None:
    """Prometheus' keep and replace relabelling (anchored regexes); None when a rule drops it."""
    out = dict(labels)
    for rule in rules:
        value = rule.get("separator", ";").join(out.get(s, "") for s in rule["source_labels"])
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep":
            if match is None:
                return None
        elif action == "replace":
            if match is not None:
                replacement = re.sub(r"\$(\d+)", r"\\g<\1>", rule.get("replacement", "$1"))
                out[rule["target_label"]] = match.expand(replacement)
        else:
            raise NotImplementedError(f"relabel action {action}")
    return out


def scrape_targets(prometheus_yml: str, docs: list[Manifest]) -> set[tuple[str, str, str]]:
    """(job, address, metrics path) of every target the rendered Prometheus config keeps among the
    rendered pods (pod discovery) plus its static jobs; duplicates collapse, as in Prometheus."""
    config = yaml.safe_load(prometheus_yml)
    targets: set[tuple[str, str, str]] = set()
    for job in config["scrape_configs"]:
        if "static_configs" in job:
            targets |= {
                (job["job_name"], address, job.get("metrics_path", "/metrics"))
                for static in job["static_configs"]
                for address in static["targets"]
            }
            continue
        assert job["kubernetes_sd_configs"] == [{"role": "pod"}], job["job_name"]
        for workload in (w for w in workloads(docs) if w["kind"] != "Job"):
            for labels in discovered_targets(workload):
                kept = relabel(job.get("relabel_configs", []), labels)
                if kept is not None:
                    targets.add(
                        (
                            kept.get("job", job["job_name"]),
                            kept["__address__"],
                            kept.get("__metrics_path__", "/metrics"),
                        )
                    )
    return targets


def prometheus_config(docs: list[Manifest]) -> str:
    """The rendered prometheus.yml."""
    text: str = by_name(docs, "ConfigMap", "prometheus-config")["data"]["prometheus.yml"]
    return text


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_job_the_alert_rules_select_is_scraped(rendered: Any, value_set: str) -> None:
    """Each job an alert rule names (``up{job=~"processor|worker|kafka"}``...) is a job the
    rendered Prometheus config gives some rendered pod of either chart: a job nothing scrapes
    never fires its alert, nor the inhibitions keyed on it."""
    docs = rendered[("ca4-platform", value_set)] + rendered[("ca4-app", value_set)]
    rules = by_name(docs, "ConfigMap", "prometheus-rules")["data"]
    named = {
        job
        for text in rules.values()
        for alternatives in re.findall(r'\bjob=~?"([^"]+)"', text)
        for job in alternatives.split("|")
    }
    assert "kafka" in named, "the alert rules no longer name job kafka: revisit this test"
    if not any(
        d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-reader") for d in docs
    ):
        named.discard("reader")  # reader.enabled is off in these values: nothing to scrape
    scraped = {job for job, _, _ in scrape_targets(prometheus_config(docs), docs)}
    assert named <= scraped, f"jobs the alerts name that nothing scrapes: {named - scraped}"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_platform_kafka_runs_the_jmx_exporter_agent_scraped_as_job_kafka(
    rendered: Any, value_set: str
) -> None:
    """Each broker's JVM runs the pinned javaagent with the observability rules, on the port its
    prometheus.io annotations name, and the chart's Prometheus scrapes exactly that, as kafka."""
    docs = rendered[("ca4-platform", value_set)]
    sts = kafka_statefulset(docs)
    spec = pod_spec(sts)
    (broker,) = spec["containers"]
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    port = int(annotations["prometheus.io/port"])
    assert {"name": "metrics", "containerPort": port} in broker["ports"]
    assert port == 9404, "docker-compose.yml and observability/prometheus/prometheus.yml use 9404"
    assert sts["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "kafka"
    kafka_targets = {
        t for t in scrape_targets(prometheus_config(docs), docs) if t[0] == "kafka"
    }  # one per broker pod: every declared port relabels onto the annotated one
    assert kafka_targets == {("kafka", f"10.42.0.7:{port}", "/metrics")}

    # The agent: in the broker's JVM only (start.sh), never in KAFKA_OPTS of the container, where
    # every tool run by `kubectl exec` (ca4 verify's console consumer) would start a second one.
    env = env_of(broker)
    assert "KAFKA_OPTS" not in env
    agent = re.fullmatch(
        r"-javaagent:(?P<jar>[^=]+)=(?P<port>\d+):(?P<config>\S+)", env["BROKER_KAFKA_OPTS"]
    )
    assert agent, env["BROKER_KAFKA_OPTS"]
    assert int(agent["port"]) == port
    start = by_name(docs, "ConfigMap", "kafka-config")["data"]["start.sh"]
    appended = start.index(
        'export KAFKA_OPTS="${KAFKA_OPTS:+${KAFKA_OPTS} }${BROKER_KAFKA_OPTS:-}"'
    )
    assert start.index("kafka-storage.sh format") < appended < start.index("kafka-server-start.sh")

    # The rules: observability/kafka/jmx-exporter.yml through the chart's copy, read-only.
    mount, volume = mounted_volume(spec, broker, agent["config"])
    assert mount["readOnly"] is True
    rules = by_name(docs, "ConfigMap", volume["configMap"]["name"])["data"]
    assert (
        rules[Path(agent["config"]).name]
        == (REPO / "observability/kafka/jmx-exporter.yml").read_text()
    )

    # The jar: downloaded by the init container into an emptyDir the broker mounts read-only.
    (fetcher,) = spec["initContainers"]
    fetcher_env = env_of(fetcher)
    assert fetcher_env["AGENT_JAR"] == agent["jar"]
    fetch_mount, jar_volume = mounted_volume(spec, fetcher, agent["jar"])
    broker_mount, same_volume = mounted_volume(spec, broker, agent["jar"])
    assert jar_volume is same_volume
    assert "emptyDir" in jar_volume
    assert fetch_mount["mountPath"] == broker_mount["mountPath"]
    assert broker_mount["readOnly"] is True
    assert not fetch_mount.get("readOnly")
    # The jar of docker-compose.yml's broker, with the dev stack's pinned sha256.
    compose_fetch = " ".join(compose()["services"]["kafka-jmx-agent"]["command"])
    assert fetcher_env["AGENT_URL"] == JMX_EXPORTER_AGENT.url
    assert fetcher_env["AGENT_URL"] in compose_fetch
    assert fetcher_env["AGENT_SHA256"] == JMX_EXPORTER_AGENT.sha256
    assert fetcher["image"].rsplit(":", 1)[1] == IMAGE_TAGS["curl"]
    assert fetcher["command"][:2] == ["/bin/sh", "-ec"]

    # Prometheus (only) reaches the exporter; the brokers may reach the repository for the jar.
    kafka = Peer("platform", sts["spec"]["template"]["metadata"]["labels"])
    prometheus = Peer("monitoring", {"app.kubernetes.io/name": "prometheus"})
    assert allowed(docs, kafka, "Ingress", prometheus, port)
    for stranger in (
        Peer("monitoring", {"app.kubernetes.io/name": "grafana"}),
        Peer("app", {"app.kubernetes.io/name": "processor"}),
        Peer("platform", {"app.kubernetes.io/name": "kafka-topics"}),
    ):
        assert not allowed(docs, kafka, "Ingress", stranger, port), stranger
    maven_central = Peer(address="151.101.0.209")  # repo1.maven.org (Fastly)
    assert fetcher_env["AGENT_URL"].startswith(f"{MAVEN_CENTRAL}/")
    assert allowed(docs, kafka, "Egress", maven_central, 443)
    assert not allowed(docs, kafka, "Egress", maven_central, 80)


def test_platform_kafka_agent_from_a_mirror_opens_only_the_mirror(helm: str) -> None:
    """An air-gapped cluster's mirror: the jar's URL and the brokers' egress follow it."""
    code, stdout, stderr = template(
        helm,
        "ca4-platform",
        *(
            "--set",
            "kafka.metrics.agent.repositoryUrl=http://nexus.tools.internal:8081/repository/maven-c"
            "entral/",
        ),
        *("--set", "kafka.metrics.agent.egressCidrs={10.40.12.7/32}"),
    )
    assert code == 0, stderr
    docs = [d for d in yaml.safe_load_all(stdout) if d]
    sts = kafka_statefulset(docs)
    (fetcher,) = pod_spec(sts)["initContainers"]
    assert env_of(fetcher)["AGENT_URL"] == (
        "http://nexus.tools.internal:8081/repository/maven-central/" + JMX_EXPORTER_AGENT.path
    )
    kafka = Peer("platform", sts["spec"]["template"]["metadata"]["labels"])
    assert allowed(docs, kafka, "Egress", Peer(address="10.40.12.7"), 8081)
    assert not allowed(docs, kafka, "Egress", Peer(address="10.40.12.8"), 8081)
    assert not allowed(docs, kafka, "Egress", Peer(address="151.101.0.209"), 443)


def test_platform_kafka_metrics_off_renders_no_agent(helm: str) -> None:
    """kafka.metrics.enabled=false: no init container, download, annotations, port or flows."""
    code, stdout, stderr = template(helm, "ca4-platform", "--set", "kafka.metrics.enabled=false")
    assert code == 0, stderr
    docs = [d for d in yaml.safe_load_all(stdout) if d]
    sts = kafka_statefulset(docs)
    spec = pod_spec(sts)
    assert "initContainers" not in spec
    assert not any(
        k.startswith("prometheus.io/") for k in sts["spec"]["template"]["metadata"]["annotations"]
    )
    assert "BROKER_KAFKA_OPTS" not in env_of(spec["containers"][0])
    assert [p["name"] for p in spec["containers"][0]["ports"]] == [
        "internal",
        "controller",
        "tunnel",
    ]
    assert not [d for d in docs if d["metadata"]["name"] == "kafka-jmx-exporter"]
    kafka = Peer("platform", sts["spec"]["template"]["metadata"]["labels"])
    prometheus = Peer("monitoring", {"app.kubernetes.io/name": "prometheus"})
    assert not allowed(docs, kafka, "Ingress", prometheus, 9404)
    assert not allowed(docs, kafka, "Egress", Peer(address="151.101.0.209"), 443)
    assert not {t for t in scrape_targets(prometheus_config(docs), docs) if t[0] == "kafka"}


@pytest.fixture
def fetch_script(rendered: Any, tmp_path: Path) -> tuple[str, dict[str, str], Path]:
    """The rendered init container's script and env, with a ``curl`` on PATH that "downloads"
    ``$FAKE_DOWNLOAD`` (the file the test writes) and the jar's path moved into ``tmp_path``."""
    (fetcher,) = pod_spec(kafka_statefulset(rendered[("ca4-platform", "prod")]))["initContainers"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_curl = bin_dir / "curl"
    fake_curl.write_text(
        '#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && out="$2"; shift; done\n'
        'cp "$FAKE_DOWNLOAD" "$out"\n'
    )
    fake_curl.chmod(0o755)
    (tmp_path / "agent").mkdir()
    env = {
        **env_of(fetcher),
        "AGENT_JAR": str(tmp_path / "agent" / "jmx_prometheus_javaagent.jar"),
        "FAKE_DOWNLOAD": str(tmp_path / "downloaded.jar"),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    return fetcher["command"][-1], env, tmp_path


def test_agent_fetcher_refuses_a_jar_that_is_not_the_pinned_one(
    fetch_script: tuple[str, dict[str, str], Path],
) -> None:
    """The init container fails (the broker never starts) and leaves no jar behind."""
    script, env, folder = fetch_script
    (folder / "downloaded.jar").write_bytes(b"PK\x03\x04 a jar someone swapped in")
    result = subprocess.run(
        ["/bin/sh", "-ec", script], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert f"kafka.metrics.agent.sha256 pins {JMX_EXPORTER_AGENT.sha256}" in result.stderr
    assert list((folder / "agent").iterdir()) == []


def test_agent_fetcher_installs_the_jar_whose_sha256_is_pinned(
    fetch_script: tuple[str, dict[str, str], Path],
) -> None:
    script, env, folder = fetch_script
    content = b"PK\x03\x04 the pinned jar"
    (folder / "downloaded.jar").write_bytes(content)
    env["AGENT_SHA256"] = hashlib.sha256(content).hexdigest()
    result = subprocess.run(
        ["/bin/sh", "-ec", script], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (folder / "agent").iterdir()] == ["jmx_prometheus_javaagent.jar"]
    assert (folder / "agent" / "jmx_prometheus_javaagent.jar").read_bytes() == content


BAD_VALUES = [
    ("ca4-app", ["--set", "image.tag=latest"], "rolling tag"),
    ("ca4-app", ["--set", "processor.autoscaling.minReplicas=9"], "greater than maxReplicas"),
    (
        "ca4-app",
        ["--set", "reader.enabled=true", "--set", "reader.replicaCount=0"],
        "reader: enabled with replicaCount 0",
    ),
    ("ca4-app", ["--set", "secrets.existingSecret="], "set secrets.existingSecret"),
    ("ca4-app", ["--set", "processor.resources.limits=null"], "limits"),
    ("ca4-app", ["--set", "containerSecurityContext.runAsNonRoot=false"], "runAsNonRoot"),
    ("ca4-app", ["--set", "config.logLevel=LOUD"], "logLevel"),
    ("ca4-app", ["--set", "surprise=1"], "surprise"),
    ("ca4-platform", ["--set", "kafka.replicas=2"], "must be odd"),
    (
        "ca4-platform",
        ["--set", "kafka.persistence.size=2Gi"],
        "the brokers would fill their volumes",
    ),
    ("ca4-platform", ["--set", "kafka.defaultReplicationFactor=3"], "exceeds kafka.replicas"),
    # validateValues counts the brokers' volume in Gi: the schema takes nothing else
    ("ca4-platform", ["--set", "kafka.persistence.size=10240Mi"], "kafka/persistence/size"),
    ("ca4-platform", ["--set", "kafka.persistence.size=1Ti"], "kafka/persistence/size"),
    # the heap a dev broker died with: Kafka's 128 MiB dedupe buffer in a 256m heap
    (
        "ca4-platform",
        ["--set", "kafka.heapOpts=-Xms256m -Xmx256m"],
        "kafka.logCleanerDedupeBufferBytes (134217728) leaves less than 256 MiB of the -Xmx256m",
    ),
    (
        "ca4-platform",
        ["--set", "kafka.logCleanerDedupeBufferBytes=1048575"],
        "kafka/logCleanerDedupeBufferBytes",
    ),
    ("ca4-platform", ["--set", "kafka.tunnel.nodePortBase=80"], "nodePortBase"),
    ("ca4-platform", ["--set", "kafka.image.tag=latest"], "kafka/image/tag"),
    ("ca4-platform", ["--set", "mongodb.image.tag=latest"], "mongodb/image/tag"),
    ("ca4-platform", ["--set", "kafka.tunnel.sourceCidrs={0.0.0.0/0}"], "sourceCidrs"),
    (
        "ca4-platform",
        ["--set", "kafka.metrics.port=9093"],
        "kafka.metrics.port (9093) is also kafka.ports.controller",
    ),
    ("ca4-platform", ["--set", "kafka.metrics.agent.sha256=f9c53eb0"], "metrics/agent/sha256"),
    (
        "ca4-platform",
        ["--set", "kafka.metrics.agent.repositoryUrl=ftp://mirror.internal/maven2"],
        "metrics/agent/repositoryUrl",
    ),
    ("ca4-platform", ["--set", "kafka.metrics.agent.egressCidrs=null"], "egressCidrs"),
    ("ca4-platform", ["--set", "kafka.metrics.fetcher.image.tag=latest"], "fetcher/image/tag"),
    (
        "ca4-app",
        ["--set", "config.otel.exporter=otlp", "--set", "config.otel.endpoint=http://c.m.svc:4317"],
        "not an OTLP/HTTP traces URL",
    ),
    (
        "ca4-app",
        ["--set", "networkPolicy.databaseNamespace="],
        "reaches no database",
    ),
    ("ca4-app", ["--set", "ingress.routes[0].component=grafana"], "ingress/routes/0/component"),
    # --set turns 4 into a number, which the API server refuses at install time, not helm
    (
        "ca4-app",
        [
            "--set",
            "processor.extraEnv[0].name=CA4_RATE_LIMIT_TENANT_KEYS",
            "--set",
            "processor.extraEnv[0].value=4",
        ],
        "processor/extraEnv/0/value",
    ),
    # values-prod.yaml leaves the public host to the operator (make ca4-deploy-app CA4_INGRESS_HOST)
    (
        "ca4-app",
        ["-f", str(chart_dir("ca4-app") / "values-prod.yaml")],
        "ingress: tlsSecretName needs a host: set ingress.host to the API's public DNS name",
    ),
    (
        "ca4-app",
        [
            *["-f", str(chart_dir("ca4-app") / "values-prod.yaml")],
            *["--set", "ingress.host=api.ca4.example.com"],
        ],
        'ingress.host: "api.ca4.example.com" is a placeholder (example.com',
    ),
    ("ca4-app", ["--set", "ingress.host=ca4.example.org"], "CA4_INGRESS_HOST=api.<your domain>"),
    # and the email receiver's addresses (make ca4-platform-setup CA4_ALERT_EMAIL_TO, ...)
    (
        "ca4-platform",
        ["-f", str(chart_dir("ca4-platform") / "values-prod.yaml")],
        "alertmanager.receivers.email needs to, from and smarthost: set to (CA4_ALERT_EMAIL_TO), "
        "from (CA4_ALERT_EMAIL_FROM), smarthost (CA4_ALERT_SMTP_SMARTHOST)",
    ),
    (
        "ca4-platform",
        [
            *values_args("ca4-platform", "prod"),
            *["--set-string", "alertmanager.receivers.email.to=ca4-oncall@example.org"],
        ],
        'alertmanager.receivers.email.to: "ca4-oncall@example.org" is a placeholder (example.org',
    ),
    (
        "ca4-platform",
        [
            *values_args("ca4-platform", "prod"),
            "--set-string",
            r"alertmanager.receivers.email.to=ops@acme.test\,Oncall <o@example.org>",
        ],
        'alertmanager.receivers.email.to: "Oncall <o@example.org>" is a placeholder (example.org',
    ),
    (
        "ca4-platform",
        [
            *values_args("ca4-platform", "prod"),
            *["--set-string", "alertmanager.receivers.email.smarthost=smtp.example.org:587"],
        ],
        "set the real one (make ca4-platform-setup CA4_ALERT_SMTP_SMARTHOST=...)",
    ),
]


@pytest.mark.parametrize(
    ("chart", "args", "message"),
    BAD_VALUES,
    ids=[" ".join(a).replace(f"{REPO}/", "") for _, a, _ in BAD_VALUES],
)
def test_bad_values_are_rejected_with_a_clear_message(
    helm: str, chart: str, args: list[str], message: str
) -> None:
    code, _, stderr = template(helm, chart, *args)
    assert code != 0
    assert message in stderr, stderr


def without_random_values(docs: list[Manifest]) -> list[Manifest]:
    """``docs`` with what a render makes at random (generated passwords, so every Secret's
    values, and the checksums of them) replaced by a mark."""

    def masked(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: masked(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [masked(v) for v in node]
        return "<random>" if key.startswith("checksum/") else node

    def secret_masked(doc: Manifest) -> Manifest:
        if doc.get("kind") != "Secret":
            return doc
        data = dict.fromkeys(doc.get("data") or {}, "<random>")
        return {**doc, "data": data}

    return [masked(secret_masked(doc)) for doc in docs]


def test_helm_4_renders_what_helm_3_does(helm4: str, rendered: Any) -> None:
    """A package manager installs Helm 4 for a new operator now: both charts render the same
    manifests with it, for every value set, and it refuses the same bad values with the same
    messages. (Installing differs: Helm 4 applies new releases server-side and `--wait` watches
    with kstatus; no cluster here runs either.)"""
    for (chart, value_set), docs in rendered.items():
        code, out, err = template(helm4, chart, *values_args(chart, value_set))
        assert code == 0, f"helm 4: {chart}/{value_set} does not render:\n{err}"
        docs4 = [d for d in yaml.safe_load_all(out) if d]
        assert without_random_values(docs4) == without_random_values(docs), (chart, value_set)
    for chart, args, message in BAD_VALUES:
        code, _, err = template(helm4, chart, *args)
        assert code != 0, (chart, args)
        assert message in err, err


def string_values(node: Any, path: str = "") -> list[tuple[str, str]]:
    """Every string value of a values tree, with its dotted path."""
    if isinstance(node, dict):
        return [kv for key, value in node.items() for kv in string_values(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [kv for i, value in enumerate(node) for kv in string_values(value, f"{path}[{i}]")]
    return [(path.lstrip("."), node)] if isinstance(node, str) else []


@pytest.mark.parametrize(("chart", "value_set"), CASES)
def test_shipped_values_hold_no_placeholder_domains(chart: str, value_set: str) -> None:
    """A deploy with the committed values never sends the API's name or alert mail to
    example.com/.org: those are the operator's to give (CA4_INGRESS_HOST, CA4_ALERT_EMAIL_*)."""
    name = "values.yaml" if value_set == "default" else f"values-{value_set}.yaml"
    values = yaml.safe_load((chart_dir(chart) / name).read_text())
    placeholders = [
        (path, value)
        for path, value in string_values(values)
        if re.search(r"(^|[.@])example\.(com|org|net)(:\d+)?$", value)
    ]
    assert placeholders == []


def test_platform_notes_name_the_components_it_deploys() -> None:
    """The chart ships Grafana Alloy, not Promtail (which needed hostPath and root)."""
    notes = (chart_dir("ca4-platform") / "templates" / "NOTES.txt").read_text()
    assert "Promtail" not in notes
    assert "Alloy" in notes


def rendered_notes(
    helm: str,
    tmp_path: Path,
    *args: str,
    chart: str = "ca4-platform",
    lookups: dict[str, str] | None = None,
) -> str:
    """A chart's NOTES.txt as `helm install` prints it. `helm template` renders no notes, so a
    copy of the chart renders the file's text through ``tpl`` into a ConfigMap. ``lookups``
    swaps each ``lookup`` (its text) for the object a cluster would return, as
    :func:`~tests.infra.conftest.render_with_lookups` does."""
    copy = tmp_path / chart
    shutil.copytree(chart_dir(chart), copy)
    (copy / "files").mkdir(exist_ok=True)
    notes = (copy / "templates" / "NOTES.txt").read_text()
    for lookup, answer in (lookups or {}).items():
        assert notes.count(lookup) == 1, f"the notes look up {lookup!r} once"
        notes = notes.replace(lookup, answer)
    (copy / "files" / "notes.txt").write_text(notes)
    (copy / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rendered-notes\ndata:\n"
        '  notes: {{ tpl (.Files.Get "files/notes.txt") . | quote }}\n'
    )
    result = run(
        [
            *[helm, "template", chart, str(copy), "--namespace", CHARTS[chart]],
            *["--kube-version", KUBE_VERSION, "--show-only", "templates/zz-notes.yaml", *args],
        ]
    )
    assert result.returncode == 0, result.stderr
    notes: str = yaml.safe_load(result.stdout)["data"]["notes"]
    return notes


@pytest.mark.parametrize("value_set", ["dev", "prod"])
def test_app_notes_name_the_component_that_serves_reads(
    helm: str, tmp_path: Path, value_set: str
) -> None:
    """Prod's reads go to the reader: the notes said the worker served them."""
    notes = rendered_notes(helm, tmp_path, *values_args("ca4-app", value_set), chart="ca4-app")
    reads = "reader" if value_set == "prod" else "worker"
    assert re.search(rf"/v1/sessions  -> {reads}$", notes, re.MULTILINE), notes
    assert ("rollout status deploy/ca4-app-reader" in notes) == (value_set == "prod")


@pytest.mark.parametrize("value_set", ["dev", "prod"])
def test_platform_notes_give_the_kafka_tunnel_as_it_runs(
    helm: str, tmp_path: Path, value_set: str
) -> None:
    """The tunnel line is the target as it runs (tunnel.sh forwards every broker the StatefulSet
    runs), and the ssh lines the config that routes through the bastion."""
    values = yaml.safe_load((chart_dir("ca4-platform") / f"values-{value_set}.yaml").read_text())
    replicas = values["kafka"]["replicas"]
    notes = rendered_notes(helm, tmp_path, *values_args("ca4-platform", value_set))
    assert "make dev-kafka-tunnel ENV=<dev|prod>   (one forward per broker; " in notes
    tunnel = (REPO / "tools/provision/scripts/tunnel.sh").read_text()
    assert "get statefulset kafka -o jsonpath='{.spec.replicas}'" in tunnel
    assert "\t$(CA4_SCRIPTS)/tunnel.sh kafka\n" in (REPO / "mk/infra.mk").read_text()
    ssh_lines = re.findall(r"^ +broker (\d+): (ssh .*)$", notes, re.M)
    assert [int(n) for n, _ in ssh_lines] == list(range(replicas))
    for n, line in ssh_lines:
        assert line.startswith("ssh -F .ca4/<dev|prod>/ssh_config -N -L "), line
        node = f"<private ip of the node running kafka-{n}>"
        assert f"-L {9092 + int(n)}:{node}:{30094 + int(n)} " in line


def test_chart_copies_of_observability_are_fresh() -> None:
    result = run([str(REPO / "tools" / "provision" / "scripts" / "helm-sync.sh"), "--check"])
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("chart", CHARTS)
def test_values_documented_with_param(chart: str) -> None:
    text = (chart_dir(chart) / "values.yaml").read_text()
    documented = {
        line.split()[2] for line in text.splitlines() if line.strip().startswith("## @param")
    }

    def leaves(node: Any, prefix: str = "") -> set[str]:
        if isinstance(node, dict) and node:
            out: set[str] = set()
            for key, value in node.items():
                path = f"{prefix}.{key}" if prefix else key
                out |= {path} if path in documented else leaves(value, path)
            return out
        return {prefix}

    missing = {p for p in leaves(yaml.safe_load(text)) if p not in documented}
    assert not missing, f"values without a ## @param line: {sorted(missing)}"


# --- ca4-app: the existing Secret's checksum rolls the pods (make ca4-deploy-app) ---------------
# (day-2 fix: a rotated database URL never reached pods that read it at start)

SECRET_CHECKSUM = hashlib.sha256(b"mongo-url=mongodb://rotated\n").hexdigest()


def pod_annotations(stdout: str) -> dict[str, dict[str, str]]:
    """Each Deployment's pod template annotations, by component name."""
    docs = [d for d in yaml.safe_load_all(stdout) if d and d["kind"] == "Deployment"]
    return {
        d["metadata"]["labels"]["app.kubernetes.io/name"]: d["spec"]["template"]["metadata"][
            "annotations"
        ]
        for d in docs
    }


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_app_existing_secret_checksum_renders_as_the_pods_annotation(
    helm: str, value_set: str
) -> None:
    args = values_args("ca4-app", value_set)
    code, stdout, stderr = template(helm, "ca4-app", *args)
    assert code == 0, stderr
    without = pod_annotations(stdout)
    assert {"processor", "worker"} <= set(without)
    assert all("checksum/secret" not in a for a in without.values()), "existingSecret: none"
    checksum = f"secrets.existingSecretChecksum={SECRET_CHECKSUM}"
    code, stdout, stderr = template(helm, "ca4-app", *args, "--set-string", checksum)
    assert code == 0, stderr
    for component, found in pod_annotations(stdout).items():
        assert found["checksum/secret"] == SECRET_CHECKSUM, component
        rest = {k: v for k, v in found.items() if k != "checksum/secret"}
        assert rest == without[component], "nothing else changes"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["secrets.existingSecretChecksum=abc"], "existingSecretChecksum"),
        (
            [
                "secrets.existingSecret=",
                "secrets.mongoUrl=mongodb://db",
                f"secrets.apiKeyHashes=ci:{'a' * 64}",
                f"secrets.existingSecretChecksum={SECRET_CHECKSUM}",
            ],
            "secrets.existingSecretChecksum is the checksum of secrets.existingSecret",
        ),
    ],
    ids=["not-a-sha256", "without-existing-secret"],
)
def test_app_existing_secret_checksum_is_refused_where_it_means_nothing(
    helm: str, settings: list[str], message: str
) -> None:
    args = [a for s in settings for a in ("--set-string", s)]
    code, _, stderr = template(helm, "ca4-app", *args)
    assert code != 0
    assert message in stderr, stderr


def test_app_notes_say_what_a_plain_helm_install_lacks_before_pods_can_start(
    helm: str, tmp_path: Path
) -> None:
    """`helm install` with the defaults rendered and printed notes, while every pod waited on a
    Secret nobody made, an image no registry serves, or archived to someone else's bucket."""
    defaults = rendered_notes(helm, tmp_path / "defaults", chart="ca4-app")
    assert "Before the pods can start:" in defaults
    assert (
        'the Secret "ca4-app-secrets" must exist in namespace app (`make ca4-deploy-app` '
        "creates it; by hand:\n    kubectl -n app create secret generic ca4-app-secrets "
        "--from-literal=mongo-url='<mongodb URL>' --from-file=api-key-hashes=<keys file>)"
    ) in defaults
    assert "image.tag is empty, so the pods run ghcr.io/ca4-project/ca4-processor:" in defaults
    assert "config.s3.bucket is the placeholder ca4-archive" in defaults

    as_make_deploys = rendered_notes(
        helm,
        tmp_path / "make",
        *values_args("ca4-app", "prod"),
        *["--set-string", "image.tag=0a1b2c3d4e5f", "--set-string", "config.s3.bucket=acme-ca4"],
        chart="ca4-app",
    )
    # The Secret make creates first: helm template's lookup finds nothing, an install's does.
    assert "Before the pods can start:" in as_make_deploys
    assert "image.tag is empty" not in as_make_deploys
    assert "placeholder" not in as_make_deploys
    secret = {'lookup "v1" "Secret" $.Release.Namespace .': 'dict "kind" "Secret"'}
    config_map = {'lookup "v1" "ConfigMap" $.Release.Namespace .': 'dict "kind" "ConfigMap"'}
    with_both = rendered_notes(
        helm,
        tmp_path / "installed",
        *values_args("ca4-app", "prod"),
        *["--set-string", "image.tag=0a1b2c3d4e5f", "--set-string", "config.s3.bucket=acme-ca4"],
        chart="ca4-app",
        lookups={**secret, **config_map},
    )
    assert "Before the pods can start" not in with_both


def test_app_notes_give_the_database_ca_bundle_a_plain_helm_install_lacks(
    helm: str, tmp_path: Path
) -> None:
    """Prod pods mount the ConfigMap ca4-db-ca-bundle, which only `make ca4-deploy-app` made:
    after a plain `helm install` they stayed ContainerCreating, and the notes said nothing. The
    commands are the target's: its URL, ConfigMap name and key."""
    url, name, key = map(make_default, ["CA4_DB_CA_URL", "CA4_DB_CA_CONFIGMAP", "CA4_DB_CA_KEY"])
    notes = rendered_notes(
        helm,
        tmp_path,
        *values_args("ca4-app", "prod"),
        *["--set-string", "image.tag=0a1b2c3d4e5f", "--set-string", "config.s3.bucket=acme-ca4"],
        chart="ca4-app",
        lookups={'lookup "v1" "Secret" $.Release.Namespace .': 'dict "kind" "Secret"'},
    )
    assert "Before the pods can start:" in notes
    assert (
        f'  - the ConfigMap "{name}" with the database\'s CA bundle (key {key}) must exist '
        "in namespace app, or the pods stay ContainerCreating (`make ca4-deploy-app` creates it; "
        "by hand, with DocumentDB's RDS global bundle:\n"
        f"    curl -sfL --proto '=https' -o {key} {url}\n"
        f"    kubectl -n app create configmap {name} --from-file={key}={key})"
    ) in notes
    # dev mounts no bundle: nothing to ask for
    dev = rendered_notes(helm, tmp_path / "dev", *values_args("ca4-app", "dev"), chart="ca4-app")
    assert "ConfigMap" not in dev


def test_the_chart_made_secret_is_not_named_like_the_one_make_creates(helm: str) -> None:
    """Moving between the modes had Helm delete the Secret make applied, or refuse to adopt it."""
    inline = [
        *["--set-string", "secrets.existingSecret="],
        *["--set-string", "secrets.mongoUrl=mongodb://db"],
        *["--set-string", f"secrets.apiKeyHashes=ci:{'a' * 64}"],
    ]
    code, stdout, stderr = template(helm, "ca4-app", *inline)
    assert code == 0, stderr
    secrets = [doc for doc in yaml.safe_load_all(stdout) if doc and doc["kind"] == "Secret"]
    assert [doc["metadata"]["name"] for doc in secrets] == ["ca4-app-inline-secrets"]


def test_the_readme_keys_file_example_is_a_valid_inline_keys_value(
    helm: str, tmp_path: Path
) -> None:
    """Comments and blank lines, which both services read, were refused by the schema."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## API keys and tenants", 1)[1]
    example = section.split("```text\n", 1)[1].split("```", 1)[0]
    keys_file = tmp_path / "api-keys"
    inline = [
        "--set-string",
        "secrets.existingSecret=",
        "--set-string",
        "secrets.mongoUrl=mongodb://db",
    ]
    inline += ["--set-file", f"secrets.apiKeyHashes={keys_file}"]
    keys_file.write_text(f"{example}\n\n  # rotated 2026-11\n")
    code, _, stderr = template(helm, "ca4-app", *inline)
    assert code == 0, stderr
    keys_file.write_text(f"{example}\nci:not-a-sha256:acme:write\n")
    code, _, stderr = template(helm, "ca4-app", *inline)
    assert code != 0
    assert "apiKeyHashes" in stderr


def test_platform_claims_outside_statefulsets_survive_an_uninstall(rendered: Any) -> None:
    """helm uninstall deleted Prometheus's, Grafana's and Alertmanager's data (the
    StatefulSets' claims, Kafka's and Loki's, are never deleted with a release)."""
    for value_set in VALUE_SETS:
        claims = [
            doc
            for doc in rendered[("ca4-platform", value_set)]
            if doc["kind"] == "PersistentVolumeClaim"
        ]
        assert {doc["metadata"]["name"] for doc in claims} >= {
            "prometheus-data",
            "grafana-data",
            "alertmanager-data",
        }
        for doc in claims:
            annotations = doc["metadata"].get("annotations") or {}
            assert annotations.get("helm.sh/resource-policy") == "keep", doc["metadata"]["name"]
