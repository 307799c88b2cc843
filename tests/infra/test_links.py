"""Links between the artifacts a deploy is made of; each check fails when one end moves alone.

Static and fast: the charts rendered for every value set, docker-compose.yml, observability/, the
Terraform environments, the settings classes and the docs, read against each other. What a link
check cannot show (that Grafana draws the panel, that Traefik routes the path) needs a cluster.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import pytest
import typer.main
import yaml
from ca4_processor.core.config import Settings as ProcessorSettings
from ca4_provision.cli import app as ca4_cli
from ca4_provision.devstack.versions import IMAGE_TAGS, KAFKA_VERSION
from ca4_provision.verify.checks import LOKI_SERVICE_SELECTOR
from ca4_provision.verify.runner import STEPS
from ca4_provision.verify.settings import VerifySettings
from ca4_worker.cli import dlq_app
from ca4_worker.core.config import Settings as WorkerSettings
from ca4_worker.domain.dead_letters import DEAD_LETTER_CLASSES
from pydantic_settings import BaseSettings

from tests.infra.conftest import (
    REPO,
    VALUE_SETS,
    Manifest,
    Rendered,
    chart_dir,
    pod_spec,
    workloads,
)
from tests.support import alloy

COMPOSE = REPO / "docker-compose.yml"
OBSERVABILITY = REPO / "observability"
SERVICE_SETTINGS: dict[str, type[BaseSettings]] = {
    "processor": ProcessorSettings,
    "worker": WorkerSettings,
}
OUR_IMAGES = {"ca4-processor", "ca4-worker"}
# A collector that receives OTLP, by image name: its OTLP/HTTP port (the services export over HTTP).
OTLP_HTTP_RECEIVERS = {"all-in-one": 4318, "opentelemetry-collector": 4318}
# The Secret of ca4-platform's in-cluster MongoDB (dev), whose mongo-url make ca4-deploy-app reads.
DEV_MONGO_SECRET = "ca4-platform-mongodb"
# Addresses standing in for the world outside the cluster.
AWS_S3_ADDRESS = "52.218.0.1"
INSTANCE_METADATA = "169.254.169.254"


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def by_name(docs: list[Manifest], kind: str, name: str) -> Manifest:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def app_deployment(rendered: Rendered, value_set: str, component: str) -> Manifest:
    return next(
        d
        for d in rendered[("ca4-app", value_set)]
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"]["app.kubernetes.io/name"] == component
    )


def pod_env(docs: list[Manifest], workload: Manifest) -> dict[str, str]:
    """A container's environment as the kubelet builds it; Secret values read ``<secret>``."""
    container = pod_spec(workload)["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= by_name(docs, "ConfigMap", source["configMapRef"]["name"])["data"]
    for variable in container.get("env", []):
        env[variable["name"]] = variable.get("value", "<secret>")
    return env


def dev_mongo_url(docs: list[Manifest]) -> str:
    """The app's URL in ca4-platform's MongoDB Secret (a password generated for this render)."""
    secret = by_name(docs, "Secret", DEV_MONGO_SECRET)
    return base64.b64decode(secret["data"]["mongo-url"]).decode()


def setting_names(settings: type[BaseSettings]) -> set[str]:
    return {f"CA4_{name.upper()}" for name in settings.model_fields}


# --- Grafana: every datasource a dashboard uses is provisioned, in compose and in Helm ----------


@dataclass(frozen=True)
class Provisioning:
    """The datasources and dashboards one Grafana is given."""

    datasources: list[dict[str, Any]]
    dashboards: dict[str, dict[str, Any]]


def provisionings(rendered: Rendered) -> Iterator[tuple[str, Provisioning]]:
    datasources = [
        source
        for path in sorted((OBSERVABILITY / "grafana/provisioning/datasources").glob("*.yml"))
        for source in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]
    ]
    dashboards = {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((OBSERVABILITY / "grafana/dashboards").glob("*.json"))
    }
    yield "compose", Provisioning(datasources, dashboards)
    for value_set in VALUE_SETS:
        docs = rendered[("ca4-platform", value_set)]
        files = by_name(docs, "ConfigMap", "grafana-provisioning")["data"]
        shipped = by_name(docs, "ConfigMap", "grafana-dashboards")["data"]
        yield (
            f"helm-{value_set}",
            Provisioning(
                yaml.safe_load(files["datasources.yaml"])["datasources"],
                {name: json.loads(text) for name, text in shipped.items()},
            ),
        )


def datasource_references(node: object) -> Iterator[dict[str, Any]]:
    """Every ``datasource`` object anywhere in a dashboard."""
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            yield node["datasource"]
        for value in node.values():
            yield from datasource_references(value)
    elif isinstance(node, list):
        for value in node:
            yield from datasource_references(value)


def test_dashboard_datasource_uids_exist_in_every_provisioning(rendered: Rendered) -> None:
    for where, grafana in provisionings(rendered):
        assert grafana.dashboards, f"{where}: no dashboards"
        types = {source["uid"]: source["type"] for source in grafana.datasources}
        for name, dashboard in grafana.dashboards.items():
            for reference in datasource_references(dashboard):
                uid = reference["uid"]
                assert uid in types, (
                    f"{where}: {name} uses datasource {uid!r}, provisioned: {types}"
                )
                assert reference["type"] == types[uid], f"{where}: {name} {reference}"
        for source in grafana.datasources:  # links between datasources (logs <-> traces)
            linked = re.findall(r"'?datasourceUid'?: '?([\w-]+)", yaml.safe_dump(source))
            for uid in linked:
                assert uid in types, f"{where}: {source['name']} links to missing {uid!r}"


# --- Logs: every label a consumer filters on is produced by every log pipeline -----------------


