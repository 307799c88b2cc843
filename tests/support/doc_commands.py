"""The commands the README and the guides give users, as the tests that run them read them."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
IN_POD = re.compile(
    r"kubectl -n app exec (?:-it )?deploy/ca4-app-worker -c worker -- (python -c '[^']*'[^`]*)`"
)


def bash_block_with(marker: str) -> str:
    """The README's fenced bash block that holds ``marker`` (exactly one must)."""
    readme = README.read_text(encoding="utf-8")
    blocks = [block.split("```", 1)[0] for block in readme.split("```bash\n")[1:]]
    (block,) = [block for block in blocks if marker in block]
    return block


def in_pod_python(doc: str, marker: str) -> list[str]:
    """The ``python -c '...' ARGS`` a doc (path from the repository root) runs in a worker pod
    with ``kubectl exec`` (the one holding ``marker``; the doc's line breaks are spaces), as
    argv for this interpreter, the nearest to the worker image's Python this machine has."""
    parts = (ROOT / doc).read_text(encoding="utf-8").split("```")
    # A fenced block's line ends its command; in prose a command in backticks may wrap.
    parts[1::2] = [block.replace("\n", "`\n") for block in parts[1::2]]
    text = " ".join("`".join(parts).split())
    (command,) = [found for found in IN_POD.findall(text) if marker in found]
    argv = shlex.split(command)
    assert argv[0] == "python", command
    return [sys.executable, *argv[1:]]


def run_as_bash(
    script: str,
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``script`` (lines a doc gives a user) run by bash as a careful user's shell would:
    stopping at the first failing command, unset variable or failing pipe; output captured."""
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )
