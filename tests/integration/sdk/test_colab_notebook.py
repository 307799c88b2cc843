"""The Colab quick-start notebook, executed top to bottom by a real Jupyter kernel (nbclient).

What a Colab user does, as far as this machine allows:
- the kernel runs in a fresh venv that has no CA4 code: the notebook's first cell installs the
  SDK from the edge's ``/sdk/`` index (the wheel the processor serves);
- the edge URL and key come the way Colab secrets do: ``google.colab.userdata.get`` (a shim on
  the kernel's path reading the test's secrets; the kernel's environment has no ``CA4_*``);
- one edge URL serves ingest and reads: no cluster here, so a local proxy stands in for the
  ingress, routing with the chart's own ``ingress.routes`` (``tests/support/edge.py``);
- no GPU here: the collector must say so in the notebook's output and everything still runs;
- an edge that does not serve the SDK stops the first cell, naming the edge (``%pip`` itself
  carries on after a failed install).

The processor and worker are the SDK tests' private uvicorn processes on the real dev stack.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.integration.sdk.conftest import DEV_API_KEY, REPO_ROOT, SdkPipeline
from tests.support.edge import local_edge

pytestmark = [
    pytest.mark.stand_in(
        "Google Colab: not reachable here; ran instead: the quick-start notebook in a real Jupyter "
        "kernel, Colab's secrets through a shim, the chart's routes through a local edge"
    ),
    pytest.mark.kafka,
    pytest.mark.mongo,
    pytest.mark.e2e,
    pytest.mark.slow,
]

NOTEBOOK = REPO_ROOT / "sdk" / "notebooks" / "colab_quickstart.ipynb"
COLAB_SHIM = Path(__file__).parent / "colab_shim"
KERNEL_NAME = "ca4-colab-like"
KERNEL_PACKAGES = ("ipykernel", "matplotlib", "numpy", "requests", "nvidia-ml-py")
"""What a Colab runtime has before the notebook runs (the SDK's own dependencies included, so
the cell's ``%pip install`` of them by name finds them satisfied); no CA4 package."""
SHORT_RUN = {
    "QUICKSTART_WORKLOAD_S": "12",
    "QUICKSTART_SAMPLE_EVERY_S": "3",
    "QUICKSTART_REPORT_INTERVAL_S": "5",
}
"""The notebook's own knobs, for a run of seconds instead of a minute."""
READ_HEADERS = {"Authorization": f"Bearer {DEV_API_KEY}"}


@pytest.fixture(scope="module")
def extra_app_env(sdk_wheel_dir: Path) -> dict[str, str]:
    """The processor serves the wheel just built."""
    return {"CA4_SDK_WHEEL_DIR": str(sdk_wheel_dir)}


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernelspec whose Python is a fresh venv (pip included, for the notebook's ``%pip``)."""
    root = tmp_path_factory.mktemp("kernel")
    venv = root / "venv"
    subprocess.run(
        ["uv", "venv", "--seed", "--python", sys.executable, str(venv)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    python = venv / "bin" / "python"
    subprocess.run(
        ["uv", "pip", "install", "--python", str(python), *KERNEL_PACKAGES],
        check=True,
        capture_output=True,
        timeout=300,
    )
    spec = root / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec_json = {"argv": argv, "display_name": "Colab-like", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(spec_json))
    return root / "kernels"


def _kernel_env(home: Path, secrets: Path) -> dict[str, str]:
    """The kernel's whole environment: no ``CA4_*``, the secrets come through the Colab shim."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),  # the SDK's spool and pip's cache: nothing of this machine's
        "PYTHONPATH": str(COLAB_SHIM),
        "COLAB_SECRETS_FILE": str(secrets),
        **SHORT_RUN,
    }


def _outputs(notebook: nbformat.NotebookNode) -> tuple[str, set[str]]:
    """All text the code cells printed, and the MIME types of everything they displayed."""
    text, mime_types = [], set()
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                text.append(output["text"])
            mime_types |= set(output.get("data", {}))
    return "".join(text), mime_types


async def test_the_quickstart_notebook_runs_top_to_bottom_and_reads_its_session_back(
    sdk_pipeline: SdkPipeline, kernel_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir.parent))  # where nbclient finds the kernel
    secrets = tmp_path / "colab-secrets.json"
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    with local_edge(
        {"processor": sdk_pipeline.processor.url, "worker": sdk_pipeline.worker.url}
    ) as edge:
        secrets.write_text(json.dumps({"CA4_EDGE_API_URL": edge, "CA4_API_KEY": DEV_API_KEY}))
        kernel_env = _kernel_env(tmp_path, secrets)
        client = NotebookClient(
            notebook,
            kernel_name=KERNEL_NAME,
            timeout=240,
            resources={"metadata": {"path": str(tmp_path)}},
        )
        try:
            await client.async_execute(env=kernel_env)
        finally:
            nbformat.write(notebook, tmp_path / "executed.ipynb")

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code_cells] == list(range(1, len(code_cells) + 1))
    text, mime_types = _outputs(notebook)
    assert f"edge API: {edge}" in text
    assert "collector: none" in text
    assert "No GPU visible to the collector" in text  # says so instead of failing
    read_back = re.search(r"read back (\d+) of (\d+) reports sent from here", text)
    assert read_back is not None, text
    found, sent = int(read_back[1]), int(read_back[2])
    assert found == sent >= 4  # the first report and one every 3 s of a 12 s workload
    assert {"text/markdown", "image/png"} <= mime_types  # the table and the plot

    session_id = re.search(r"session: (\S+)", text)
    assert session_id is not None
    async with httpx.AsyncClient(base_url=sdk_pipeline.worker.url, timeout=10) as worker:
        answer = await worker.get(f"/v1/sessions/{session_id[1]}", headers=READ_HEADERS)
    session: dict[str, Any] = answer.json()
    assert session["sample_count"] >= sent
    assert session["labels"] == {"project": "quickstart", "notebook": "colab_quickstart"}


async def test_the_install_cell_stops_when_the_edge_does_not_serve_the_sdk(
    kernel_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir.parent))
    kernel_python = kernel_dir.parent / "venv" / "bin" / "python"
    uninstall = await asyncio.create_subprocess_exec(  # a fresh runtime: no SDK from the test above
        *["uv", "pip", "uninstall", "--python", str(kernel_python), "ca4-sdk"],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.wait_for(uninstall.wait(), timeout=60)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_edge = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there
    secrets = tmp_path / "colab-secrets.json"
    secrets.write_text(json.dumps({"CA4_EDGE_API_URL": dead_edge, "CA4_API_KEY": DEV_API_KEY}))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells = notebook.cells[:2]  # the introduction and the install cell
    client = NotebookClient(
        notebook,
        kernel_name=KERNEL_NAME,
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )

    with pytest.raises(CellExecutionError) as caught:
        await client.async_execute(env=_kernel_env(tmp_path, secrets))

    assert f"the CA4 SDK did not install from {dead_edge}/sdk/" in str(caught.value)