def stream_selector_labels(logql: str) -> set[str]:
    """The label names in a LogQL stream selector (``{service=~"a|b", level="error"}``)."""
    match = re.search(r"\{([^}]*)\}", logql)
    assert match, f"no stream selector in {logql!r}"
    return set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", match.group(1)))


def log_label_consumers() -> dict[str, set[str]]:
    """Who filters logs on which labels: dashboards, the logs<->traces link, ``ca4 verify``."""
    consumers = {"ca4 verify (Loki step)": stream_selector_labels(LOKI_SERVICE_SELECTOR)}
    for path in sorted((OBSERVABILITY / "grafana/dashboards").glob("*.json")):
        for reference_owner in _loki_targets(json.loads(path.read_text(encoding="utf-8"))):
            consumers[f"{path.name}: {reference_owner[0]}"] = stream_selector_labels(
                reference_owner[1]
            )
    for path in sorted((OBSERVABILITY / "grafana/provisioning/datasources").glob("*.yml")):
        for source in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]:
            query = source.get("jsonData", {}).get("tracesToLogsV2", {}).get("query")
            if query:
                consumers[f"{source['name']} trace-to-logs query"] = stream_selector_labels(query)
    for query in runbook_log_queries():
        consumers[f"runbooks.md: {query}"] = stream_selector_labels(query)
    return consumers


def _loki_targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in [*dashboard.get("panels", [])] + [
        nested for row in dashboard.get("panels", []) for nested in row.get("panels", [])
    ]:
        for target in panel.get("targets", []):
            if target.get("datasource", panel.get("datasource", {})).get("type") == "loki":
                yield panel["title"], target["expr"]


def log_pipelines(rendered: Rendered) -> Iterator[tuple[str, set[str]]]:
    """Each Alloy config (compose, and the chart for every value set) with the stream labels it
    attaches; parsing it is also its syntax check (Alloy itself cannot be installed here)."""
    compose_config = (OBSERVABILITY / "alloy/config.alloy").read_text(encoding="utf-8")
    yield "compose alloy", alloy.stream_labels(alloy.parse(compose_config))
    for value_set in VALUE_SETS:
        config = by_name(rendered[("ca4-platform", value_set)], "ConfigMap", "alloy-config")
        labels = alloy.stream_labels(alloy.parse(config["data"]["config.alloy"]))
        yield f"helm-{value_set} alloy", labels


def test_every_filtered_log_label_is_produced_by_every_log_pipeline(rendered: Rendered) -> None:
    consumers = log_label_consumers()
    assert len(consumers) >= 3, consumers
    for pipeline, produced in log_pipelines(rendered):
        for consumer, labels in consumers.items():
            missing = labels - produced
            assert not missing, f"{consumer} filters on {missing}; {pipeline} sets only {produced}"


# --- Settings: every CA4_* variable set anywhere is read, and prod sets what prod needs --------


def compose_service_env(service: str) -> dict[str, str]:
    return {
        name: str(value)
        for name, value in compose()["services"][service].get("environment", {}).items()
    }


@pytest.mark.parametrize("service", sorted(SERVICE_SETTINGS))
def test_compose_sets_only_settings_its_service_reads(service: str) -> None:
    unknown = {
        name for name in compose_service_env(service) if name.startswith("CA4_")
    } - setting_names(SERVICE_SETTINGS[service])
    assert not unknown, f"compose sets {unknown} on {service}, which has no such setting"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_sets_only_settings_the_services_read(rendered: Rendered, value_set: str) -> None:
    docs = rendered[("ca4-app", value_set)]
    either = setting_names(ProcessorSettings) | setting_names(WorkerSettings)
    for component, settings in SERVICE_SETTINGS.items():
        deployment = app_deployment(rendered, value_set, component)
        env = {n for n in pod_env(docs, deployment) if n.startswith("CA4_")}
        assert not env - either, f"{component}: no service reads {env - either}"
        own = {e["name"] for e in pod_spec(deployment)["containers"][0]["env"]}
        assert not own - setting_names(settings), f"{component} does not read {own}"


DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), COMPOSE]
# Where a CA4_* variable can be read besides the settings classes: make, the scripts, the SDK and
# the dev stack read their own.
READERS = [
    REPO / "Makefile",
    *sorted((REPO / "mk").glob("*.mk")),
    *sorted((REPO / "tools/provision/scripts").glob("*.sh")),
    *sorted((REPO / "tools/provision/src").rglob("*.py")),
    *sorted((REPO / "sdk/src").rglob("*.py")),
]


def documented_assignments() -> dict[str, set[str]]:
    """``CA4_X`` names the docs tell people to set (``CA4_X=...``, ``export CA4_X``)."""
    found: dict[str, set[str]] = {}
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        names = set(re.findall(r"\b(CA4_[A-Z0-9_]+)=", text))
        names |= set(re.findall(r"export\s+(CA4_[A-Z0-9_]+)", text))
        found[path.relative_to(REPO).as_posix()] = names
    return found


def test_every_ca4_variable_the_docs_set_is_read_by_something() -> None:
    read = setting_names(ProcessorSettings) | setting_names(WorkerSettings)
    read |= setting_names(VerifySettings)
    for path in READERS:
        read |= set(re.findall(r"\bCA4_[A-Z0-9_]+\b", path.read_text(encoding="utf-8")))
    # Compose reads what it interpolates (a secret's file, a container's environment).
    read |= set(re.findall(r"\$\{(CA4_[A-Z0-9_]+)", COMPOSE.read_text(encoding="utf-8")))
    for document, names in documented_assignments().items():
        unread = names - read
        assert not unread, f"{document} sets {sorted(unread)}, which nothing reads (a typo?)"


