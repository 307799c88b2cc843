"""The Helm versions the infra tests render with, built once with ``go install`` into the cache.

``make test`` builds them before pytest (``python -m tests.infra.helm_builds``): a first build
takes minutes on two cores, longer than one test may run, and a session fixture's failure
fails every test that uses it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HELM_VERSION = "v3.21.4"
HELM4_VERSION = "v4.3.1"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ca4-infra"
BUILD_TIMEOUT_S = 1800


class HelmBuildError(RuntimeError):
    """Helm is not cached and could not be built."""


def go_installed_helm(version: str) -> str:
    """Path of helm ``version``, built with ``go install`` into the cache when missing."""
    cached = CACHE / f"helm-{version}" / "helm"
    if cached.exists():
        return str(cached)
    module = f"helm.sh/helm/{version.split('.', maxsplit=1)[0]}/cmd/helm@{version}"
    go = shutil.which("go")
    if go is None:
        raise HelmBuildError(
            f"helm {version} is not cached at {cached} and `go` is not on PATH to build it: "
            f"install Go, or run `GOBIN={cached.parent} go install {module}`"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [go, "install", module],
        env={**os.environ, "GOBIN": str(cached.parent), "GOFLAGS": "-mod=mod"},
        capture_output=True,
        text=True,
        check=False,
        timeout=BUILD_TIMEOUT_S,
    )
    if result.returncode != 0 or not cached.exists():
        raise HelmBuildError(f"go install {module} failed:\n{result.stderr[-3000:]}")
    return str(cached)


def main() -> int:
    """Build every version the tests use; say where each is, or why one is missing."""
    for version in (HELM_VERSION, HELM4_VERSION):
        try:
            print(f"helm {version}: {go_installed_helm(version)}")
        except (HelmBuildError, subprocess.TimeoutExpired) as error:
            print(f"helm {version}: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
