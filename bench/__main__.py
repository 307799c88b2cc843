"""``python -m bench``: run every bench part (``bench/<part>.py`` with ``run(results_dir)``).

Each part returns a JSON-ready dict; the runner writes it to ``bench/results/<part>.json``
(parts may also write their own plots there) and prints a one-line summary per part.
Run one part with ``python -m bench ingest``. ``CA4_BENCH_RESULTS_DIR`` sends the results
elsewhere (a trial run at small sizes should not replace the committed ones).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = Path(os.environ.get("CA4_BENCH_RESULTS_DIR") or BENCH_DIR / "results")
_NOT_PARTS = {"__main__", "__init__", "common"}


def discover_parts() -> list[str]:
    """Module names of every bench part in ``bench/`` (files with a ``run`` function)."""
    parts = []
    for path in sorted(BENCH_DIR.glob("*.py")):
        if path.stem in _NOT_PARTS or path.stem.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{path.stem}")
        if callable(getattr(module, "run", None)):
            parts.append(path.stem)
    return parts


def main(selected: list[str]) -> int:
    """Run the selected parts (all when none given); non-zero exit if any part failed."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    parts = selected or discover_parts()
    failed = []
    for part in parts:
        print(f"==> bench {part}", flush=True)
        started = time.monotonic()
        try:
            result = importlib.import_module(f"bench.{part}").run(RESULTS_DIR)
        except Exception as error:
            print(f"    {part} FAILED: {error!r}", flush=True)
            failed.append(part)
            continue
        result.setdefault("part", part)
        result.setdefault("duration_s", round(time.monotonic() - started, 1))
        out = RESULTS_DIR / f"{part}.json"
        out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"    {part}: {result.get('summary', '')} -> {out}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