def test_prod_values_set_every_setting_prod_needs(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    docs = rendered[("ca4-app", "prod")]
    keys_file = tmp_path / "api-keys"  # the mounted Secret's api-key-hashes, as the pods see it
    keys_file.write_text(f"ops:{'ab' * 32}:platform:read:all\n")
    secrets = {
        "CA4_API_KEYS_FILE": str(keys_file),
        "CA4_MONGO_URL": "mongodb://ca4:pw@ca4.cluster-x.eu-west-1.docdb.amazonaws.com:27017/?tls=true",
    }
    for component, settings_class in SERVICE_SETTINGS.items():
        env = pod_env(docs, app_deployment(rendered, "prod", component))
        # A default that names this machine is a dev-stack default: prod must set it.
        local = {
            f"CA4_{name.upper()}"
            for name, info in settings_class.model_fields.items()
            if re.search(r"127\.0\.0\.1|localhost", str(info.default))
        }
        assert local <= env.keys(), f"{component}: prod leaves {local - env.keys()} at dev values"
        for name in [n for n in os.environ if n.startswith("CA4_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, secrets.get(name, value))
        settings = settings_class()
        if isinstance(settings, ProcessorSettings):
            assert settings.ENVIRONMENT == "prod", "the internet-facing processor runs as dev"
            assert not settings.uses_dev_key


@pytest.mark.parametrize("blank", ["", " , "])
def test_prod_services_with_a_blank_keys_secret_refuse_to_start(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch, blank: str, tmp_path: Path
) -> None:
    docs = rendered[("ca4-app", "prod")]
    keys_file = tmp_path / "api-keys"  # the mounted Secret's api-key-hashes, as the pod sees it
    keys_file.write_text(blank)
    for component, settings in (("processor", ProcessorSettings), ("worker", WorkerSettings)):
        env = pod_env(docs, app_deployment(rendered, "prod", component))
        assert env["CA4_API_KEYS_FILE"] == "/etc/ca4/keys/api-keys"
        for name, value in env.items():
            monkeypatch.setenv(name, str(keys_file) if name == "CA4_API_KEYS_FILE" else value)
        with pytest.raises(ValueError, match="CA4_ENVIRONMENT=prod needs API keys"):
            settings()


# --- Tracing: the exporter speaks the protocol of a collector that is deployed ----------------


def image_name(image: str) -> str:
    return image.rsplit(":", 1)[0].rsplit("/", 1)[-1]


def exporter_targets(rendered: Rendered) -> Iterator[tuple[str, dict[str, str], dict[str, int]]]:
    """Per deployment: the exporter env of each service and the collectors deployed beside it."""
    services = compose()["services"]
    collectors = {
        name: OTLP_HTTP_RECEIVERS[image_name(s["image"])]
        for name, s in services.items()
        if image_name(s.get("image", "")) in OTLP_HTTP_RECEIVERS
    }
    for service in SERVICE_SETTINGS:
        yield f"compose {service}", compose_service_env(service), collectors
    for value_set in VALUE_SETS:
        docs = rendered[("ca4-app", value_set)] + rendered[("ca4-platform", value_set)]
        deployed = {
            f"{w['metadata']['name']}.{w['metadata'].get('namespace', '')}": OTLP_HTTP_RECEIVERS[
                image_name(pod_spec(w)["containers"][0]["image"])
            ]
            for w in workloads(docs)
            if image_name(pod_spec(w)["containers"][0]["image"]) in OTLP_HTTP_RECEIVERS
        }
        for service in SERVICE_SETTINGS:
            env = pod_env(docs, app_deployment(rendered, value_set, service))
            yield f"helm-{value_set} {service}", env, deployed


def test_trace_exporter_reaches_a_deployed_collector_over_its_protocol(
    rendered: Rendered,
) -> None:
    for where, env, collectors in exporter_targets(rendered):
        if env.get("CA4_OTEL_EXPORTER") != "otlp":
            continue
        url = urlsplit(env.get("CA4_OTEL_ENDPOINT", ""))
        host = url.hostname or ""
        collector = next((c for c in collectors if host == c or host.startswith(f"{c}.")), None)
        assert collector, f"{where}: exports to {host!r}, deployed collectors: {collectors}"
        assert url.port == collectors[collector], f"{where}: {url.geturl()} is not OTLP/HTTP"
        assert url.path == "/v1/traces", f"{where}: the OTLP/HTTP exporter posts to the URL as is"


# --- Versions: third-party images and the dev stack from one source ---------------------------


def compose_images() -> dict[str, str]:
    return {
        name: service["image"]
        for name, service in compose()["services"].items()
        if "build" not in service
    }


def helm_images(rendered: Rendered) -> dict[str, str]:
    images = {}
    for (chart, value_set), docs in rendered.items():
        for workload in workloads(docs):
            for container in pod_spec(workload)["containers"]:
                if image_name(container["image"]) not in OUR_IMAGES:
                    images[f"{chart}/{value_set} {workload['metadata']['name']}"] = container[
                        "image"
                    ]
    for chart in ("ca4-app", "ca4-platform"):
        meta = yaml.safe_load((chart_dir(chart) / "Chart.yaml").read_text(encoding="utf-8"))
        for entry in yaml.safe_load(meta.get("annotations", {}).get("images", "[]")) or []:
            if image_name(entry["image"]) not in OUR_IMAGES:
                images[f"{chart} Chart.yaml {entry['name']}"] = entry["image"]
    return images


def test_one_kafka_version_in_the_dev_stack_compose_and_helm(rendered: Rendered) -> None:
    everywhere = {
        where: image.rsplit(":", 1)[1]
        for where, image in {**compose_images(), **helm_images(rendered)}.items()
        if image_name(image) == "kafka"
    }
    assert len(everywhere) >= 4, everywhere
    assert set(everywhere.values()) == {KAFKA_VERSION}, f"dev stack {KAFKA_VERSION}: {everywhere}"


def test_third_party_image_tags_come_from_versions_py(rendered: Rendered) -> None:
    for where, image in {**compose_images(), **helm_images(rendered)}.items():
        name, tag = image_name(image), image.rsplit(":", 1)[1]
        assert name in IMAGE_TAGS, f"{where}: {image} is not pinned in devstack/versions.py"
        assert tag == IMAGE_TAGS[name], f"{where}: {image}, versions.py pins {IMAGE_TAGS[name]}"


# --- NetworkPolicies: each pod reaches what its env points at, and nothing else ----------------


@dataclass(frozen=True)
class Peer:
    """One end of a connection: a pod (namespace and labels) or an address outside the cluster."""

    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    address: str | None = None


def labels_match(selector: dict[str, Any], labels: Mapping[str, str]) -> bool:
    assert "matchExpressions" not in selector, "extend labels_match for matchExpressions"
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def peer_matches(rule_peer: dict[str, Any], peer: Peer, policy_namespace: str) -> bool:
    if "ipBlock" in rule_peer:
        if peer.address is None:
            return False
        address = ipaddress.ip_address(peer.address)
        block = rule_peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if peer.namespace is None:
        return False
    namespaces = rule_peer.get("namespaceSelector")
    in_namespace = (
        peer.namespace == policy_namespace
        if namespaces is None
        else labels_match(namespaces, {"kubernetes.io/metadata.name": peer.namespace})
    )
    pods = rule_peer.get("podSelector")
    return in_namespace and (pods is None or labels_match(pods, peer.labels))


def rule_allows(rule: dict[str, Any], peers_key: str, peer: Peer, port: int, ns: str) -> bool:
    ports = rule.get("ports")
    if ports and not any(p.get("port") == port for p in ports):
        return False
    peers = rule.get(peers_key)
    return not peers or any(peer_matches(p, peer, ns) for p in peers)


def selecting_policies(
    docs: list[Manifest], namespace: str, labels: Mapping[str, str], policy_type: str
) -> list[Manifest]:
    return [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and d["metadata"]["namespace"] == namespace
        and policy_type in d["spec"]["policyTypes"]
        and labels_match(d["spec"]["podSelector"], labels)
    ]


def allowed(docs: list[Manifest], pod: Peer, direction: str, other: Peer, port: int) -> bool:
    """Whether the policies let ``pod`` reach (Egress) or be reached by (Ingress) ``other``."""
    assert pod.namespace
    policies = selecting_policies(docs, pod.namespace, pod.labels, direction)
    assert policies, f"no {direction} policy isolates {pod}"
    rules_key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    return any(
        rule_allows(rule, peers_key, other, port, pod.namespace)
        for policy in policies
        for rule in policy["spec"].get(rules_key, [])
    )


def vpc_subnet(environment: str, index: int) -> ipaddress.IPv4Network:
    """Subnet ``index`` (/24) of an environment's VPC, numbered as modules/network numbers them."""
    tfvars = (REPO / f"infra/terraform/envs/{environment}.tfvars").read_text(encoding="utf-8")
    match = re.search(r'vpc_cidr\s*=\s*"([^"]+)"', tfvars)
    assert match
    return list(ipaddress.IPv4Network(match.group(1)).subnets(new_prefix=24))[index]


def bastion_address(environment: str) -> str:
    return str(vpc_subnet(environment, 0)[10])  # the public subnets are 0 and 1


def private_address(environment: str, zone: int = 0) -> str:
    return str(vpc_subnet(environment, 10 + zone)[10])  # nodes and DocumentDB: subnets 10, 11


def service_peer(docs: list[Manifest], host: str) -> Peer:
    """The pods behind a cluster DNS name (``<service>.<namespace>.svc...``); else an address."""
    parts = host.split(".")
    if len(parts) > 2 and parts[2] == "svc":
        service = next(
            (
                d
                for d in docs
                if d["kind"] == "Service"
                and d["metadata"]["name"] == parts[0]
                and d["metadata"]["namespace"] == parts[1]
            ),
            None,
        )
        assert service, f"{host} names no Service the charts render"
        return Peer(namespace=parts[1], labels=service["spec"]["selector"])
    return Peer(address=host)


def endpoints(
    docs: list[Manifest], component: str, env: dict[str, str], value_set: str
) -> list[tuple[str, Peer, int]]:
    """Everything a pod's configuration makes it connect to."""
    out = [("DNS", Peer("kube-system", {"k8s-app": "kube-dns"}), 53)]
    for server in env["CA4_KAFKA_BOOTSTRAP_SERVERS"].split(","):
        host, port = server.rsplit(":", 1)
        out.append(("Kafka", service_peer(docs, host), int(port)))
    if env.get("CA4_OTEL_EXPORTER") == "otlp":
        url = urlsplit(env["CA4_OTEL_ENDPOINT"])
        out.append(("trace collector", service_peer(docs, url.hostname or ""), url.port or 80))
    if "CA4_MONGO_URL" in env:  # a Secret: where it points is the deployment's choice
        if value_set == "prod":  # DocumentDB instances in both private subnets
            out += [("DocumentDB", Peer(address=private_address("prod", z)), 27017) for z in (0, 1)]
        elif any(d["kind"] == "Secret" and d["metadata"]["name"] == DEV_MONGO_SECRET for d in docs):
            # dev: the URL ca4-platform's MongoDB Secret holds (make ca4-deploy-app copies it)
            url = urlsplit(dev_mongo_url(docs))
            out.append(("MongoDB", service_peer(docs, url.hostname or ""), url.port or 27017))
        else:  # an in-cluster database in the platform namespace
            out.append(
                ("database", Peer("platform", {"app.kubernetes.io/name": "ferretdb"}), 27017)
            )
    if component == "worker":
        if env.get("CA4_S3_ENDPOINT_URL"):
            url = urlsplit(env["CA4_S3_ENDPOINT_URL"])
            out.append(("S3", service_peer(docs, url.hostname or ""), url.port or 443))
        else:
            out.append(("AWS S3", Peer(address=AWS_S3_ADDRESS), 443))
            out.append(("instance metadata (S3 credentials)", Peer(address=INSTANCE_METADATA), 80))
    return out


@pytest.mark.parametrize("component", sorted(SERVICE_SETTINGS))
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_network_policy_egress_covers_each_endpoint_and_nothing_broader(
    rendered: Rendered, value_set: str, component: str
) -> None:
    docs = rendered[("ca4-app", value_set)] + rendered[("ca4-platform", value_set)]
    deployment = app_deployment(rendered, value_set, component)
    pod = Peer("app", deployment["spec"]["template"]["metadata"]["labels"])
    needed = endpoints(docs, component, pod_env(docs, deployment), value_set)
    for what, peer, port in needed:
        assert allowed(docs, pod, "Egress", peer, port), f"{component} cannot reach {what}"
    for policy in selecting_policies(docs, "app", pod.labels, "Egress"):
        for rule in policy["spec"].get("egress", []):
            assert rule.get("ports"), f"{component}: an egress rule opens every port"
            for port in rule["ports"]:
                used = [
                    what
                    for what, peer, p in needed
                    if p == port["port"] and rule_allows(rule, "to", peer, p, "app")
                ]
                assert used, f"{component}: egress {rule} port {port['port']} serves no endpoint"
            ports = {p["port"] for p in rule["ports"]}
            for destination in rule.get("to", []):
                assert any(
                    p in ports and peer_matches(destination, peer, "app") for _, peer, p in needed
                ), f"{component}: egress to {destination} on {ports} serves no endpoint"
    assert not allowed(docs, pod, "Egress", Peer("monitoring", {}), 9090)
    if component == "processor":  # credentials for S3 are the worker's alone
        assert not allowed(docs, pod, "Egress", Peer(address=INSTANCE_METADATA), 80)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_kafka_accepts_clients_from_the_app_namespace_and_tunnels_from_the_bastion_only(
    rendered: Rendered, value_set: str
) -> None:
    docs = rendered[("ca4-platform", value_set)]
    kafka_sts = by_name(docs, "StatefulSet", "kafka")
    kafka = Peer("platform", kafka_sts["spec"]["template"]["metadata"]["labels"])
    ports = {p["name"]: p["containerPort"] for p in pod_spec(kafka_sts)["containers"][0]["ports"]}
    topics_job = next(d for d in docs if d["kind"] == "Job")
    clients = {
        "processor": Peer("app", {"app.kubernetes.io/name": "processor"}),
        "topic Job": Peer("platform", topics_job["spec"]["template"]["metadata"]["labels"]),
        "another broker": kafka,
    }
    for who, client in clients.items():
        assert allowed(docs, kafka, "Ingress", client, ports["internal"]), who
    strangers = {
        "Grafana": Peer("monitoring", {"app.kubernetes.io/name": "grafana"}),
        "a pod in default": Peer("default", {}),
        "a node (SNAT)": Peer(
            address=private_address(value_set if value_set != "default" else "dev")
        ),
    }
    for who, stranger in strangers.items():  # the tunnel listener first: it is the open door
        for name in sorted(ports, key=lambda n: n != "tunnel"):
            port = ports[name]
            assert not allowed(docs, kafka, "Ingress", stranger, port), f"{who} reaches {name}"
    if value_set == "default":  # no bastion subnet configured: nobody reaches the tunnel
        assert not allowed(docs, kafka, "Ingress", Peer(address="10.0.0.10"), ports["tunnel"])
    else:
        bastion = Peer(address=bastion_address(value_set))
        assert allowed(docs, kafka, "Ingress", bastion, ports["tunnel"])
        assert not allowed(docs, kafka, "Ingress", bastion, ports["internal"])
    for tunnel in (d for d in docs if d["metadata"]["name"].startswith("kafka-tunnel-")):
        assert tunnel["spec"]["externalTrafficPolicy"] == "Local", "SNAT would hide the bastion"


# --- The dev database: ca4-platform's MongoDB, where ca4-app's dev values look for it ----------


def test_dev_runs_the_database_the_app_expects_and_only_dev() -> None:
    """ENV=dev has no DocumentDB (envs/dev.tfvars): its platform values run MongoDB, prod's and
    the defaults do not."""
    tfvars = (REPO / "infra/terraform/envs/dev.tfvars").read_text(encoding="utf-8")
    assert re.search(r"^documentdb_enabled\s*=\s*false", tfvars, re.M)
    values = {
        value_set: yaml.safe_load((chart_dir("ca4-platform") / name).read_text(encoding="utf-8"))
        for value_set, name in [
            ("default", "values.yaml"),
            ("dev", "values-dev.yaml"),
            ("prod", "values-prod.yaml"),
        ]
    }
    assert values["default"]["mongodb"]["enabled"] is False
    assert values["dev"]["mongodb"]["enabled"] is True
    assert "mongodb" not in values["prod"]


def test_dev_mongo_url_reaches_the_rendered_mongodb_as_the_app_is_configured(
    rendered: Rendered,
) -> None:
    platform = rendered[("ca4-platform", "dev")]
    app = rendered[("ca4-app", "dev")]
    url = urlsplit(dev_mongo_url(platform))
    assert url.scheme == "mongodb"
    assert url.username == "ca4app", "the app's user"
    assert url.password, "with its password"
    assert dict(parse_qsl(url.query)) == {"authSource": "admin"}
    statefulset = by_name(platform, "StatefulSet", "mongodb")
    container = pod_spec(statefulset)["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    # The init script creates the app's user in admin, readWrite on the app's database.
    init = by_name(platform, "ConfigMap", "mongodb-init")["data"]["app-user.js"]
    assert 'getSiblingDB("admin")' in init
    assert 'role: "readWrite"' in init
    assert env["MONGO_INITDB_CA4_APP_USER"]["value"] == url.username
    app_config = by_name(app, "ConfigMap", "ca4-app-config")["data"]
    assert (
        env["MONGO_INITDB_CA4_DATABASE"]["value"]
        == url.path.lstrip("/")
        == app_config["CA4_MONGO_DB"]
    )
    for key in ("MONGO_INITDB_ROOT_PASSWORD", "MONGO_INITDB_CA4_APP_PASSWORD"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == DEV_MONGO_SECRET
    read = set(re.findall(r"process\.env\.([A-Z0-9_]+)", init))
    assert read <= set(env), f"the init script reads unset {sorted(read - set(env))}"
    # The image's entrypoint unsets MONGO_INITDB_* before it starts mongod for good.
    secret_env = [name for name, e in env.items() if "secretKeyRef" in e.get("valueFrom", {})]
    assert all(name.startswith("MONGO_INITDB_") for name in secret_env), secret_env
    service = by_name(platform, "Service", "mongodb")
    assert url.hostname == f"mongodb.{service['metadata']['namespace']}.svc.cluster.local"
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    assert {p["containerPort"] for p in container["ports"]} == {27017}
    assert statefulset["spec"]["volumeClaimTemplates"], "the data lives on a PVC"


def test_dev_mongodb_accepts_the_app_namespace_only(rendered: Rendered) -> None:
    docs = rendered[("ca4-app", "dev")] + rendered[("ca4-platform", "dev")]
    statefulset = by_name(docs, "StatefulSet", "mongodb")
    mongodb = Peer("platform", statefulset["spec"]["template"]["metadata"]["labels"])
    for component in sorted(SERVICE_SETTINGS):
        labels = app_deployment(rendered, "dev", component)["spec"]["template"]["metadata"]
        client = Peer("app", labels["labels"])
        assert allowed(docs, client, "Egress", mongodb, 27017), f"{component} cannot leave"
        assert allowed(docs, mongodb, "Ingress", client, 27017), f"{component} is not let in"
    strangers = {
        "Grafana": Peer("monitoring", {"app.kubernetes.io/name": "grafana"}),
        "Kafka": Peer("platform", {"app.kubernetes.io/name": "kafka"}),
        "a pod in default": Peer("default", {}),
        "a node": Peer(address=private_address("dev")),
    }
    for who, stranger in strangers.items():
        assert not allowed(docs, mongodb, "Ingress", stranger, 27017), f"{who} reaches MongoDB"
    assert not allowed(docs, mongodb, "Egress", Peer(address=AWS_S3_ADDRESS), 443)


# --- Ingress: exactly the public routes, each to the app that serves it -----------------------


@cache
def app_routes(component: str) -> frozenset[str]:
    """The routes an app serves: its OpenAPI paths, plus the SDK index (PEP 503, not JSON API,
    so left out of the OpenAPI document); /metrics is undocumented and private."""
    from ca4_processor.main import create_api
    from ca4_processor.ownership import SessionOwners
    from ca4_processor.publishing import EventPublisher
    from ca4_worker.main import create_app

    if component == "processor":  # routes only: nothing is published
        app = create_api(
            ProcessorSettings(),
            publisher=cast(EventPublisher, object()),
            session_owners=cast(SessionOwners, object()),
        )
    else:
        app = create_app(WorkerSettings())
    paths = set(app.openapi()["paths"])
    if component == "processor":
        from ca4_processor.api.routes.sdk import router as sdk_index

        paths |= {str(getattr(route, "path", "")) for route in sdk_index.routes}
    return frozenset(paths)


def prefix_matches(prefix: str, path: str) -> bool:
    """Kubernetes ``pathType: Prefix``: whole path elements only."""
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


# Operational routes: probes, metrics and API docs stay inside the cluster.
PRIVATE_ROUTES = (
    "/healthz",
    "/readyz",
    "/metrics",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/asyncapi",
)


def is_public(path: str) -> bool:
    return not any(prefix_matches(private, path) for private in PRIVATE_ROUTES)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_ingress_exposes_exactly_the_public_routes(rendered: Rendered, value_set: str) -> None:
    docs = rendered[("ca4-app", value_set)]
    # The reader is the worker's app with its consumers off: it serves the worker's routes.
    app_of = {"reader": "worker"}
    services = {
        d["metadata"]["name"]: app_of.get(name, name)
        for d in docs
        if d["kind"] == "Service"
        for name in [d["spec"]["selector"]["app.kubernetes.io/name"]]
    }
    (ingress,) = [d for d in docs if d["kind"] == "Ingress"]
    exposed = [
        (path["path"], services[path["backend"]["service"]["name"]])
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    routes = {component: app_routes(component) for component in SERVICE_SETTINGS}
    for component, paths in routes.items():
        for route in filter(is_public, paths):
            backends = {c for prefix, c in exposed if prefix_matches(prefix, route)}
            assert backends == {component}, f"{route} of the {component} is routed to {backends}"
    for prefix, component in exposed:
        assert is_public(prefix), f"{prefix} exposes more than the public API"
        reached = {r for r in routes[component] if prefix_matches(prefix, r)}
        assert reached, f"{prefix} -> {component} reaches none of its routes"


def test_the_notebook_reads_back_through_the_edge_url() -> None:
    notebook = json.loads((REPO / "sdk/notebooks/colab_quickstart.ipynb").read_text("utf-8"))
    code = "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    assert re.search(r"/v1/sessions", code), "the notebook reads its session back"
    sdk_reads = {
        name
        for path in sorted((REPO / "sdk/src").rglob("*.py"))
        for name in re.findall(r"\bCA4_[A-Z0-9_]+\b", path.read_text(encoding="utf-8"))
    }
    urls = {n for n in re.findall(r"\bCA4_[A-Z0-9_]+_URL\b", code) if n not in sdk_reads}
    assert not urls, f"one edge URL serves ingest and reads; the notebook also wants {urls}"


# --- DocumentDB: TLS with the CA bundle where the chart mounts it, no retryable writes ---------


def test_documentdb_ca_bundle_is_mounted_where_the_documented_url_points(
    rendered: Rendered,
) -> None:
    guide = (REPO / "docs/provisioning.md").read_text(encoding="utf-8")
    (documented,) = set(re.findall(r"`(mongodb://<user>[^`]*)`", guide))
    ca_file = re.search(r"tlsCAFile=([^&]+)", documented)
    assert ca_file, documented
    assert "retryWrites=false" in documented
    docs = rendered[("ca4-app", "prod")]
    users = [w for w in workloads(docs) if "CA4_MONGO_URL" in pod_env(docs, w)]
    assert users
    for workload in users:  # every pod that connects to the database verifies its certificate
        spec = pod_spec(workload)
        mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0].get("volumeMounts", [])}
        files = {
            f"{mounts[volume['name']]}/{item['path']}"
            for volume in spec["volumes"]
            if "configMap" in volume and volume["name"] in mounts
            for item in volume["configMap"].get("items", [])
        }
        assert ca_file.group(1) in files, (
            f"{workload['metadata']['name']}: the guide's tlsCAFile {ca_file.group(1)} is not "
            f"mounted (mounted: {files}); TLS to DocumentDB cannot verify its certificate"
        )


# --- Runbooks: the commands, names, log queries and error classes they give are real ----------

RUNBOOKS = OBSERVABILITY / "runbooks.md"
NUMBER_WORDS = {"seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}
WORKLOAD_REFERENCES = {"deploy": "Deployment", "deployment": "Deployment", "sts": "StatefulSet"}
WORKLOAD_REFERENCES["statefulset"] = "StatefulSet"


def runbook_code() -> list[str]:
    """Every inline code span of the runbooks, a span broken over lines joined with spaces."""
    text = RUNBOOKS.read_text(encoding="utf-8")
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", text)]


def runbook_section(alert: str) -> str:
    text = RUNBOOKS.read_text(encoding="utf-8")
    match = re.search(rf"^## {alert}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"runbooks.md has no section {alert}"
    return match.group(1)


def runbook_log_queries() -> list[str]:
    """The LogQL queries the runbooks give (a stream selector on the services' labels)."""
    return [span for span in runbook_code() if re.match(r"\{\s*service\s*=", span)]


def _walk(command: Any, words: list[str], where: str) -> None:
    """``words`` name subcommands of ``command`` and then its options (values, arguments and
    placeholders such as ``CLASS`` or ``<partition:offset>`` are not checked)."""
    words = [word.strip("[]") for word in words if word.strip("[]")]
    while words and words[0] in getattr(command, "commands", {}):
        command = command.commands[words.pop(0)]
    subcommands = getattr(command, "commands", {})
    if words and subcommands and not words[0].startswith("-"):
        # A group takes a subcommand next; ``a|b|c`` names alternatives.
        unknown = [name for name in words[0].split("|") if name not in subcommands]
        assert not unknown, f"{where}: {command.name} has no subcommand {', '.join(unknown)}"
    options = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}
    options |= {"--help"}  # click adds it to every command outside ``params``
    for word in words:
        if word.startswith("-"):
            assert word.split("=")[0] in options, f"{where}: {command.name} has no {word}"


def _check_ca4_commands(commands: list[str]) -> int:
    """Walk every ``ca4 ...`` (or the worker image's ``dlq_app()``) command; how many there were."""
    root = typer.main.get_command(ca4_cli)
    dlq = typer.main.get_command(dlq_app)
    checked = 0
    for span in commands:
        words = span.split()
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
            words = words[1:]  # NAME=value before the command
        if words[:2] == ["uv", "run"]:
            words = words[2:]
        if words[:1] == ["ca4"]:
            _walk(root, words[1:], span)
            checked += 1
        elif "dlq_app()'" in words:  # the worker image's own entry to `ca4 dlq`
            _walk(dlq, words[words.index("dlq_app()'") + 1 :], span)
            checked += 1
    return checked


def test_runbook_ca4_commands_exist_with_their_options() -> None:
    assert _check_ca4_commands(runbook_code()) >= 8


USER_DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def doc_shell_commands(text: str) -> list[str]:
    """The simple commands of a doc: each inline code span, and each line of its fenced blocks
    (``\\``-continued lines joined, ``#`` comments dropped), split at ``;``, ``&&``, ``||``, a
    spaced ``|`` and ``$(`` (an unspaced ``a|b`` names alternatives)."""
    parts = text.split("```")
    lines = re.findall(r"`([^`]+)`", " ".join(parts[::2]))
    for block in parts[1::2]:
        body = block.split("\n", 1)[1] if "\n" in block else ""
        lines += re.sub(r"\\\n", " ", body).splitlines()
    commands = []
    for line in lines:
        code = re.sub(r"(^|\s)#.*", "", " ".join(line.split()))
        commands += [c.strip() for c in re.split(r";|&&|\|\||\s\|\s|\$\(", code) if c.strip()]
    return commands


def test_documented_ca4_commands_exist_with_their_options() -> None:
    """Each ``ca4`` command the README and the guides give, its subcommands and its options,
    against the real CLI (what a user pastes must parse)."""
    checked = {
        doc.name: _check_ca4_commands(doc_shell_commands(doc.read_text(encoding="utf-8")))
        for doc in USER_DOCS
    }
    assert checked["README.md"] >= 10, checked
    assert checked["architecture.md"] >= 10, checked
    assert checked["provisioning.md"] >= 5, checked


def test_runbook_kubectl_commands_name_what_the_charts_render(rendered: Rendered) -> None:
    """Namespaces, workloads, pods and containers as the prod charts render them."""
    docs = rendered[("ca4-app", "prod")] + rendered[("ca4-platform", "prod")]
    namespaces = {d["metadata"].get("namespace") for d in docs}
    by_ref = {
        (d["metadata"]["namespace"], d["kind"], d["metadata"]["name"]): d for d in workloads(docs)
    }
    pods = {
        (namespace, f"{name}-{ordinal}"): workload
        for (namespace, kind, name), workload in by_ref.items()
        if kind == "StatefulSet"
        for ordinal in range(int(workload["spec"].get("replicas", 1)))
    }
    commands = [span for span in runbook_code() if span.startswith("kubectl ")]
    assert len(commands) >= 10
    for command in commands:
        words = command.split(" -- ")[0].split()
        assert "-n" in words, f"{command}: no namespace"
        namespace = words[words.index("-n") + 1]
        assert namespace in namespaces, f"{command}: no namespace {namespace}"
        selector = words[words.index("-l") + 1] if "-l" in words else None
        verb, *rest = [
            w
            for i, w in enumerate(words[1:], 1)
            if words[i - 1] not in {"-n", "-l"} and w not in {"-n", "-l"}
        ]
        workload = None
        if selector is not None:
            key, value = selector.split("=", 1)
            selected = [
                d
                for (ns, _, _), d in by_ref.items()
                if ns == namespace and d["spec"]["template"]["metadata"]["labels"].get(key) == value
            ]
            assert len(selected) == 1, f"{command}: {selector} selects {len(selected)} workloads"
            workload = selected[0]
        for word in rest:
            if "/" in word:
                kind, name = word.split("/", 1)
                workload = by_ref.get((namespace, WORKLOAD_REFERENCES[kind], name))
                assert workload, f"{command}: no {word} in {namespace}"
        if verb in {"exec", "logs"} and workload is None:  # a pod by name
            pod = next(w for w in rest if not w.startswith("-"))
            if pod == "<pod>":  # the reader picks it: the container must be one of the namespace
                container = words[words.index("-c") + 1]
                holding = [
                    d
                    for (ns, _, _), d in by_ref.items()
                    if ns == namespace
                    and container in {c["name"] for c in pod_spec(d)["containers"]}
                ]
                assert holding, f"{command}: no container {container} in {namespace}"
                continue
            workload = pods.get((namespace, pod))
            assert workload, f"{command}: no pod {pod} in {namespace}"
        if "-c" in words:
            container = words[words.index("-c") + 1]
            assert workload is not None, command
            spec = pod_spec(workload)
            names = [c["name"] for c in spec["containers"] + spec.get("initContainers", [])]
            assert container in names, f"{command}: no container {container} (only {names})"


def test_runbook_log_queries_select_events_the_services_log_at_that_level() -> None:
    queries = runbook_log_queries()
    selected: set[tuple[str, str]] = set()
    for query in queries:
        labels = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', query.split("}")[0]))
        event = re.search(r'event\s*=\s*"([^"]+)"', query)
        if event is None:
            continue
        service = labels["service"]
        sources = [*(REPO / "services" / service / "src").rglob("*.py")]
        sources += [*(REPO / "libs").glob("*/src/**/*.py")]
        level = labels.get("level", r"\w+")
        level = "(?:error|exception)" if level == "error" else level
        call = re.compile(rf'log\.{level}\(\s*"{re.escape(event.group(1))}"')
        assert any(call.search(path.read_text(encoding="utf-8")) for path in sources), (
            f"{query}: the {service} never logs {event.group(1)!r} at {labels.get('level')}"
        )
        selected.add((service, event.group(1)))
    # Both ways the ingest routes answer 503 for a dependency (the alert's first question).
    assert {("processor", "ingest.unavailable"), ("processor", "ingest.ownership_unavailable")} <= (
        selected
    )


def test_runbook_names_every_dead_letter_class_and_no_other() -> None:
    section = runbook_section("CA4DeadLettersGrowing")
    named = set(re.findall(r"`([a-z_]+)`", section))
    assert set(DEAD_LETTER_CLASSES) <= named, set(DEAD_LETTER_CLASSES) - named
    staged = {name for name in named if re.match(r"(store|projection)_", name)}
    assert staged <= set(DEAD_LETTER_CLASSES), staged - set(DEAD_LETTER_CLASSES)


def test_runbook_counts_the_checks_ca4_verify_runs() -> None:
    text = RUNBOOKS.read_text(encoding="utf-8")
    (word,) = re.findall(r"runs the (\w+) end-to-end checks", text)
    assert NUMBER_WORDS[word] == len(STEPS)
