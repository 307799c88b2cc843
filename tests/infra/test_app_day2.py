"""ca4-app on day 2: what an upgrade of a live release must keep. Switching the processor's
autoscaling on must not drop the running Deployment to one pod before the autoscaler acts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.infra.conftest import render_with_lookups, values_args
from tests.infra.test_links import by_name

pytestmark = pytest.mark.stand_in(
    "helm upgrade against a live release: no Kubernetes here; ran instead: helm template with the "
    "chart's lookups swapped for the live objects"
)

LIVE_DEPLOYMENT_LOOKUP = (
    'lookup "apps/v1" "Deployment" $root.Release.Namespace (include "ca4-app.componentName" .)'
)


def processor_replicas(helm: str, tmp_path: Path, live: int | None, *args: str) -> object:
    """The processor Deployment's ``replicas`` as rendered with the live Deployment running
    ``live`` pods (None: a first install)."""
    answers = {}
    if live is not None:
        answers[LIVE_DEPLOYMENT_LOOKUP] = f'(dict "spec" (dict "replicas" {live}))'
    prod = values_args("ca4-app", "prod")
    result = render_with_lookups(helm, "ca4-app", tmp_path, answers, *prod, *args)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    return by_name(docs, "Deployment", "ca4-app-processor")["spec"].get("replicas")


def test_an_autoscaled_processor_keeps_the_replicas_it_runs(helm: str, tmp_path: Path) -> None:
    """A manifest without ``replicas`` made Helm's three-way merge delete the field when
    autoscaling was switched on (or on any upgrade after a manual scale), and the Deployment
    fell to one pod until the autoscaler acted."""
    assert processor_replicas(helm, tmp_path / "live", 5) == 5


def test_a_first_autoscaled_install_starts_at_the_minimum(helm: str, tmp_path: Path) -> None:
    minimum = ("--set", "processor.autoscaling.minReplicas=3")
    assert processor_replicas(helm, tmp_path, None, *minimum) == 3


def test_without_autoscaling_the_values_decide(helm: str, tmp_path: Path) -> None:
    fixed = ("--set", "processor.autoscaling.enabled=false", "--set", "processor.replicaCount=4")
    assert processor_replicas(helm, tmp_path, 5, *fixed) == 4
