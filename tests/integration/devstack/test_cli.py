"""`ca4 devstack` itself: status, env, and a second `up` that changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ca4_provision.devstack.settings import DevstackSettings

from tests.support.devstack import DEVSTACK_SERVICES, run_devstack
from tests.support.services import Endpoints

pytestmark = [pytest.mark.kafka, pytest.mark.mongo, pytest.mark.s3, pytest.mark.prometheus]


@pytest.mark.usefixtures("services")
async def test_status_reports_every_service_healthy() -> None:
    table = await run_devstack("status")
    rows = json.loads((await run_devstack("status", "--json")).stdout)

    assert table.code == 0
    for name in DEVSTACK_SERVICES:
        assert name in table.stdout
    states = {row["name"]: row["state"] for row in rows}
    details = {row["name"]: row["detail"] for row in rows}
    assert {states[name] for name in DEVSTACK_SERVICES} <= {"healthy", "external"}, details
    assert set(states) == {*DEVSTACK_SERVICES, "processor", "worker", "edge"}


async def test_status_check_exit_code(services: Endpoints) -> None:
    result = await run_devstack("status", "--check", "kafka", "mongo", "s3")
    assert result.code == 0, result.stdout


async def test_env_prints_exports_for_every_endpoint() -> None:
    result = await run_devstack("env")

    assert result.code == 0
    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines()
    )
    ports = DevstackSettings.from_env().ports
    assert exports["CA4_KAFKA_BOOTSTRAP_SERVERS"] == f"127.0.0.1:{ports.kafka}"
    assert exports["CA4_MONGO_URL"] == f"mongodb://127.0.0.1:{ports.mongo}"
    assert exports["CA4_S3_ENDPOINT_URL"] == f"http://127.0.0.1:{ports.s3}"
    assert exports["CA4_S3_BUCKET"] == "ca4-archive"
    assert exports["CA4_PROMETHEUS_URL"] == f"http://127.0.0.1:{ports.prometheus}"
    assert {"CA4_S3_ACCESS_KEY_ID", "CA4_S3_SECRET_ACCESS_KEY"} <= exports.keys()


async def _pids() -> dict[str, int | None]:
    rows = json.loads((await run_devstack("status", "--json")).stdout)
    return {row["name"]: row["pid"] for row in rows}


@pytest.mark.usefixtures("services")
async def test_second_up_changes_nothing(tmp_path: Path) -> None:
    before = {
        r["name"]: r["pid"] for r in json.loads((await run_devstack("status", "--json")).stdout)
    }
    started_file = tmp_path / "started"

    result = await run_devstack("up", "--started-file", str(started_file))

    after = {
        r["name"]: r["pid"] for r in json.loads((await run_devstack("status", "--json")).stdout)
    }
    assert result.code == 0, result.stderr
    assert started_file.read_text() == ""
    assert "already running" in result.stderr
    assert after == before


async def test_unknown_service_is_a_usage_error() -> None:
    result = await run_devstack("stop", "cassandra")
    assert result.code == 2
    assert "unknown service 'cassandra'" in result.stderr


@pytest.mark.usefixtures("services")
async def test_up_from_another_state_dir_says_it_reuses_what_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second checkout on the same ports used to say "all services were already running and
    healthy" and go on with another developer's stack, its data and topics."""
    monkeypatch.setenv("CA4_DEVSTACK_HOME", str(tmp_path / "other-checkout"))
    started_file = tmp_path / "started"

    result = await run_devstack("up", "prometheus", "--started-file", str(started_file))

    assert result.code == 0, result.stderr
    assert started_file.read_text() == ""
    said = " ".join(result.stderr.split())
    assert "already running and healthy" not in said
    assert (
        f"not started by this state dir ({tmp_path / 'other-checkout'}), reused as found: "
        "prometheus. If that is another checkout's stack, run your own with CA4_DEVSTACK_HOME "
        "and the CA4_DEVSTACK_*_PORT variables" in said
    )
