"""The Colab quickstart notebook is valid nbformat 4, its code cells compile, and it (like the
README) installs the SDK from the edge only, with the dependencies ``sdk/pyproject.toml`` names.

Its cells also run here, in process, where they decide what a user sees when something goes
wrong: a read the edge refuses, nothing delivered, nothing read back, no edge URL set.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ca4_sdk import DeliveryResult

ROOT = Path(__file__).resolve().parents[3]
NOTEBOOK = ROOT / "sdk" / "notebooks" / "colab_quickstart.ipynb"
README = ROOT / "README.md"


def _code_cells() -> list[str]:
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    assert all({"cell_type", "source", "metadata"} <= cell.keys() for cell in notebook["cells"])
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]


def test_code_cells_compile_once_shell_magics_are_removed() -> None:
    for source in _code_cells():
        python = "\n".join(
            line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))
        )
        compile(python, str(NOTEBOOK), "exec")


def test_notebook_walks_through_install_secrets_reporter_workload_and_read_back() -> None:
    text = "\n".join(_code_cells())
    assert "%pip install" in text
    assert "userdata.get(" in text
    assert "Reporter(" in text
    assert "reporter.start()" in text
    assert "torch" in text
    assert "/v1/sessions/" in text
    imported = {
        alias.name
        for source in _code_cells()
        for node in ast.walk(
            ast.parse(
                "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%"))
            )
        )
        if isinstance(node, ast.ImportFrom | ast.Import)
        for alias in node.names
    }
    assert "Reporter" in imported


def _pip_installs(source: str) -> list[list[str]]:
    """The arguments after ``install`` of each ``%pip install`` line that is not a comment."""
    return [
        shlex.split(line.strip(), comments=True)[2:]
        for line in source.splitlines()
        if line.strip().startswith("%pip install")
    ]


def _requirements(arguments: list[str]) -> list[str]:
    """The requirements among pip arguments (options and the index URL left out)."""
    takes_value = {"--index-url", "-i", "--extra-index-url", "--find-links", "-f"}
    named = []
    for argument, before in zip(arguments, ["", *arguments], strict=False):
        if not argument.startswith("-") and before not in takes_value:
            named.append(argument)
    return named


def _readme_install_block() -> str:
    section = README.read_text(encoding="utf-8").split("## From a Colab notebook", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert block is not None, "README: no install block under 'From a Colab notebook'"
    return block[1]


@pytest.mark.parametrize("where", ["notebook", "README"])
def test_the_sdk_comes_from_the_edge_and_its_dependencies_by_name(where: str) -> None:
    source = _code_cells()[0] if where == "notebook" else _readme_install_block()
    project = tomllib.loads((ROOT / "sdk" / "pyproject.toml").read_text("utf-8"))["project"]
    dependencies = [*project["dependencies"], *project["optional-dependencies"]["nvml"]]

    edge, deps = _pip_installs(source)

    # The SDK: no dependencies, from the edge's index alone (no fallback to another index).
    assert _requirements(edge) == ["ca4-sdk"]
    assert "--no-deps" in edge
    # Every build is 0.1.0: without it pip keeps the SDK installed ("already satisfied").
    assert "--force-reinstall" in edge
    assert edge[edge.index("--index-url") + 1].endswith("/sdk/")
    assert not {"--extra-index-url", "--find-links", "-f"} & set(edge)
    # Its dependencies by name: "ca4-sdk[nvml]" would ask PyPI for ca4-sdk (dependency
    # confusion), and install PyPI's when the edge install failed.
    assert _requirements(deps) == dependencies
    # %pip carries on after a failed install: the import right after is what stops the cell.
    lines = source.splitlines()
    last_install = max(i for i, line in enumerate(lines) if line.startswith("%pip install"))
    assert any(re.match(r"\s*import ca4_sdk\b", line) for line in lines[last_install + 1 :])


# --- the cells, run here ------------------------------------------------------------------------


def _cell(cell_id: str) -> str:
    """One cell's source, by its id (``cell-09``), shell magics left out."""
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    (source,) = ["".join(c["source"]) for c in notebook["cells"] if c.get("id") == cell_id]
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%"))


