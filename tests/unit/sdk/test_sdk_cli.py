"""``ca4 send`` against the stub API, and ``ca4 sdk probe`` on this (GPU-less) host."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from ca4_provision.cli import app
from typer.testing import CliRunner

from tests.unit.sdk.stub_api import stub_api
from tests.unit.sdk.support import assert_valid_report


def test_send_delivers_valid_synthetic_reports_and_summarises() -> None:
    with stub_api() as (url, state):
        result = CliRunner().invoke(
            app,
            [
                "send",
                "--count",
                "25",
                "--rate",
                "0",
                "--sessions",
                "3",
                "--url",
                url,
                "--seed",
                "7",
            ],
        )
    assert result.exit_code == 0, result.output
    assert "accepted" in result.output
    reports = [r for request in state.requests for r in request["body"]["reports"]]
    assert len(reports) == len(state.accepted_ids()) == 25
    assert len({r["session_id"] for r in reports}) == 3
    for report in reports:
        assert_valid_report(report)


def test_send_exits_non_zero_when_the_api_is_down() -> None:
    with stub_api() as (url, state):
        state.status = 503
        result = CliRunner().invoke(app, ["send", "--count", "3", "--rate", "0", "--url", url])
    assert result.exit_code == 1
    assert "503" in result.output


def test_send_reports_to_the_dev_edge_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # It defaulted to the processor's port (8000), so `make dev`'s demo report bypassed the
    # edge, and a moved edge (CA4_DEVSTACK_EDGE_PORT) was ignored.
    monkeypatch.delenv("CA4_EDGE_API_URL", raising=False)
    with stub_api() as (url, state):
        monkeypatch.setenv("CA4_DEVSTACK_EDGE_PORT", str(urlsplit(url).port))
        result = CliRunner().invoke(app, ["send", "--count", "2", "--rate", "0"])
    assert result.exit_code == 0, result.output
    assert len(state.accepted_ids()) == 2


def test_send_to_nothing_says_in_one_line_what_it_could_not_reach() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there
    result = CliRunner().invoke(
        app, ["send", "--count", "1", "--rate", "0", "--retries", "0", "--url", dead]
    )
    assert result.exit_code == 1
    (line,) = [line for line in result.output.splitlines() if "ConnectionError" in line]
    assert line.strip() == (
        f"1 x ConnectionError: cannot connect to {dead}/v1/metadata/batch: "
        "[Errno 111] Connection refused"
    )


def test_send_waits_out_the_rate_limit_and_resends() -> None:
    with stub_api() as (url, state):
        state.first_statuses = [429]
        state.retry_after = "1"
        result = CliRunner().invoke(app, ["send", "--count", "3", "--rate", "0", "--url", url])
    assert result.exit_code == 0, result.output
    assert len(state.accepted_ids()) == 3
    assert len(state.requests) == 2
    assert "waits for the rate limit (429)" in result.output


def test_send_resends_after_a_transient_failure() -> None:
    with stub_api() as (url, state):
        state.first_statuses = [503]
        result = CliRunner().invoke(app, ["send", "--count", "3", "--rate", "0", "--url", url])
    assert result.exit_code == 0, result.output
    assert len(state.accepted_ids()) == 3
    assert len(state.requests) == 2
    assert "resent after a transient failure" in result.output


def test_probe_prints_the_self_check() -> None:
    result = CliRunner().invoke(app, ["sdk", "probe", "--collector", "none"])
    assert result.exit_code == 0, result.output
    assert "GPUs" in result.output or "No GPUs" in result.output
    assert "Unavailable fields" in result.output


def test_python_m_ca4_sdk_probe_prints_a_valid_report() -> None:
    """The probe a GPU host without the `ca4` command runs (sdk/scripts/capture_gpu_fixtures.sh)."""
    done = subprocess.run(
        [sys.executable, "-m", "ca4_sdk", "probe", "none"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(done.stdout)
    assert_valid_report(report)
    assert report["labels"] == {"probe": "true"}
    assert report["payload"]["gpus"] == []


def test_the_colab_sections_probe_runs_with_the_sdk_alone() -> None:
    """The section named only ``uv run ca4 sdk probe``, which a notebook cannot run: the
    ``ca4`` command is not in the wheel the edge serves."""
    readme = (Path(__file__).parents[3] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## From a Colab notebook", 1)[1].split("\n## ", 1)[0]
    probe = re.search(r"`!python (-m ca4_sdk probe[^`]*)`", section)
    assert probe is not None, "README's Colab section names no probe a notebook can run"
    done = subprocess.run(
        [sys.executable, *probe[1].split()], capture_output=True, text=True, timeout=60, check=True
    )
    assert_valid_report(json.loads(done.stdout))


@pytest.mark.parametrize("argv", [[], ["probe", "nvm"], ["probe", "none", "extra"], ["collect"]])
def test_python_m_ca4_sdk_refuses_what_it_does_not_know(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ca4_sdk", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == "usage: python -m ca4_sdk probe [nvml|nvidia-smi|none]\n"
    assert done.stdout == ""
