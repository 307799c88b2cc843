"""A stand-in for Prometheus' Kubernetes pod discovery: the tier's own pods as file_sd targets.

Debian's Prometheus is built without ``kubernetes_sd_configs`` (and there is no API server to ask),
so the rendered config's pod job gets ``file_sd_configs`` instead, listing one target per
container port of each running pod with the ``__meta_kubernetes_pod_*`` labels Kubernetes
discovery would attach. The job's relabel rules then run unchanged: whether they keep the right
pods and name the right jobs is what the tier checks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.cluster import LocalCluster, Manifest, Pod

_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def _label(name: str) -> str:
    return _UNSAFE.sub("_", name)


def pod_targets(cluster: LocalCluster) -> list[dict[str, Any]]:
    """What role ``pod`` discovery would return for every running pod (one per container port)."""
    groups = []
    for pod in cluster.pods:
        if pod.process is None or pod.process.returncode is not None or not pod.spec:
            continue
        groups += [_group(pod, port) for port in pod.container.get("ports", [])]
    return groups


def _group(pod: Pod, port: Manifest) -> dict[str, Any]:
    labels = {
        "__meta_kubernetes_namespace": pod.namespace,
        "__meta_kubernetes_pod_name": pod.name,
        "__meta_kubernetes_pod_ip": pod.address,
        "__meta_kubernetes_pod_container_name": pod.container["name"],
        "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
        "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
        "__meta_kubernetes_pod_ready": "true",
    }
    for key, value in pod.labels.items():
        labels[f"__meta_kubernetes_pod_label_{_label(key)}"] = value
    for key, value in (pod.annotations or {}).items():
        labels[f"__meta_kubernetes_pod_annotation_{_label(key)}"] = value
    return {"targets": [f"{pod.address}:{port['containerPort']}"], "labels": labels}


def with_file_discovery(config_text: str, targets_file: Path) -> str:
    """The rendered config with its pod discovery swapped for ``targets_file``."""
    config = yaml.safe_load(config_text)
    jobs = [job for job in config["scrape_configs"] if "kubernetes_sd_configs" in job]
    for job in jobs:
        assert job["kubernetes_sd_configs"] == [{"role": "pod"}], job["job_name"]
        del job["kubernetes_sd_configs"]
        job["file_sd_configs"] = [{"files": [str(targets_file)], "refresh_interval": "5s"}]
    return yaml.safe_dump(config, sort_keys=False)


def write_targets(cluster: LocalCluster, targets_file: Path) -> None:
    """Write (or refresh) the discovered targets."""
    targets_file.write_text(json.dumps(pod_targets(cluster), indent=1), encoding="utf-8")
