"""The README stays true to the code: configuration tables and the commands it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_configuration_tables_are_generated_from_the_settings_classes() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/config_reference.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_configuration_variable_says_what_it_means() -> None:
    block = (ROOT / "README.md").read_text(encoding="utf-8").split("<!-- BEGIN CONFIG -->")[1]
    rows = [
        line.split("|")
        for line in block.split("<!-- END CONFIG -->")[0].splitlines()
        if line.startswith("| `CA4_")
    ]
    unexplained = [cells[1].strip() for cells in rows if not cells[3].strip()]

    assert rows
    assert unexplained == [], "settings fields need a docstring (use_attribute_docstrings=True)"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
