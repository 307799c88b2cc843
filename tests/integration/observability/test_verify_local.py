"""``ca4 verify --target local`` against the dev stack, with the real Prometheus scraping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.observability.conftest import Pipeline
from tests.support.ports import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.mongo, pytest.mark.prometheus, pytest.mark.e2e]

CA4 = Path(sys.executable).with_name("ca4")


def test_first_six_steps_pass_grafana_and_loki_not_deployed(pipeline: Pipeline) -> None:
    services = pipeline.endpoints
    env = {
        **os.environ,
        "CA4_EDGE_API_URL": pipeline.processor_url,
        "CA4_WORKER_URL": pipeline.worker_url,
        "CA4_KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap_servers,
        "CA4_MONGO_URL": services.mongo_url,
        "CA4_MONGO_DB": pipeline.mongo_db,
        "CA4_PROMETHEUS_URL": pipeline.prometheus_url,
        # Nothing listens on these ports: Grafana and Loki are not deployed locally.
        "CA4_GRAFANA_URL": f"http://127.0.0.1:{free_port()}",
        "CA4_LOKI_URL": f"http://127.0.0.1:{free_port()}",
        "CA4_VERIFY_TIMEOUT_S": "45",
    }
    result = subprocess.run(
        [CA4, "verify", "--target", "local", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    report = json.loads(result.stdout)
    statuses = {step["number"]: step["status"] for step in report["steps"]}
    summary = "\n".join(
        f"{s['number']} {s['name']}: {s['status']} ({s['seconds']}s) {s['detail']}"
        for s in report["steps"]
    )
    assert [statuses[n] for n in range(1, 7)] == ["pass"] * 6, summary
    assert statuses[7] == "not deployed", summary
    assert statuses[8] == "not deployed", summary
    assert result.returncode == 0, summary + result.stderr


def test_a_failing_deployed_step_exits_non_zero(pipeline: Pipeline) -> None:
    env = {
        **os.environ,
        "CA4_EDGE_API_URL": pipeline.processor_url,
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
