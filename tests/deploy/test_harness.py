"""The pod runner itself: what a pod sees, its own address, and nothing left behind."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.cluster import LocalCluster, PodFailedError
from tests.deploy.conftest import claimed_block
from tests.deploy.images import ImageMap

pytestmark = [pytest.mark.deploy]

MOUNT = "/etc/ca4-deploy-tier-check"
INIT_MOUNT = "/etc/ca4-deploy-tier-init-check"
# Serves what the pod sees: its mounted ConfigMap, its env, its hostname, how it resolves names.
SERVER = """
import json, os, socket
from http.server import BaseHTTPRequestHandler, HTTPServer
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        seen = {
            "config": open("/etc/ca4-deploy-tier-check/greeting").read(),
            "namespace": os.environ["POD_NAMESPACE"],
            "from_config_map": os.environ["GREETING"],
            "hostname": socket.gethostname(),
            "own_name": socket.gethostbyname(os.environ["HOSTNAME"]),
            "service": socket.gethostbyname("probe.checks.svc.cluster.local"),
            "short_service": socket.gethostbyname("probe"),
        }
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"""


def manifests() -> list[dict[str, Any]]:
    """A Deployment with a ConfigMap volume, fieldRef and configMapKeyRef env, and a Service."""
    labels = {"app.kubernetes.io/name": "probe"}
    image = f"ghcr.io/ca4-project/ca4-processor:{importlib.metadata.version('ca4-processor')}"
    config = {
        "kind": "ConfigMap",
        "metadata": {"name": "probe-config", "namespace": "checks"},
        "data": {"greeting": "hello from the ConfigMap"},
    }
    service = {
        "kind": "Service",
        "metadata": {"name": "probe", "namespace": "checks"},
        "spec": {"selector": labels, "ports": [{"port": 8080}]},
    }
    container = {
        "name": "probe",
        "image": image,
        "command": ["python", "-c", SERVER],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
        "env": [
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {
                "name": "GREETING",
                "valueFrom": {"configMapKeyRef": {"name": "probe-config", "key": "greeting"}},
            },
        ],
        "volumeMounts": [{"name": "config", "mountPath": MOUNT, "readOnly": True}],
    }
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "probe", "namespace": "checks"},
        "spec": {
            "replicas": 1,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {"name": "probe-config"}}],
                },
            },
        },
    }
    return [config, service, deployment]


def host_sees(path: str) -> list[str] | None:
    """What the test's own (host) mount namespace has at ``path``: None if nothing."""
    folder = Path(path)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else None


@pytest.fixture
def own_block() -> Iterator[int]:
    """A block of its own: the session's is the prod platform's, whose kafka-0 is 127.0.<b>.1."""
    with claimed_block() as block:
        yield block


async def test_a_pod_sees_its_volumes_env_names_and_own_address(
    tmp_path: Path, podnet: Path, own_block: int
) -> None:
    docs = manifests()
    cluster = LocalCluster(tmp_path, docs, ImageMap(tmp_path), podnet, address_block=own_block)
    (pod,) = cluster.plan(docs[2])
    try:
        await cluster.start(pod)
        await cluster.wait_ready(pod, within_s=30)
        async with httpx.AsyncClient(timeout=5) as http:
            seen = (await http.get(f"http://{pod.address}:8080/")).json()
            # The wildcard bind moved to the pod's address: 127.0.0.1:8080 is not the pod (a CI
            # agent of the host may answer there).
            try:
                elsewhere = (await http.get("http://127.0.0.1:8080/")).content
            except httpx.ConnectError:
                elsewhere = b""
            assert b"hello from the ConfigMap" not in elsewhere
        assert seen == {
            "config": "hello from the ConfigMap",
            "namespace": "checks",
            "from_config_map": "hello from the ConfigMap",
            "hostname": "probe-0",
            "own_name": pod.address,
            "service": pod.address,
            "short_service": pod.address,
        }
        assert not host_sees(MOUNT)  # mounted inside the pod only (absent or empty here)
    finally:
        await cluster.close()
    assert pod.process is not None
    assert pod.process.returncode is not None
    assert host_sees(MOUNT) is None  # the mount point the pod needed is gone with it


def append_step(word: str) -> str:
    """A Python step that appends a word to the file the init containers share."""
    return f"open('{INIT_MOUNT}/steps', 'a').write('{word} ')"


def job_with_init_containers(*steps: str) -> dict[str, Any]:
    """A Job whose init containers each run one Python step, then a container that checks what
    they left in the emptyDir they all mount."""
    image = f"ghcr.io/ca4-project/ca4-processor:{importlib.metadata.version('ca4-processor')}"
    shared = [{"name": "shared", "mountPath": INIT_MOUNT}]

    def container(name: str, code: str) -> dict[str, Any]:
        return {
            "name": name,
            "image": image,
            "command": ["python", "-c", code],
            "volumeMounts": shared,
        }

    return {
        "kind": "Job",
        "metadata": {"name": "init-check", "namespace": "checks"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {},
                "spec": {
                    "initContainers": [container(f"step-{i}", s) for i, s in enumerate(steps)],
                    "containers": [
                        container(
                            "check",
                            f"assert open('{INIT_MOUNT}/steps').read() == 'first second ', 'order'",
                        )
                    ],
                    "volumes": [{"name": "shared", "emptyDir": {}}],
                },
            },
        },
    }


async def test_init_containers_run_first_in_order_sharing_the_pod_volumes(
    tmp_path: Path, podnet: Path, own_block: int
) -> None:
    job = job_with_init_containers(append_step("first"), append_step("second"))
    cluster = LocalCluster(tmp_path, [job], ImageMap(tmp_path), podnet, address_block=own_block)
    try:
        await cluster.run_job(job, within_s=60)
    finally:
        await cluster.close()
    assert host_sees(INIT_MOUNT) is None


async def test_a_failing_init_container_fails_the_pod_before_its_container_starts(
    tmp_path: Path, podnet: Path, own_block: int
) -> None:
    job = job_with_init_containers(append_step("first"), "raise SystemExit(3)")
    cluster = LocalCluster(tmp_path, [job], ImageMap(tmp_path), podnet, address_block=own_block)
    try:
        with pytest.raises(PodFailedError, match="init container step-1 exited 3"):
            await cluster.run_job(job, within_s=60)
    finally:
        await cluster.close()
    log = (tmp_path / "pods" / "checks" / "init-check-0" / "log").read_text()
    assert "--- container check ---" not in log
