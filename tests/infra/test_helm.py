"""Helm: both charts lint and render for default, dev and prod values; every manifest validates
against the Kubernetes schemas of the targeted K3s minor; the security properties hold."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.infra.conftest import (
    CHARTS,
    KUBE_VERSION,
    REPO,
    VALUE_SETS,
    chart_dir,
    pod_spec,
    run,
    template,
    values_args,
    workloads,
)

SCHEMA_VERSION = ".".join(KUBE_VERSION.split(".")[:2]) + ".0"


CASES = [(c, v) for c in CHARTS for v in VALUE_SETS]


@pytest.mark.parametrize(("chart", "value_set"), CASES)
def test_helm_lint(helm: str, chart: str, value_set: str) -> None:
    result = run(
        [
            helm,
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
        for container in spec["containers"]:
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
            if doc["kind"] != "Job":
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
    assert set(deployments) == {"processor", "worker"}
    for name, port in (("processor", 8000), ("worker", 8001)):
        spec = pod_spec(deployments[name])
        container = spec["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["ports"][0]["containerPort"] == port
        annotations = deployments[name]["spec"]["template"]["metadata"]["annotations"]
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
    for deployment in deployments.values():  # one keys file, mounted by both, reloaded live
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
    assert backends == {"processor", "worker"}, "one edge URL: ingest and read routes"
    paths = {path["path"] for path in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert "/sdk" in paths, "notebooks install the SDK from the edge"
    pdbs = by_kind.get("PodDisruptionBudget", [])
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    if value_set == "dev":  # one replica each: no autoscaling, no disruption budget
        assert not pdbs
        assert not hpas
    else:
        assert len(pdbs) == 2
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


BAD_VALUES = [
    ("ca4-app", ["--set", "image.tag=latest"], "rolling tag"),
    ("ca4-app", ["--set", "processor.autoscaling.minReplicas=9"], "greater than maxReplicas"),
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
    ("ca4-platform", ["--set", "kafka.tunnel.nodePortBase=80"], "nodePortBase"),
    ("ca4-platform", ["--set", "kafka.image.tag=latest"], "kafka/image/tag"),
    ("ca4-platform", ["--set", "mongodb.image.tag=latest"], "mongodb/image/tag"),
    ("ca4-platform", ["--set", "kafka.tunnel.sourceCidrs={0.0.0.0/0}"], "sourceCidrs"),
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
