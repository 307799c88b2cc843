"""Realistic request examples for the OpenAPI docs: a Colab T4 session and a CPU runtime."""

from __future__ import annotations

import uuid
from typing import Any

COLAB_T4_REPORT: dict[str, Any] = {
    "event_id": "0b6f2c1e-8a3d-4d5e-9f10-2b3c4d5e6f70",
    "event_type": "gpu.metadata.reported",
    "schema_version": 1,
    "occurred_at": "2025-06-01T12:00:00Z",
    "source": {"sdk": "ca4-sdk", "sdk_version": "0.1.0", "runtime": "colab"},
    "session_id": "colab-3f9a2b7c",
    "labels": {"project": "llm-finetune", "notebook": "train.ipynb", "run": "run-42"},
    "payload": {
        "host": {
            "hostname": "b7d2c0e1a9f4",
            "os": "Linux",
            "os_release": "6.1.85+",
            "architecture": "x86_64",
            "python_version": "3.11.13",
            "driver_version": "550.54.15",
            "cuda_version": "12.4",
            "nvml_version": "12.550.54.15",
            "cpu_model": "Intel(R) Xeon(R) CPU @ 2.20GHz",
            "cpu_count": 2,
            "cpu_load_1m": 1.12,
            "ram_total_mib": 12976.0,
            "ram_available_mib": 9450.5,
        },
        "gpus": [
            {
                "uuid": "GPU-5a1c3e8f-2b4d-6f80-91a2-b3c4d5e6f708",
                "index": 0,
                "name": "Tesla T4",
                "pci_bus_id": "00000000:00:04.0",
                "compute_capability": "7.5",
                "memory_total_mib": 15360.0,
                "memory_used_mib": 10423.0,
                "memory_free_mib": 4937.0,
                "utilization_gpu_pct": 87.0,
                "utilization_memory_pct": 41.0,
                "temperature_gpu_c": 71.0,
                "power_draw_w": 63.4,
                "power_limit_w": 70.0,
                "clock_sm_mhz": 1590.0,
                "clock_memory_mhz": 5000.0,
                "performance_state": "P0",
                "ecc_errors_corrected": 0,
                "ecc_errors_uncorrected": 0,
                "throttle_reasons": [],
                "persistence_mode": False,
                "processes": [{"pid": 1234, "name": "python3", "used_memory_mib": 10200.0}],
            }
        ],
        "collector": {"collector": "nvml", "unavailable_fields": ["fan_speed_pct"], "errors": []},
    },
}
"""One report from a Colab T4 runtime."""

CPU_RUNTIME_REPORT: dict[str, Any] = {
    **COLAB_T4_REPORT,
    "event_id": "6d1e9a40-3c2b-4f8e-a7d6-5e4f3a2b1c0d",
    "session_id": "colab-cpu-81d0e4aa",
    "payload": {
        "host": {
            "hostname": "4e2a9c71d3b8",
            "os": "Linux",
            "python_version": "3.11.13",
            "cpu_count": 2,
            "ram_total_mib": 12976.0,
        },
        "gpus": [],
        "collector": {"collector": "none", "errors": ["NVML Shared Library Not Found"]},
    },
}
"""A CPU-only runtime: zero GPUs is a valid report."""


_EXAMPLE_EVENT_IDS = (COLAB_T4_REPORT["event_id"], CPU_RUNTIME_REPORT["event_id"])
_EXAMPLE_SESSION_IDS = (COLAB_T4_REPORT["session_id"], CPU_RUNTIME_REPORT["session_id"])


def with_fresh_example_ids(openapi_json: str) -> str:
    """``openapi_json`` with new event and session ids in the examples, for each reader of the
    docs: with fixed ones, the first tenant to try an example in ``/docs`` owned its session,
    and every other tenant's try got ``403 session_forbidden`` and a dead letter for each event
    id. Within one page load a retry reuses the ids, so it is a duplicate, not a second event.
    """
    for event_id in _EXAMPLE_EVENT_IDS:
        openapi_json = openapi_json.replace(event_id, str(uuid.uuid4()))
    for session_id in _EXAMPLE_SESSION_IDS:
        prefix = session_id.rsplit("-", 1)[0]
        openapi_json = openapi_json.replace(f'"{session_id}"', f'"{prefix}-{uuid.uuid4().hex[:8]}"')
    return openapi_json
