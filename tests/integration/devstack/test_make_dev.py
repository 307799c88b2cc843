"""``make dev``, run as the README has a user run it, then what the README says to do next.

The target itself runs (``make dev``: the SDK wheel, ``ca4 devstack up --with-app``, the demo
``ca4 send --count 1 --sessions 1``, the list of URLs), in a state dir of its own
(``CA4_DEVSTACK_HOME``) with the apps on free ports (``CA4_DEVSTACK_{PROCESSOR,WORKER,EDGE}_PORT``,
the knobs the README names for a second stack). The infrastructure the test run already uses
answers on its ports, so ``up`` reuses it as found and starts only the processor, the worker and
the edge. Then, through that edge: the demo session in ``/v1/sessions``, and the SDK installed
into a fresh venv with the ``pip install`` line ``make dev`` prints. ``make devstack-down`` (the
README's "stop everything") ends it; from this state dir it can stop only the three apps, and the
test checks the shared infrastructure kept running, same PIDs.

The apps' topic, consumer groups, database and archive prefix are the test's own (``CA4_*``
variables the apps read, as in a deployment), so the demo report lands nowhere another test or a
developer's ``make dev`` reads.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.devstack import DEVSTACK_SERVICES, run_devstack
from tests.support.ports import free_port
from tests.support.services import Endpoints

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.mongo,
    pytest.mark.s3,
    pytest.mark.prometheus,
    pytest.mark.e2e,
    pytest.mark.slow,
    # Past the suite's 300 s: every step below has its own deadline, and these add up to less,
    # so a hung step fails here first and the teardown's `make devstack-down` still runs.
    pytest.mark.timeout(1200),
    pytest.mark.stand_in(
        "make dev's `install` step (uv sync): not re-run, `make -o install dev` instead; the tests "
        "run in the workspace `make test` has just synced, and syncing it again under running "
        "tests would rewrite files they import; the rest of `make dev` ran as written"
    ),
]

REPO_ROOT = Path(__file__).resolve().parents[3]
DEV_API_KEY = "ca4-dev-key"  # what the README tells the user to send
AUTH = {"Authorization": f"Bearer {DEV_API_KEY}"}
MAKE_TIMEOUT_S = 300.0
SESSION_TIMEOUT_S = 90.0
APPS = ("processor", "worker", "edge")


@dataclass(frozen=True)
class DevStack:
    """The second stack's environment and where its apps listen."""

    env: dict[str, str]
    ports: dict[str, int]
    wheel_dir: Path

    @property
    def edge(self) -> str:
        return f"http://127.0.0.1:{self.ports['edge']}"


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _make(target: str, env: dict[str, str], *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", *options, target],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=MAKE_TIMEOUT_S,
        check=False,
    )


