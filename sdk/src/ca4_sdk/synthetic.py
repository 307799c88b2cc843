"""Realistic synthetic reports for demos and load tests (``ca4 send``).

Each synthetic session is one runtime with one to eight GPUs of one model, with utilisation,
memory, power and temperature following a bounded random walk, so dashboards look like real
training jobs rather than noise.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from ca4_sdk.collectors.base import CollectorResult
from ca4_sdk.report import ReportDict, build_report


@dataclass(frozen=True)
class GpuModel:
    """The fixed properties of one GPU product."""

    name: str
    memory_total_mib: float
    power_limit_w: float
    idle_power_w: float
    clock_sm_max_mhz: float
    clock_memory_mhz: float
    compute_capability: str
    has_memory_temperature: bool


GPU_MODELS: tuple[GpuModel, ...] = (
    GpuModel("Tesla T4", 15360.0, 70.0, 9.0, 1590.0, 5000.0, "7.5", False),
    GpuModel("NVIDIA L4", 23034.0, 72.0, 16.0, 2040.0, 6251.0, "8.9", False),
    GpuModel("Tesla V100-SXM2-16GB", 16384.0, 300.0, 40.0, 1530.0, 877.0, "7.0", True),
    GpuModel("NVIDIA A100-SXM4-40GB", 40960.0, 400.0, 55.0, 1410.0, 1215.0, "8.0", True),
    GpuModel("NVIDIA A100-SXM4-80GB", 81920.0, 400.0, 60.0, 1410.0, 1593.0, "8.0", True),
    GpuModel("NVIDIA H100 80GB HBM3", 81559.0, 700.0, 70.0, 1980.0, 2619.0, "9.0", True),
)
GPU_WEIGHTS = (40, 20, 5, 15, 10, 10)
"""Colab-like mix: mostly T4s, some L4s and A100s, a few H100s."""


@dataclass
class SyntheticGpu:
    """One GPU's identity and its current load."""

    model: GpuModel
    uuid: str
    index: int
    pci_bus_id: str
    load: float = 0.0


@dataclass
class SyntheticSession:
    """One runtime producing reports."""

    session_id: str
    runtime: str
    hostname: str
    gpus: list[SyntheticGpu]
    labels: dict[str, str]
    rng: random.Random = field(repr=False, default_factory=random.Random)

    def next_report(self) -> ReportDict:
        """The next report of this session, with the load moved one random-walk step."""
        samples = [self._sample(gpu) for gpu in self.gpus]
        collection = CollectorResult(
            collector="nvml" if self.gpus else "none",
            gpus=samples,
            unavailable_fields=["fan_speed_pct"] if self.gpus else [],
            driver_version="550.54.15" if self.gpus else None,
            cuda_version="12.4" if self.gpus else None,
        )
        host: dict[str, Any] = {
            "hostname": self.hostname,
            "os": "Linux",
            "os_release": "6.1.85+",
            "architecture": "x86_64",
            "python_version": "3.11.13",
            "driver_version": collection.driver_version,
            "cuda_version": collection.cuda_version,
            "cpu_model": "Intel(R) Xeon(R) CPU @ 2.20GHz",
            "cpu_count": 2 * max(1, len(self.gpus)) * 4,
            "cpu_load_1m": round(self.rng.uniform(0.2, 4.0), 2),
            "ram_total_mib": 52216.0 * max(1, len(self.gpus)),
            "ram_available_mib": 30000.0,
        }
        return build_report(
            session_id=self.session_id,
            runtime=self.runtime,
            host={k: v for k, v in host.items() if v is not None},
            collection=collection,
            labels=self.labels,
        )

    def _sample(self, gpu: SyntheticGpu) -> dict[str, Any]:
        gpu.load = min(1.0, max(0.0, gpu.load + self.rng.uniform(-0.15, 0.2)))
        model, load = gpu.model, gpu.load
        used = round(model.memory_total_mib * (0.02 + 0.9 * load), 1)
        sample: dict[str, Any] = {
            "uuid": gpu.uuid,
            "index": gpu.index,
            "name": model.name,
            "pci_bus_id": gpu.pci_bus_id,
            "compute_capability": model.compute_capability,
            "memory_total_mib": model.memory_total_mib,
            "memory_used_mib": used,
            "memory_free_mib": round(model.memory_total_mib - used, 1),
            "utilization_gpu_pct": round(100 * load, 1),
            "utilization_memory_pct": round(70 * load, 1),
            "temperature_gpu_c": round(32 + 45 * load + self.rng.uniform(-1, 1), 1),
            "power_draw_w": round(
                model.idle_power_w + (model.power_limit_w - model.idle_power_w) * load, 2
            ),
            "power_limit_w": model.power_limit_w,
            "clock_sm_mhz": round(model.clock_sm_max_mhz * (0.3 + 0.7 * load)),
            "clock_memory_mhz": model.clock_memory_mhz,
            "clock_sm_max_mhz": model.clock_sm_max_mhz,
            "performance_state": "P0" if load > 0.05 else "P8",
            "pcie_link_gen": 4,
            "pcie_link_width": 16,
            "ecc_errors_corrected": 0,
            "ecc_errors_uncorrected": 0,
            "throttle_reasons": ["sw_power_cap"] if load > 0.95 else [],
            "compute_mode": "Default",
            "persistence_mode": True,
            "processes": [{"pid": 1000 + gpu.index, "name": "python3", "used_memory_mib": used - 5}]
            if load > 0.05
            else [],
        }
        if model.has_memory_temperature:
            sample["temperature_memory_c"] = round(35 + 40 * load, 1)
        return sample


def make_sessions(
    count: int, seed: int | None = None, labels: dict[str, str] | None = None
) -> list[SyntheticSession]:
    """``count`` sessions of mixed GPU models (reproducible with ``seed``)."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not secrets
    sessions = []
    for number in range(count):
        model = rng.choices(GPU_MODELS, weights=GPU_WEIGHTS)[0]
        gpu_count = 1 if model.name in ("Tesla T4", "NVIDIA L4") else rng.choice((1, 2, 4, 8))
        session_rng = random.Random(rng.random())  # noqa: S311 - synthetic data
        gpus = [
            SyntheticGpu(
                model=model,
                uuid=f"GPU-{uuid.UUID(int=session_rng.getrandbits(128))}",
                index=index,
                pci_bus_id=f"00000000:{index + 4:02X}:00.0",
                load=session_rng.random(),
            )
            for index in range(gpu_count)
        ]
        sessions.append(
            SyntheticSession(
                session_id=f"synthetic-{uuid.UUID(int=session_rng.getrandbits(128)).hex[:20]}",
                runtime=rng.choice(("colab", "colab", "colab", "kaggle", "jupyter")),
                hostname=f"synthetic-host-{number}",
                gpus=gpus,
                labels={"project": "synthetic", "run": str(number), **(labels or {})},
                rng=session_rng,
            )
        )
    return sessions
