"""The body weight limit: every valid report fits on its own, batches of ordinary SDK reports
are never refused, and crafted batches are (tests/unit/processor/bad_inputs.py)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from ca4_processor.core.config import Settings
from ca4_schemas import GpuMetadataReport, record_weight
from ca4_schemas.v1 import MAX_GPUS_PER_REPORT, MAX_LABELS, MAX_PROCESSES_PER_GPU

from tests.support.reports import h100_session, make_report

SETTINGS = Settings(ENVIRONMENT="dev")


def compact(value: Any) -> bytes:
    """JSON as the SDK writes it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def largest_sdk_batch(gpus: int) -> bytes:
    """As many of the SDK's H100 reports (a process per GPU, every field it reads, labels) as
    one request takes: up to the batch size, within the decompressed byte limit."""
    session = h100_session(gpus)
    reports: list[bytes] = []
    size = len(b'{"reports":[]}') - 1  # a comma before each report but the first
    while len(reports) < SETTINGS.MAX_BATCH_SIZE:
        report = compact(session.next_report())
        if size + 1 + len(report) > SETTINGS.MAX_DECOMPRESSED_BYTES:
            break
        reports.append(report)
        size += 1 + len(report)
    body = b'{"reports":[' + b",".join(reports) + b"]}"
    assert len(body) == size
    return body


@pytest.mark.parametrize("gpus", [0, 1, 8, 64])
def test_the_largest_batch_of_sdk_reports_weighs_under_the_limit(gpus: int) -> None:
    """So the weight limit never refuses a batch of ordinary reports that the byte limits
    take: their weight is 1.6-2.3 times their bytes, the larger ratios at few GPUs, where the
    batch size limits a batch long before its bytes do."""
    body = largest_sdk_batch(gpus)
    assert record_weight(body) < SETTINGS.MAX_BODY_WEIGHT, (len(body), record_weight(body))


def test_the_heaviest_valid_report_fits_on_its_own() -> None:
    """Most objects and strings the schema lets one report hold, process names as long as it
    allows: it weighs under the limit, so a client can always send any valid report, in a
    batch of one if need be."""
    characters = (chr(code) for code in itertools.count(0x4E00))
    report = make_report()
    report["payload"]["gpus"] = [
        {
            "uuid": f"GPU-{index:08d}",
            "index": index,
            "name": "H100",
            "mig": {"parent_uuid": "GPU-parent", "gpu_instance_id": 1, "profile": "1g.10gb"},
            "throttle_reasons": [next(characters) for _ in range(32)],
            "processes": [
                {"pid": pid, "name": f"{pid:03d}".ljust(128, "x"), "used_memory_mib": 1.0}
                for pid in range(MAX_PROCESSES_PER_GPU)
            ],
        }
        for index in range(MAX_GPUS_PER_REPORT)
    ]
    report["labels"] = {f"k{index}": next(characters) for index in range(MAX_LABELS)}
    report["payload"]["collector"] = {
        "collector": "nvml",
        "unavailable_fields": [next(characters) for _ in range(128)],
        "errors": [next(characters) for _ in range(16)],
    }
    GpuMetadataReport.model_validate(report)
    body = compact(report)
    assert len(body) <= SETTINGS.MAX_DECOMPRESSED_BYTES
    assert record_weight(body) < SETTINGS.MAX_BODY_WEIGHT, record_weight(body)