def _run(source: str, namespace: dict[str, Any]) -> dict[str, Any]:
    exec(compile(source, str(NOTEBOOK), "exec"), namespace)
    return namespace


def _definitions(source: str) -> str:
    """A cell's imports, constants and functions, without the statements that use them."""
    kept: list[ast.stmt] = [
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.ClassDef)
        or (
            isinstance(node, ast.Assign)
            and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)
        )
    ]
    return ast.unparse(ast.Module(body=kept, type_ignores=[]))


@dataclass
class _Answer:
    status: int = 200
    content_type: str = "application/json"
    body: bytes = b"{}"
    seen_authorization: list[str] = field(default_factory=list)


@pytest.fixture
def edge() -> Iterator[tuple[str, _Answer]]:
    """A stand-in edge answering every GET with what the test sets."""
    answer = _Answer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer.seen_authorization.append(self.headers.get("Authorization", ""))
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answer
    finally:
        server.shutdown()
        server.server_close()


def _read_helper(edge_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The read-back cell's ``read`` and ``HEADERS``, for an edge at ``edge_url``."""
    monkeypatch.setenv("CA4_API_KEY", " ca4-dev-key \n")  # pasted, with a stray space and newline
    return _run(_definitions(_cell("cell-09")), {"os": os, "CA4_EDGE": edge_url})


def test_the_read_helper_returns_the_apis_json_and_sends_the_key_stripped(
    edge: tuple[str, _Answer], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, answer = edge
    answer.body = b'{"session_id": "s1"}'
    cell = _read_helper(url, monkeypatch)

    assert cell["HEADERS"]["Authorization"] == "Bearer ca4-dev-key"
    assert cell["read"]("/v1/sessions/s1") == {"session_id": "s1"}
    assert answer.seen_authorization == ["Bearer ca4-dev-key"]


PROCESSOR_READ_404 = (
    b'{"detail": "reads are served by the worker: use the edge (ingress) URL, which routes them"}'
)


@pytest.mark.parametrize(
    ("status", "content_type", "body", "shown", "cause"),
    [
        (401, "application/json", b'{"detail": "Invalid API key"}', "Invalid API key", "the key"),
        (403, "application/json", b'{"detail": "needs the read scope"}', "read scope", "the key"),
        # The edge's own 404 (a path it does not route), and the processor's port taken for it.
        (404, "text/plain", b"404 page not found\n", "404 page not found", "processor's port"),
        (404, "application/json", b'{"detail": "Not Found"}', "Not Found", "processor's port"),
        (404, "application/json", PROCESSOR_READ_404, "use the edge", "processor's port"),
        (404, "text/html", b"<html><body>ERR_NGROK_3200 offline</body></html>", "ERR_NGROK", "URL"),
        (
            404,
            "application/json",
            b'{"detail": "Session not found"}',
            "Session not found",
            "stored",
        ),
        (502, "text/plain", b"Bad Gateway\n", "Bad Gateway", "worker running"),
        (200, "text/html", b"<html>Sign in to the Wi-Fi</html>", "Wi-Fi", "not the CA4 API's JSON"),
    ],
)
def test_a_failed_read_says_what_the_edge_answered_and_why_then_stops_short(
    edge: tuple[str, _Answer],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    status: int,
    content_type: str,
    body: bytes,
    shown: str,
    cause: str,
) -> None:
    """A review's first run: a wrong key ended in ``HTTPError 401`` without the API's detail."""
    url, answer = edge
    answer.status, answer.content_type, answer.body = status, content_type, body
    cell = _read_helper(url, monkeypatch)

    with pytest.raises(RuntimeError) as caught:
        cell["read"]("/v1/sessions/s1")

    printed = capsys.readouterr().out
    assert f"HTTP {status}" in printed
    assert shown in printed
    (likely,) = [line for line in printed.splitlines() if line.startswith("Likely cause:")]
    assert cause in likely
    assert str(caught.value) == f"reading /v1/sessions/s1 failed: HTTP {status} (see above)"


def test_a_read_nothing_answers_names_the_url_and_the_tunnel(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there
    cell = _read_helper(dead, monkeypatch)

    with pytest.raises(RuntimeError, match=f"^no answer from {re.escape(dead)}$"):
        cell["read"]("/v1/sessions/s1")

    printed = capsys.readouterr().out
    assert "ConnectionError" in printed
    assert "Likely cause: the URL or the tunnel" in printed


@pytest.mark.parametrize(
    "unset", [("CA4_EDGE_API_URL",), ("CA4_API_KEY",), ("CA4_EDGE_API_URL", "CA4_API_KEY")]
)
def test_outside_colab_the_first_cell_says_what_to_set_instead_of_a_key_error(
    monkeypatch: pytest.MonkeyPatch, unset: tuple[str, ...]
) -> None:
    monkeypatch.setitem(sys.modules, "google.colab", None)  # not on Colab
    monkeypatch.setenv("CA4_EDGE_API_URL", "https://edge.example")
    monkeypatch.setenv("CA4_API_KEY", "ca4-dev-key")
    for name in unset:
        monkeypatch.delenv(name)
    before_install = _cell("cell-01").split("print(", 1)[0]

    with pytest.raises(RuntimeError) as caught:
        _run(before_install, {})

    message = str(caught.value)
    assert message.startswith(f"set {' and '.join(unset)} first")
    assert "secrets" in message  # how on Colab
    assert "environment" in message  # how elsewhere


class SecretNotFoundError(Exception):
    """Stands in for Colab's ``userdata.SecretNotFoundError``: no such secret."""


class NotebookAccessError(Exception):
    """Stands in for Colab's ``userdata.NotebookAccessError``: not shared with this notebook."""


def _on_colab(monkeypatch: pytest.MonkeyPatch, secrets: dict[str, str], missing: type) -> None:
    """A stand-in ``google.colab.userdata``: ``secrets`` are there, any other name raises
    ``missing``, as Colab's ``userdata.get`` does."""

    def get(name: str) -> str:
        if name not in secrets:
            raise missing(name)
        return secrets[name]

    userdata = ModuleType("google.colab.userdata")
    userdata.__dict__.update(
        get=get, SecretNotFoundError=SecretNotFoundError, NotebookAccessError=NotebookAccessError
    )
    colab = ModuleType("google.colab")
    colab.__dict__.update(userdata=userdata)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.userdata", userdata)


@pytest.mark.parametrize("missing", [SecretNotFoundError, NotebookAccessError])
def test_on_colab_a_secret_missing_or_not_shared_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, missing: type
) -> None:
    """Colab raises for a secret not defined or not shared: the cell ended in that traceback,
    its "set ... first" message never shown."""
    monkeypatch.delenv("CA4_EDGE_API_URL", raising=False)
    monkeypatch.delenv("CA4_API_KEY", raising=False)
    _on_colab(monkeypatch, {"CA4_EDGE_API_URL": "https://edge.example"}, missing)

    with pytest.raises(RuntimeError, match=r"^set CA4_API_KEY first: on Colab as secrets"):
        _run(_cell("cell-01").split("print(", 1)[0], {})


def test_on_colab_a_value_already_in_the_environment_wins_over_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A secret silently replaced what the user had set in os.environ."""
    monkeypatch.setenv("CA4_EDGE_API_URL", "https://mine.example")
    monkeypatch.delenv("CA4_API_KEY", raising=False)
    secrets = {"CA4_EDGE_API_URL": "https://from-secrets.example", "CA4_API_KEY": "ca4-dev-key"}
    _on_colab(monkeypatch, secrets, SecretNotFoundError)

    cell = _run(_cell("cell-01").split("print(", 1)[0], {})

    assert cell["CA4_EDGE"] == "https://mine.example"
    assert os.environ["CA4_API_KEY"] == "ca4-dev-key"


def test_on_colab_a_secret_changed_between_runs_wins_the_next_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first run put the secret into os.environ, where the next run took it for the user's
    own value: a new ngrok URL saved as the secret never reached pip or the reporter."""
    monkeypatch.delenv("CA4_EDGE_API_URL", raising=False)
    monkeypatch.delenv("CA4_API_KEY", raising=False)
    secrets = {"CA4_EDGE_API_URL": "https://old.example", "CA4_API_KEY": "ca4-dev-key"}
    _on_colab(monkeypatch, secrets, SecretNotFoundError)
    kernel: dict[str, Any] = {}  # one kernel's globals, kept between runs of the cell

    first = _run(_cell("cell-01").split("print(", 1)[0], kernel)["CA4_EDGE"]
    secrets["CA4_EDGE_API_URL"] = "https://new.example"
    second = _run(_cell("cell-01").split("print(", 1)[0], kernel)["CA4_EDGE"]

    assert (first, second) == ("https://old.example", "https://new.example")


def _install_cell(
    monkeypatch: pytest.MonkeyPatch, pip_exit_code: int, **kernel: Any
) -> dict[str, Any]:
    """The first cell, run whole as IPython runs it, its ``%pip`` lines exiting with
    ``pip_exit_code`` (IPython keeps it in ``_exit_code``), in a kernel holding ``kernel``."""
    monkeypatch.setitem(sys.modules, "google.colab", None)
    monkeypatch.setenv("CA4_EDGE_API_URL", "https://edge.example")
    monkeypatch.setenv("CA4_API_KEY", "ca4-dev-key")
    return _run(_cell("cell-01"), {"_exit_code": pip_exit_code, **kernel})


def test_an_sdk_install_that_failed_stops_the_first_cell_naming_the_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With an SDK installed earlier, a failed install (a dead edge) still printed
    "ca4-sdk 0.1.0 from <edge>/sdk/"."""
    with pytest.raises(RuntimeError) as caught:
        _install_cell(monkeypatch, pip_exit_code=1)

    assert str(caught.value).startswith(
        "the CA4 SDK did not install from https://edge.example/sdk/ (pip's error is above)"
    )
    assert "ca4-sdk" not in capsys.readouterr().out


class _InstalledSdk:
    """``importlib.metadata.distribution("ca4-sdk")`` whose RECORD is each of ``records`` in
    turn: what pip leaves before and after the cell's install."""

    def __init__(self, *records: str) -> None:
        self._records = list(records)

    def __call__(self, name: str) -> _InstalledSdk:
        assert name == "ca4-sdk"
        return self

    def read_text(self, filename: str) -> str:
        assert filename == "RECORD"
        return self._records.pop(0)


RESTART = (
    "a new ca4_sdk installed, and the one imported before runs on: restart (Runtime → Restart"
    " session) and run the cells again to use the SDK just installed"
)


@pytest.mark.parametrize(
    ("at_import", "installed", "restart"),
    [
        # Another SDK installed over the one the kernel runs; asked again on every later run
        # until the restart (the kernel keeps what the first run found).
        ("old", "new", True),
        # Running the first cell again (a new ngrok URL, a fixed key) reinstalls the same wheel:
        # every second run asked for a restart it did not need.
        ("same", "same", False),
        (None, "new", True),  # imported before the first cell ran: what it runs is unknown
    ],
)
def test_a_restart_is_asked_for_when_the_kernel_runs_another_sdk(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    at_import: str | None,
    installed: str,
    restart: bool,
) -> None:
    assert "ca4_sdk" in sys.modules  # imported by this test module, as by an earlier run
    monkeypatch.setattr(importlib.metadata, "distribution", _InstalledSdk(installed))
    kernel = {} if at_import is None else {"_ca4_sdk_at_import": at_import}

    _install_cell(monkeypatch, pip_exit_code=0, **kernel)

    assert (capsys.readouterr().out.splitlines()[-1] == RESTART) is restart


def test_a_first_install_says_which_sdk_it_installed_and_nothing_of_a_restart(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, "ca4_sdk")  # a fresh runtime (restored after the test)
    monkeypatch.setattr(importlib.metadata, "distribution", _InstalledSdk("first"))

    kernel = _install_cell(monkeypatch, pip_exit_code=0)

    printed = capsys.readouterr().out
    assert printed.splitlines()[-1].endswith(" from https://edge.example/sdk/")
    assert "restart" not in printed
    assert kernel["_ca4_sdk_at_import"] == "first"  # what the kernel now runs


def test_every_cell_imports_the_modules_it_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a runtime restart a cell is run again without those above: cells 5, 7 and 9 used
    ``os`` that only the first imported (NameError)."""
    for source in _code_cells():
        tree = ast.parse(
            "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%"))
        )
        imported = {
            (alias.asname or alias.name).split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        used = {
            node.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Name) and node.id in sys.stdlib_module_names
        }
        assert used <= imported, f"{used - imported} not imported in:\n{source[:200]}"


def test_the_reporter_cell_turns_on_info_logging_of_the_sdk_alone() -> None:
    """``logging.basicConfig(level=logging.INFO)`` showed every library's INFO lines too."""
    imports_and_logging = [
        node
        for node in ast.parse(_cell("cell-05")).body
        if isinstance(node, ast.Import) or ast.unparse(node).startswith(("logging.", "ca4_sdk."))
    ]
    asks = (
        "import logging\n"
        "for name in ('ca4_sdk', 'urllib3'): print(logging.getLogger(name).isEnabledFor(20))"
    )
    source = ast.unparse(ast.Module(body=imports_and_logging, type_ignores=[])) + "\n" + asks

    # A fresh interpreter, as a fresh kernel: pytest's root logger has handlers already.
    done = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, check=True, timeout=60
    )

    assert done.stdout.split() == ["True", "False"]  # the SDK's INFO lines, not urllib3's


def test_the_first_cell_takes_a_pasted_edge_url_with_stray_whitespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "google.colab", None)
    monkeypatch.setenv("CA4_EDGE_API_URL", " https://edge.example/ \n")
    monkeypatch.setenv("CA4_API_KEY", "ca4-dev-key")

    cell = _run(_cell("cell-01").split("print(", 1)[0], {})

    assert cell["CA4_EDGE"] == "https://edge.example"


