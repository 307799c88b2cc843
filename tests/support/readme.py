"""The README's commands, as the tests that run them read them."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def bash_block_with(marker: str) -> str:
    """The README's fenced bash block that holds ``marker`` (exactly one must)."""
    readme = README.read_text(encoding="utf-8")
    blocks = [block.split("```", 1)[0] for block in readme.split("```bash\n")[1:]]
    (block,) = [block for block in blocks if marker in block]
    return block
