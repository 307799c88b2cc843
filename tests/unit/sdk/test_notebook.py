"""The Colab quickstart notebook is valid nbformat 4, its code cells compile, and it (like the
README) installs the SDK from the edge only, with the dependencies ``sdk/pyproject.toml`` names."""

from __future__ import annotations

import ast
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

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
    assert 'userdata.get("CA4_API_KEY")' in text
    assert "Reporter(" in text
    assert "reporter.start()" in text
    assert "torch" in text
    assert "/v1/sessions/" in text
    imported = {
        alias.name
        for source in _code_cells()
        for node in ast.walk(
            ast.parse("\n".join(line for line in source.splitlines() if not line.startswith("%")))
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
    assert edge[edge.index("--index-url") + 1].endswith("/sdk/")
    assert not {"--extra-index-url", "--find-links", "-f"} & set(edge)
    # Its dependencies by name: "ca4-sdk[nvml]" would ask PyPI for ca4-sdk (dependency
    # confusion), and install PyPI's when the edge install failed.
    assert _requirements(deps) == dependencies
    # %pip carries on after a failed install: the import right after is what stops the cell.
    lines = source.splitlines()
    last_install = max(i for i, line in enumerate(lines) if line.startswith("%pip install"))
    assert any(re.match(r"\s*import ca4_sdk\b", line) for line in lines[last_install + 1 :])