class _RefusedReporter:
    """A reporter whose every report the edge refused (a wrong key)."""

    session_id = "s1"
    stats = "ReporterStats(delivered=0)"

    def report_once(self) -> DeliveryResult:
        return DeliveryResult(event_id="e", delivered=False, error="HTTP 401: Invalid API key")


def test_the_workload_cell_counts_only_the_reports_delivered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "2 reports sent from here" when the edge had refused both."""
    monkeypatch.setitem(sys.modules, "torch", None)  # NumPy on the CPU
    monkeypatch.setenv("QUICKSTART_WORKLOAD_S", "0.3")
    monkeypatch.setenv("QUICKSTART_SAMPLE_EVERY_S", "0.1")
    reporter = _RefusedReporter()

    _run(_cell("cell-07"), {"os": os, "reporter": reporter, "sent": [reporter.report_once()]})

    printed = capsys.readouterr().out
    counted = re.search(r"\b(\d+) of (\d+) reports sent from here delivered", printed)
    assert counted is not None, printed
    assert int(counted[1]) == 0
    assert int(counted[2]) >= 2
    assert "HTTP 401: Invalid API key" in printed  # why


def test_with_nothing_read_back_the_table_and_plot_cells_say_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """They ended in ``IndexError: list index out of range`` (``columns = list(rows[0])``)."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for cell_id, says in (("cell-10", "No table"), ("cell-11", "No plot")):
        _run(_cell(cell_id), {"events": {}, "reporter": _RefusedReporter()})
        assert capsys.readouterr().out.startswith(says), cell_id


