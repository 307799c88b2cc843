"""The app chart's configuration, as the services read it: every value set's ConfigMap and plain
environment must build each service's settings and open its clients, as a pod starting from
that render would (a chart that wrote an empty ``CA4_S3_ENDPOINT_URL`` crashed the worker at
start on AWS, where no endpoint is set)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from ca4_processor.core.config import Settings as ProcessorSettings
from ca4_worker.core.config import Settings as WorkerSettings
from ca4_worker.persistence.s3 import S3ObjectStore

from tests.infra.conftest import VALUE_SETS, pod_spec, workloads


def _pod_environment(docs: list[Any], name: str) -> dict[str, str]:
    """The plain environment a service's container starts with: its ConfigMap, then its own
    ``env`` values (Secret references are left out: the test sets a stand-in URL)."""
    config_maps = {
        doc["metadata"]["name"]: doc.get("data", {}) for doc in docs if doc["kind"] == "ConfigMap"
    }
    (deployment,) = [
        doc
        for doc in workloads(docs)
        if doc["metadata"]["labels"]["app.kubernetes.io/name"] == name
    ]
    container = pod_spec(deployment)["containers"][0]
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        environment |= config_maps[source["configMapRef"]["name"]]
    environment |= {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return environment


@pytest.fixture
def pod_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Replace this process's ``CA4_*`` environment with a pod's, with stand-ins for what
    Secrets give it (the database URL, the mounted keys file)."""
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(f"ops:{hashlib.sha256(b'a key').hexdigest()}:acme\n")

    def apply(environment: dict[str, str]) -> None:
        for name in [name for name in os.environ if name.startswith("CA4_")]:
            monkeypatch.delenv(name)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("CA4_MONGO_URL", "mongodb://stand-in:27017")
        if "CA4_API_KEYS_FILE" in environment:
            monkeypatch.setenv("CA4_API_KEYS_FILE", str(keys_file))

    return apply


@pytest.mark.parametrize("value_set", VALUE_SETS)
async def test_the_worker_starts_its_clients_from_the_rendered_configuration(
    rendered: Any, value_set: str, pod_environment: Any
) -> None:
    environment = _pod_environment(rendered[("ca4-app", value_set)], "worker")
    pod_environment(environment)

    settings = WorkerSettings()
    async with S3ObjectStore.from_settings(settings):
        pass

    assert settings.s3_endpoint_url == (environment.get("CA4_S3_ENDPOINT_URL") or None)
    assert settings.otel_endpoint == (environment.get("CA4_OTEL_ENDPOINT") or None)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_the_processor_reads_the_rendered_configuration(
    rendered: Any, value_set: str, pod_environment: Any
) -> None:
    pod_environment(_pod_environment(rendered[("ca4-app", value_set)], "processor"))

    settings = ProcessorSettings()

    assert settings.KAFKA_TOPIC == "gpu-metadata"
    assert settings.ENVIRONMENT in {"dev", "prod"}


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CA4_S3_ENDPOINT_URL",
        "CA4_S3_ACCESS_KEY_ID",
        "CA4_OTEL_ENDPOINT",
        "CA4_LOG_LEVEL",
    ):
        monkeypatch.setenv(name, "")

    worker, processor = WorkerSettings(), ProcessorSettings()

    assert (worker.s3_endpoint_url, worker.s3_access_key_id, worker.otel_endpoint) == (
        None,
        None,
        None,
    )
    assert (worker.log_level, processor.LOG_LEVEL, processor.OTEL_ENDPOINT) == (
        "INFO",
        "INFO",
        None,
    )
