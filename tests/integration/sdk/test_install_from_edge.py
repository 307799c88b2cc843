"""A fresh venv installs the SDK from the running processor (no package index for the SDK) and
reports through it: the notebook's first cell's ``%pip install`` lines, run as written (the
README's are the same, ``tests/unit/sdk/test_notebook.py``).

The venv runs the oldest Python the SDK declares (``requires-python``) when this machine has
it, so the declaration is tested, not just written.
"""

from __future__ import annotations

import glob
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import requests

from tests.integration.sdk.conftest import DEV_API_KEY, REPO_ROOT, SdkPipeline

pytestmark = [pytest.mark.kafka, pytest.mark.mongo, pytest.mark.e2e, pytest.mark.slow]

NOTEBOOK = REPO_ROOT / "sdk" / "notebooks" / "colab_quickstart.ipynb"

REPORT_ONCE = """
import json, sys
from ca4_sdk import AutoCollector, Reporter, __version__
reporter = Reporter(url=sys.argv[1], api_key=sys.argv[2], collector=AutoCollector(prefer="none"),
                    spool_dir=sys.argv[3], labels={"project": "edge-install"})
result = reporter.report_once()
print(json.dumps({"version": __version__, "python": list(sys.version_info[:2]),
                  "event_id": result.event_id, "delivered": result.delivered,
                  "error": result.error, "session_id": reporter.session_id}))
"""


def declared_minimum_python() -> tuple[int, int]:
    """The ``X.Y`` of the SDK's ``requires-python = ">=X.Y"``."""
    project = tomllib.loads((REPO_ROOT / "sdk" / "pyproject.toml").read_text("utf-8"))
    major, minor = project["project"]["requires-python"].removeprefix(">=").split(".")[:2]
    return int(major), int(minor)


def find_python(version: tuple[int, int]) -> str | None:
    """An interpreter of exactly ``version``: uv's, one on PATH, or one pyenv installed."""
    wanted = f"{version[0]}.{version[1]}"
    found = subprocess.run(
        ["uv", "python", "find", wanted], capture_output=True, text=True, check=False
    )
    candidates = [found.stdout.strip()] if found.returncode == 0 else []
    candidates += [shutil.which(f"python{wanted}") or ""]
    candidates += sorted(glob.glob(str(Path.home() / f".pyenv/versions/{wanted}*/bin/python3")))
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == wanted:
            return candidate
    return None


def notebook_installs(edge: str) -> list[list[str]]:
    """The pip arguments of the ``%pip install`` lines of the notebook's first code cell, for
    ``edge`` and without ``--quiet`` (pip should say where it looked)."""
    cells = json.loads(NOTEBOOK.read_text("utf-8"))["cells"]
    source = next("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    return [
        [arg for arg in shlex.split(line.replace("{CA4_EDGE}", edge))[1:] if arg != "--quiet"]
        for line in source.splitlines()
        if line.startswith("%pip install")
    ]


@pytest.fixture(scope="module")
def extra_app_env(sdk_wheel_dir: Path) -> dict[str, str]:
    """The processor serves the wheel just built."""
    return {"CA4_SDK_WHEEL_DIR": str(sdk_wheel_dir)}


def _pip(python: Path, *args: str) -> str:
    """pip's output (stdout and stderr) after it succeeded."""
    done = subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_fresh_venv_installs_the_sdk_from_the_edge_and_reports(
    sdk_pipeline: SdkPipeline, sdk_wheel_dir: Path, tmp_path: Path
) -> None:
    minimum = declared_minimum_python()
    interpreter = find_python(minimum) or sys.executable
    venv = tmp_path / "venv"
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    edge = sdk_pipeline.processor.url
    (wheel,) = sdk_wheel_dir.glob("ca4_sdk-*.whl")

    # The notebook's first cell: the SDK from the edge's index only, then its dependencies by
    # name (verbose: every index page pip reads is in the output).
    sdk_install, deps_install = notebook_installs(edge)
    from_edge = _pip(python, *sdk_install)
    deps = _pip(python, *deps_install, "--verbose")
    # The direct form: the wheel's URL under its own filename.
    _pip(
        python, "download", "--no-deps", "-d", str(tmp_path / "direct"), f"{edge}/sdk/{wheel.name}"
    )

    assert f"{edge}/sdk/" in from_edge
    assert "ca4-sdk" not in deps  # no index was asked for the SDK
    assert "ca4_sdk" not in deps
    assert "Successfully installed" in deps
    assert (tmp_path / "direct" / wheel.name).read_bytes() == wheel.read_bytes()
    ran = subprocess.run(
        [str(python), "-c", REPORT_ONCE, edge, DEV_API_KEY, str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,  # not the repository: the venv must import its own ca4_sdk
    )
    assert ran.returncode == 0, ran.stderr
    outcome = json.loads(ran.stdout.strip().splitlines()[-1])
    assert outcome["delivered"] is True, outcome["error"]
    assert outcome["version"] == wheel.name.split("-")[1]
    if interpreter != sys.executable:
        assert tuple(outcome["python"]) == minimum

    deadline = time.monotonic() + 60
    while True:
        status = requests.get(
            f"{sdk_pipeline.worker.url}/v1/events/{outcome['event_id']}",
            headers={"Authorization": f"Bearer {DEV_API_KEY}"},  # the read API takes the key too
            timeout=5,
        ).json()
        if status.get("stored"):
            break
        assert time.monotonic() < deadline, f"event never stored: {status}"
        time.sleep(0.5)
    assert status["event"]["source"]["sdk_version"] == outcome["version"]
    assert status["event"]["session_id"] == outcome["session_id"]


def readme_git_install() -> list[str]:
    """The README's install-from-git line (for a notebook without an edge at hand), as pip
    arguments."""
    readme = (REPO_ROOT / "README.md").read_text("utf-8")
    (line,) = re.findall(r"`%pip install (\"ca4-sdk\[nvml\] @ git\+[^`]+)`", readme)
    return shlex.split(line)


def test_fresh_venv_installs_the_sdk_from_git_as_the_readme_says_and_reports(
    sdk_pipeline: SdkPipeline, tmp_path: Path
) -> None:
    """README: "Without an edge at hand, install from git". Its line, with the repository's
    address swapped for a clone of this one (``git+file://``: the same pip, git and build of
    ``sdk/`` from source, and the ``nvml`` extra from the package index)."""
    (requirement,) = readme_git_install()
    assert requirement.startswith("ca4-sdk[nvml] @ git+https://github.com/<you>/ca4.git#")
    clone = tmp_path / "ca4"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True, timeout=120)
    # file://localhost/...: pip's URL check wants a host in a git+ URL (git+file:///... is
    # "Invalid requirement").
    local = requirement.replace("https://github.com/<you>/ca4.git", f"file://localhost{clone}")
    venv = tmp_path / "venv"
    minimum = declared_minimum_python()
    subprocess.run(
        [find_python(minimum) or sys.executable, "-m", "venv", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"

    installed = _pip(python, "install", local)

    assert "Successfully installed" in installed
    assert "nvidia-ml-py" in installed  # the extra came along
    ran = subprocess.run(
        [str(python), "-c", REPORT_ONCE, sdk_pipeline.processor.url, DEV_API_KEY,
         str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,  # not the repository: the venv must import its own ca4_sdk
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    outcome = json.loads(ran.stdout.strip().splitlines()[-1])
    assert outcome["delivered"] is True, outcome["error"]
    project = tomllib.loads((REPO_ROOT / "sdk" / "pyproject.toml").read_text("utf-8"))
    assert outcome["version"] == project["project"]["version"]
