"""What the tier cannot run here, checked at the config level, and a guard that nothing new slips
by: every workload of both charts (dev and prod values) either maps to a local program, with its
env and volumes resolvable, or is listed as only checked, with why."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy import tier
from tests.deploy.cluster import LocalCluster, Manifest, find
from tests.deploy.conftest import render
from tests.deploy.images import ImageMap, UnmappedImageError, split_reference
from tests.infra import test_helm, test_links
from tests.infra.conftest import Rendered, pod_spec, workloads
from tests.support import alloy

pytestmark = [pytest.mark.deploy]

# Images with no local program, and why; their configs are checked by the tests below.
NOT_RUNNABLE = {
    "grafana": "no Grafana binary in Debian or on a package registry this tier may use",
    "loki": "no Loki binary in Debian (Go module build not attempted: minutes of CPU)",
    "alloy": "not installable here (the Go proxy refuses github.com/grafana/alloy, no Debian "
    "package); tails pods through the Kubernetes API",
    "mongo": "dev values only (ca4-platform mongodb); no mongod binary in Debian; the tier's "
    "database is the dev stack's FerretDB",
}
VALUE_SETS = ["dev", "prod"]


def _service_ports(docs: list[Manifest]) -> dict[str, set[int]]:
    """``<svc>.<ns>.svc.cluster.local`` -> the ports of every rendered Service."""
    return {
        f"{d['metadata']['name']}.{d['metadata']['namespace']}.svc.cluster.local": {
            p["port"] for p in d["spec"]["ports"]
        }
        for d in docs
        if d["kind"] == "Service"
    }


@pytest.mark.parametrize("value_set", VALUE_SETS)
@pytest.mark.parametrize("chart", ["ca4-app", "ca4-platform"])
async def test_every_workload_maps_to_a_local_program_or_is_listed(
    helm: str, tmp_path: Path, podnet: Path, chart: str, value_set: str
) -> None:
    docs = render(helm, chart, value_set)
    cluster = LocalCluster(tmp_path, list(docs), ImageMap(tmp_path), podnet, address_block=0)
    cluster.add(tier.operator_objects("not-a-real-key", "mongodb://127.0.0.1:27017"))
    cluster.add(tier.alertmanager_receivers(list(docs), "http://127.0.0.1:9"))
    for workload in workloads(docs):
        for pod in cluster.plan(workload, replicas=1):
            runnable = True
            for container in [*pod.spec.get("initContainers", []), pod.container]:
                try:
                    image = await cluster.images.resolve(container["image"])
                except UnmappedImageError:
                    name, _ = split_reference(container["image"])
                    where = f"{workload['metadata']['name']}/{container['name']}"
                    assert name in NOT_RUNNABLE, f"{where}: {name} is new"
                    runnable = False
                    continue
                env = cluster.env(pod, image, container)  # every valueFrom/envFrom resolves
                assert env["HOSTNAME"] == pod.name
            if not runnable:
                continue
            for volume in pod_spec(workload).get("volumes", []):
                if "configMap" in volume:
                    assert cluster.configmap(pod.namespace, volume["configMap"]["name"]) is not None
                if "secret" in volume:
                    assert cluster.secret(pod.namespace, volume["secret"]["secretName"]) is not None


def test_grafana_panels_find_their_datasources(rendered: Rendered) -> None:
    test_links.test_dashboard_datasource_uids_exist_in_every_provisioning(rendered)
    for value_set in VALUE_SETS:
        docs = rendered[("ca4-platform", value_set)]
        services = _service_ports(docs)
        provisioning = find(docs, "ConfigMap", "grafana-provisioning")["data"]
        sources = [
            source
            for text in provisioning.values()
            for source in (yaml.safe_load(text) or {}).get("datasources", [])
        ]
        assert {s["uid"] for s in sources} >= {"ca4-prometheus", "ca4-loki"}, sources
        for source in sources:
            url = urlsplit(source["url"])
            assert url.port in services.get(url.hostname or "", set()), source["url"]
    tier.passed("grafana")


def test_alloy_ships_to_the_rendered_loki_with_the_filtered_labels(rendered: Rendered) -> None:
    test_links.test_every_filtered_log_label_is_produced_by_every_log_pipeline(rendered)
    for value_set in VALUE_SETS:
        docs = rendered[("ca4-platform", value_set)]
        config = alloy.parse(find(docs, "ConfigMap", "alloy-config")["data"]["config.alloy"])
        writers = [
            block for key, block in alloy.components(config).items() if key.startswith("loki.write")
        ]
        loki = find(docs, "Service", "loki")
        loki_ports = {p["port"] for p in loki["spec"]["ports"]}
        assert writers, "Alloy writes to no Loki"
        for endpoint in (item for writer in writers for item in writer.children("endpoint")):
            url = urlsplit(endpoint.attributes["url"])
            assert url.hostname == f"loki.{loki['metadata']['namespace']}.svc.cluster.local"
            assert url.port in loki_ports
            assert url.path == "/loki/api/v1/push"
        loki_config = yaml.safe_load(find(docs, "ConfigMap", "loki-config")["data"]["loki.yaml"])
        assert loki_config["server"]["http_listen_port"] in loki_ports
    tier.passed("loki / alloy")


def test_dev_mongodb_is_what_the_dev_app_reaches(rendered: Rendered) -> None:
    test_links.test_dev_runs_the_database_the_app_expects_and_only_dev()
    test_links.test_dev_mongo_url_reaches_the_rendered_mongodb_as_the_app_is_configured(rendered)
    test_links.test_dev_mongodb_accepts_the_app_namespace_only(rendered)
    tier.passed("mongodb (StatefulSet, dev)")


def test_trace_export_is_off_in_prod_or_reaches_a_collector(rendered: Rendered) -> None:
    test_links.test_trace_exporter_reaches_a_deployed_collector_over_its_protocol(rendered)
    prod = find(rendered[("ca4-app", "prod")], "ConfigMap", "ca4-app-config")["data"]
    assert prod["CA4_OTEL_EXPORTER"] == "none"
    tier.passed("otel collector")


def test_manifests_are_valid_for_the_targeted_kubernetes(rendered: Rendered) -> None:
    for chart in ("ca4-app", "ca4-platform"):
        for value_set in VALUE_SETS:
            test_helm.test_manifests_validate_against_kubernetes_schema(rendered, chart, value_set)
    tier.passed("K3s (API server, kubelet, NetworkPolicy, Ingress)")
