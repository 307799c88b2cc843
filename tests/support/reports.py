"""The one report factory: valid report bodies (what the SDK sends) and the events the
processor makes of them. Tests change one thing and expect one result."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any

from ca4_schemas import GpuMetadataReport, GpuMetadataReported
from ca4_sdk.synthetic import GPU_MODELS, SyntheticGpu, SyntheticSession

_GPU: dict[str, Any] = {
    "uuid": "GPU-5a1c3e8f-2b4d-6f80-91a2-b3c4d5e6f708",
    "index": 0,
    "name": "Tesla T4",
    "pci_bus_id": "00000000:00:04.0",
    "memory_total_mib": 15360.0,
    "memory_used_mib": 10423.0,
    "memory_free_mib": 4937.0,
    "utilization_gpu_pct": 87.0,
    "utilization_memory_pct": 41.0,
    "temperature_gpu_c": 71.0,
    "power_draw_w": 63.4,
    "power_limit_w": 70.0,
    "clock_sm_mhz": 1590.0,
    "performance_state": "P0",
    "processes": [{"pid": 1234, "name": "python3", "used_memory_mib": 10200.0}],
}


def make_report(
    *, session_id: str = "colab-test-session", gpus: int = 1, **overrides: Any
) -> dict[str, Any]:
    """A valid ``GpuMetadataReport`` body as a JSON-ready dict, with a fresh ``event_id``."""
    report: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "gpu.metadata.reported",
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "source": {"sdk": "ca4-sdk", "sdk_version": "0.1.0", "runtime": "colab"},
        "session_id": session_id,
        "labels": {"project": "tests", "run": "r1"},
        "payload": {
            "host": {
                "hostname": "test-host",
                "os": "Linux",
                "python_version": "3.11.9",
                "cpu_count": 2,
                "ram_total_mib": 12976.0,
            },
            "gpus": [
                {**copy.deepcopy(_GPU), "uuid": f"GPU-{index:08d}-test", "index": index}
                for index in range(gpus)
            ],
            "collector": {"collector": "nvml" if gpus else "none"},
        },
    }
    report.update(overrides)
    return report


TEST_KEY_ID = "test-key"
TEST_TENANT = "test-tenant"


def stamped(
    report: GpuMetadataReport,
    received_at: datetime | None = None,
    *,
    key_id: str = TEST_KEY_ID,
    tenant: str = TEST_TENANT,
) -> GpuMetadataReported:
    """The event the processor would publish for ``report`` sent with key ``key_id``."""
    return GpuMetadataReported.stamped(
        report, received_at=received_at or datetime.now(UTC), key_id=key_id, tenant=tenant
    )


H100 = next(model for model in GPU_MODELS if model.name.startswith("NVIDIA H100"))


def h100_session(gpus: int) -> SyntheticSession:
    """A Colab-like SDK session with ``gpus`` H100s (the widest sample: memory temperature
    too), labels and full host facts: the largest reports real clients send."""
    return SyntheticSession(
        session_id=f"size-{uuid.uuid4().hex[:16]}",
        runtime="colab",
        hostname="colab-vm-0123",
        gpus=[
            SyntheticGpu(
                model=H100,
                uuid=f"GPU-{uuid.uuid4()}",
                index=index,
                pci_bus_id=f"00000000:{index + 4:02X}:00.0",
                load=0.5,
            )
            for index in range(gpus)
        ],
        labels={"project": "capacity", "notebook": "train.ipynb", "run": "r1"},
    )
