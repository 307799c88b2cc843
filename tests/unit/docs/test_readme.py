"""The README stays true to the code: configuration tables and the commands it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ca4_processor.validation import parse_report

from tests.support.doc_commands import bash_block_with

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


def test_the_report_sent_by_hand_is_one_the_processor_accepts() -> None:
    """The shell expands the README's here-document as a user's does; the processor's own
    validation must take what it makes."""
    block = bash_block_with("by-hand-")
    assert "Bearer ca4-dev-key" in block
    assert "http://127.0.0.1:8002/v1/metadata " in block
    body = block.split("<<EOF\n", 1)[1].split("\nEOF", 1)[0]
    expanded = subprocess.run(
        ["bash", "-c", f"cat <<EOF\n{body}\nEOF"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    report = parse_report(expanded.encode())

    assert report.session_id.startswith("by-hand-")
    assert report.payload.gpus[0].name == "NVIDIA A100-SXM4-40GB"
