"""The Colab quickstart notebook is valid nbformat 4 and its code cells compile."""

from __future__ import annotations

import ast
import json
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[3] / "sdk" / "notebooks" / "colab_quickstart.ipynb"


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