class _FakeIPython:
    """``get_ipython()`` for a cell run here with its magics: ``%pip install`` unhides the
    modules ``installs`` names (as pip would make them importable), or installs nothing."""

    def __init__(self, installs: dict[str, object]) -> None:
        self.installs = installs
        self.magics: list[tuple[str, str]] = []

    def run_line_magic(self, name: str, line: str) -> None:
        self.magics.append((name, line))
        for module, original in self.installs.items():
            if original is None:
                sys.modules.pop(module, None)
            else:
                sys.modules[module] = original  # type: ignore[assignment]


def _with_magics(cell_id: str) -> str:
    """One cell's source as IPython runs it: its magics as ``get_ipython()`` calls."""
    from IPython.core.inputtransformer2 import TransformerManager

    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    (source,) = ["".join(c["source"]) for c in notebook["cells"] if c.get("id") == cell_id]
    return TransformerManager().transform_cell(source)


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> dict[str, object]:
    """Make ``modules`` unimportable here, as on a fresh Jupyter; what they were before."""
    before = {module: sys.modules.get(module) for module in modules}
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)
    return before


@dataclass(frozen=True)
class _Install:
    """A cell that needs a package a fresh, non-Colab Jupyter may lack."""

    cell_id: str
    modules: tuple[str, ...]
    """What the package provides, hidden here as on that Jupyter."""
    pip: str
    said: str
    """The first line the cell prints when the package is missing."""
    refusal: str
    """The cell's error when the install left it missing."""
    then: str
    """What the cell prints next once it is installed."""