async def _status(env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """``ca4 devstack status --json`` of the stack ``env`` names (default: the test run's)."""
    result = await run_devstack("status", "--json", env=env)
    assert result.code == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


@pytest.fixture
def dev_stack(services: Endpoints, tmp_path: Path, unique_suffix: str) -> DevStack:
    ports = dict(zip(APPS, _free_ports(len(APPS)), strict=True))
    env = {
        **os.environ,
        "CA4_DEVSTACK_HOME": str(tmp_path / "devstack"),
        **{f"CA4_DEVSTACK_{name.upper()}_PORT": str(port) for name, port in ports.items()},
        "CA4_SDK_WHEEL_DIR": str(tmp_path / "sdk"),
        # The test's own data; the dev stack's ports and credentials come from `devstack env`.
        "CA4_KAFKA_TOPIC": f"test-gpu-metadata-{unique_suffix}",
        "CA4_KAFKA_DLQ_TOPIC": f"test-gpu-metadata-{unique_suffix}.dlq",
        "CA4_KAFKA_STORE_GROUP": f"test-store-{unique_suffix}",
        "CA4_KAFKA_PROJECT_GROUP": f"test-project-{unique_suffix}",
        "CA4_KAFKA_ARCHIVE_GROUP": f"test-archive-{unique_suffix}",
        "CA4_MONGO_DB": f"test_ca4_{unique_suffix}",
        "CA4_ARCHIVE_PREFIX": f"test-make-dev-{unique_suffix}",
    }
    # A user's shell: no key, no other edge, the default (dev) environment, and no outer make's
    # flags (`make test` runs these tests; its jobserver is not this make's).
    for name in (
        "MAKEFLAGS",
        "MFLAGS",
        "MAKELEVEL",
        "MAKEOVERRIDES",
        "CA4_EDGE_API_URL",
        "CA4_API_KEY",
        "CA4_API_KEY_HASHES",
        "CA4_API_KEYS_FILE",
        "CA4_ENVIRONMENT",
    ):
        env.pop(name, None)
    return DevStack(env, ports, tmp_path / "sdk")


@pytest.fixture
def stopped_at_teardown(dev_stack: DevStack) -> Iterator[list[subprocess.CompletedProcess[str]]]:
    """``make devstack-down`` in the second stack's state dir, whatever the test did."""
    done: list[subprocess.CompletedProcess[str]] = []
    yield done
    if not done:
        _make("devstack-down", dev_stack.env)


def _sessions(edge: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + SESSION_TIMEOUT_S
    with httpx.Client(base_url=edge, timeout=10) as http:
        while True:
            response = http.get("/v1/sessions", headers=AUTH)
            assert response.status_code == 200, response.text
            items: list[dict[str, Any]] = response.json()["items"]
            if items:
                return items
            assert time.monotonic() < deadline, f"no session in {SESSION_TIMEOUT_S:.0f}s"
            time.sleep(0.5)


def _session(edge: str, session_id: str) -> dict[str, Any]:
    response = httpx.get(f"{edge}/v1/sessions/{session_id}", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _pip_install_in_new_venv(venv: Path, pip_args: list[str]) -> str:
    """Run ``pip ARGS`` in a new venv; the version of ``ca4-sdk`` it then has."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=180)
    python = str(venv / "bin" / "python")
    installed = subprocess.run(
        [python, "-m", "pip", "--disable-pip-version-check", *pip_args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # --no-deps: the SDK's dependencies come from PyPI, not the edge; so its metadata, no import.
    shown = subprocess.run(
        [python, "-c", "from importlib.metadata import version; print(version('ca4-sdk'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return shown.stdout.strip()


def _printed_pip_install(make_output: str) -> list[str]:
    """The ``pip install ...`` line ``make dev`` prints for the SDK (without ``pip``)."""
    found = re.search(r"\((pip install [^)]*ca4-sdk)\)", make_output)
    assert found, make_output
    return shlex.split(found.group(1))[1:]


async def test_make_dev_runs_the_apps_behind_the_edge_and_down_stops_only_them(
    dev_stack: DevStack,
    stopped_at_teardown: list[subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    shared_before = await _status()
    not_up = {n: shared_before[n]["state"] for n in DEVSTACK_SERVICES}
    assert set(not_up.values()) <= {"healthy", "external"}, (
        f"the dev stack this test reuses is not all up: {not_up}"
    )

    made = await asyncio.to_thread(_make, "dev", dev_stack.env, "-o", "install")
    output = made.stdout + made.stderr
    assert made.returncode == 0, output[-6000:]

    ours = await _status(dev_stack.env)
    assert {n: ours[n]["state"] for n in APPS} == dict.fromkeys(APPS, "healthy"), output[-4000:]
    assert all(ours[n]["pid"] for n in APPS)
    assert {n: ours[n]["state"] for n in DEVSTACK_SERVICES} == dict.fromkeys(
        DEVSTACK_SERVICES, "external"
    )  # reused, none started from this state dir
    said = " ".join(output.split())
    assert f"edge (notebooks) {dev_stack.edge} " in said
    assert re.search(r"\baccepted\W+1\b", made.stdout), made.stdout  # ca4 send's summary

    (session,) = await asyncio.to_thread(_sessions, dev_stack.edge)
    detail = await asyncio.to_thread(_session, dev_stack.edge, session["session_id"])
    assert detail["sample_count"] == 1

    (wheel,) = dev_stack.wheel_dir.glob("ca4_sdk-*.whl")
    pip_args = _printed_pip_install(made.stdout)
    assert f"{dev_stack.edge}/sdk/" in pip_args
    installed = await asyncio.to_thread(_pip_install_in_new_venv, tmp_path / "venv", pip_args)
    assert installed == wheel.name.split("-")[1]

    down = await asyncio.to_thread(_make, "devstack-down", dev_stack.env)
    stopped_at_teardown.append(down)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped: " in down.stderr
    after = await _status(dev_stack.env)
    assert {n: after[n]["state"] for n in APPS} == dict.fromkeys(APPS, "stopped")
    shared_after = await _status()
    assert {n: (shared_after[n]["state"], shared_after[n]["pid"]) for n in DEVSTACK_SERVICES} == {
        n: (shared_before[n]["state"], shared_before[n]["pid"]) for n in DEVSTACK_SERVICES
    }
