"""``ca4 verify --target local`` as the README and docker-compose.yml's header give it: through the
edge, with Grafana's user/password login and the archive bucket set, against the dev stack with
the real Prometheus scraping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ca4_worker.core.config import Settings as WorkerSettings

from tests.integration.observability.conftest import Pipeline
from tests.support import grafana
from tests.support.edge import local_edge
from tests.support.ports import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.mongo, pytest.mark.prometheus, pytest.mark.e2e]

CA4 = Path(sys.executable).with_name("ca4")
GRAFANA_USER = "admin"
GRAFANA_PASSWORD = "grafana-admin-password"  # the README's "$GRAFANA_ADMIN_PASSWORD"
README = Path(__file__).resolve().parents[3] / "README.md"


@pytest.fixture
def edge(pipeline: Pipeline) -> Iterator[str]:
    """The dev edge (what ``make dev`` serves on 8002) in front of the pipeline's apps."""
    with local_edge({"processor": pipeline.processor_url, "worker": pipeline.worker_url}) as url:
        yield url


def archive_bucket() -> str:
    """The bucket the pipeline's worker archives to (the dev stack's, from ``devstack env``)."""
    return os.environ.get("CA4_S3_BUCKET") or str(WorkerSettings.model_fields["s3_bucket"].default)


def run_verify(env: dict[str, str], *args: str, timeout: float) -> tuple[int, dict[str, Any], str]:
    result = subprocess.run(
        [CA4, "verify", *args, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"ca4 verify printed no report (exit {result.returncode}):\n{result.stderr}")
    return result.returncode, report, result.stderr


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.stand_in(
    "ca4 verify --target local against docker compose's Grafana and Loki: no Docker engine here "
    "and the dev stack runs neither; ran instead: the real command through the dev edge (its "
    "EdgeProxy, not compose's nginx) to the processor and worker on the dev stack's Kafka, "
    "database, Prometheus and MinIO archive bucket, with Grafana's admin user/password login "
    "answered by a stub of /api/health and /api/search; Loki not run (step 8 reports "
    "'not deployed')"
)
def test_verify_local_as_documented_passes_through_the_edge(edge: str, pipeline: Pipeline) -> None:
    readme = README.read_text(encoding="utf-8")
    documented = 'CA4_GRAFANA_USER=admin CA4_GRAFANA_PASSWORD="$GRAFANA_ADMIN_PASSWORD"'
    assert f"{documented} \\\n  uv run ca4 verify --target local\n" in readme
    assert httpx.get(f"{edge}/healthz").status_code == 404, "the edge answers, not the processor"
    services = pipeline.endpoints
    bucket = archive_bucket()
    with grafana.stub_grafana(grafana.basic(GRAFANA_USER, GRAFANA_PASSWORD)) as stub:
        env = {
            **os.environ,
            # Where the README's command finds each piece on compose's ports, here on ours.
            "CA4_EDGE_API_URL": edge,
            "CA4_WORKER_URL": pipeline.worker_url,
            "CA4_KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap_servers,
            "CA4_MONGO_URL": services.mongo_url,
            "CA4_MONGO_DB": pipeline.mongo_db,
            "CA4_PROMETHEUS_URL": pipeline.prometheus_url,
            "CA4_GRAFANA_URL": stub.url,
            "CA4_GRAFANA_USER": GRAFANA_USER,
            "CA4_GRAFANA_PASSWORD": GRAFANA_PASSWORD,
            # Nothing listens here: the dev stack runs no Loki.
            "CA4_LOKI_URL": f"http://127.0.0.1:{free_port()}",
            "CA4_S3_BUCKET": bucket,
            "CA4_S3_ENDPOINT_URL": services.s3_endpoint_url,
            "CA4_S3_ACCESS_KEY_ID": services.s3_access_key_id,
            "CA4_S3_SECRET_ACCESS_KEY": services.s3_secret_access_key,
            # The worker closes an archive object 30 s after its first record; a loaded machine
            # needs more than the default 45 s per step to see it.
            "CA4_VERIFY_TIMEOUT_S": "120",
        }
        env.pop("CA4_GRAFANA_TOKEN", None)
        code, report, stderr = run_verify(env, "--target", "local", timeout=600)
    steps = {step["number"]: step for step in report["steps"]}
    summary = "\n".join(
        f"{s['number']} {s['name']}: {s['status']} ({s['seconds']}s) {s['detail']}"
        for s in report["steps"]
    )
    assert {n: s["status"] for n, s in steps.items()} == {
        **dict.fromkeys(range(1, 8), "pass"),
        8: "not deployed",
        9: "pass",
    }, summary
    assert steps[7]["detail"] == "dashboards ca4-gpus, ca4-pipeline served", summary
    [(login, query)] = stub.searches
    assert login == grafana.basic(GRAFANA_USER, GRAFANA_PASSWORD)
    assert query == {"type": ["dash-db"], "tag": ["ca4"]}
    assert steps[9]["detail"].startswith(f"s3://{bucket}/raw/"), summary
    assert code == 0, summary + stderr


def test_a_failing_deployed_step_exits_non_zero(edge: str, pipeline: Pipeline) -> None:
    env = {
        **os.environ,
        "CA4_EDGE_API_URL": edge,
        "CA4_API_KEY": "not-a-key",
        "CA4_PROMETHEUS_URL": pipeline.prometheus_url,
        "CA4_GRAFANA_URL": f"http://127.0.0.1:{free_port()}",
        "CA4_LOKI_URL": f"http://127.0.0.1:{free_port()}",
    }
    result = subprocess.run(
        [CA4, "verify", "--json"], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert result.returncode == 1
    steps = json.loads(result.stdout)["steps"]
    assert steps[0]["status"] == "pass"
    assert steps[1]["status"] == "fail"
    assert steps[1]["detail"].startswith("HTTP 401")