INSTALLS = {
    # Neither PyTorch nor NumPy: the cell stopped at `import numpy` (ModuleNotFoundError).
    "numpy for the workload": _Install(
        "cell-07",
        ("numpy",),
        "install --quiet numpy",
        "neither PyTorch nor NumPy is installed: installing NumPy\n",
        "this cell needs NumPy (or PyTorch) and NumPy did not install (pip's error is above): "
        "install it in this kernel (%pip install numpy) and run the cell again",
        " matrix products on cpu\n",
    ),
    # The plot stopped at `import matplotlib.pyplot`.
    "matplotlib for the plot": _Install(
        "cell-11",
        ("matplotlib", "matplotlib.pyplot"),
        "install --quiet matplotlib",
        "matplotlib is not installed: installing it\n",
        "the plot needs matplotlib and it did not install (pip's error is above): install it "
        "in this kernel (%pip install matplotlib) and run the cell again",
        "No plot: no report was read back (the read-back cell above says why).\n",
    ),
}


@pytest.mark.parametrize("jupyter", ["pip installs it", "pip fails", "already there"])
@pytest.mark.parametrize("case", INSTALLS.values(), ids=INSTALLS.keys())
def test_a_cell_installs_what_a_fresh_jupyter_lacks_or_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: _Install,
    jupyter: str,
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setenv("QUICKSTART_WORKLOAD_S", "0.1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    fresh = jupyter != "already there"
    hidden = _hide(monkeypatch, *case.modules) if fresh else {}
    ipython = _FakeIPython(hidden if jupyter == "pip installs it" else {})
    namespace = {
        "os": os,
        "events": {},
        "reporter": _RefusedReporter(),
        "sent": [],
        "get_ipython": lambda: ipython,
    }

    if jupyter == "pip fails":
        with pytest.raises(RuntimeError) as caught:
            _run(_with_magics(case.cell_id), namespace)
        assert str(caught.value) == case.refusal
    else:
        _run(_with_magics(case.cell_id), namespace)

    assert ipython.magics == ([("pip", case.pip)] if fresh else [])
    printed = capsys.readouterr().out
    assert printed.startswith(case.said) is fresh
    assert (case.then in printed) is (jupyter != "pip fails")
