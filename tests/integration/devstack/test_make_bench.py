"""``make bench``, run as the README has a user run it, at small sizes.

The real target runs every bench part against the dev stack (the processor and the worker as
their own uvicorn processes, the bare clients beside them) with the README's size knobs turned
down and ``CA4_BENCH_RESULTS_DIR`` pointing at the test's own folder, so the committed results
are not replaced. The test checks what a user reads: each part's summary line, its JSON with the
figures issue 17 asks for, and its plot. The figures themselves are not judged: speed is the
bench's job, and a minute's run on a shared machine says nothing about it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ca4_worker.core.metrics import PROJECTION_STAGES, STORE_STAGES

from tests.support.services import Endpoints

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.mongo,
    pytest.mark.e2e,
    pytest.mark.slow,
    # Past the suite's 300 s: the make call below has its own deadline, shorter than this.
    pytest.mark.timeout(900),
    pytest.mark.stand_in(
        "make bench at its committed sizes (3 rounds of 100,000 events, about 9 minutes): run "
        "at small sizes instead (one round of 20,000, 2,000 ingest events), figures not judged"
    ),
]

REPO_ROOT = Path(__file__).resolve().parents[3]
COMMITTED_RESULTS = REPO_ROOT / "bench" / "results"
MAKE_TIMEOUT_S = 600.0
SMALL = {
    "CA4_BENCH_WORKER_EVENTS": "20000",
    "CA4_BENCH_WORKER_ROUNDS": "1",
    "CA4_BENCH_WORKER_LATENCY_SECONDS": "2",
    # Store batches of 1,000 give the throughput window several batches of 20,000 events.
    "CA4_STORE_MAX_RECORDS": "1000",
    "CA4_BENCH_INGEST_EVENTS": "2000",
    "CA4_BENCH_INGEST_SECONDS": "2",
}
PARTS_WITH_PLOTS = ("ingest", "worker")
ISSUE_17_FIGURES = (
    "worker_vs_bare_ratio",
    "worker_vs_pipelined_bare_ratio",
    "stored_latency_ms_p50",
    "stored_latency_ms_p99",
    "projected_latency_ms_p50",
    "projected_latency_ms_p99",
)


def _digests(folder: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
        if path.is_file()
    }


def _part(results: Path, name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((results / f"{name}.json").read_text())
    return document


def test_make_bench_writes_every_part_with_its_figures_and_plots(
    services: Endpoints, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    committed_before = _digests(COMMITTED_RESULTS)

    completed = subprocess.run(
        ["make", "bench"],
        cwd=REPO_ROOT,
        env={**os.environ, **SMALL, "CA4_BENCH_RESULTS_DIR": str(results)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=MAKE_TIMEOUT_S,
        check=False,
    )

    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "FAILED" not in output
    parts = sorted(path.stem for path in results.glob("*.json"))
    assert parts == ["event_size", "ingest", "worker"], output
    for name in parts:
        assert f"==> bench {name}" in output
        assert f"{name}: " in output
        assert f"-> {results / name}.json" in output
    for name in PARTS_WITH_PLOTS:
        assert (results / f"{name}.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    worker = _part(results, "worker")
    assert worker["events"] == 20000
    assert worker["rounds"] == 1
    assert len(worker["per_round"]) == 1
    for figure in ISSUE_17_FIGURES:
        assert worker[figure] > 0, figure
    assert set(worker["store_stages"]) == set(STORE_STAGES)
    assert set(worker["projection_stages"]) == set(PROJECTION_STAGES)
    ingest = _part(results, "ingest")
    assert ingest["batch_vs_bare_ratio"] > 0
    assert ingest["batch"]["statuses"] == {"202": ingest["batch"]["requests"]}
    assert _part(results, "event_size")["by_gpu_count"]

    assert _digests(COMMITTED_RESULTS) == committed_before
