"""Which Prometheus metric each numeric ``GpuSample`` field becomes, in which unit.

Names and units follow NVIDIA's DCGM exporter (``etc/default-counters.csv``,
``etc/dcp-metrics-included.csv`` and ``dcgm_fields.h``), so dashboards and queries written for
DCGM work on these series; a field DCGM has no name for keeps a ``ca4_gpu_*`` name. Labels are
the exporter's (``gpu``, ``UUID``, ``modelName``, ``Hostname``, ``pci_bus_id`` and, for a MIG
slice, ``GPU_I_ID``, ``GPU_I_PROFILE``) plus ours (``session_id``, ``project``,
``mig_parent_uuid``, ``tenant``). ``docs/gpu-metrics.md`` is the table for people; a unit test
checks this module against the committed DCGM field list.

Every series is a gauge: the worker mirrors the newest reading a client sent, it does not count.
DCGM declares a few of these as counters (energy, ECC totals); ``rate()`` and ``increase()``
work on them all the same.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Final

from ca4_schemas import GpuMetadataReported, GpuSample, bounded_text

PROJECT_LABEL: Final = "project"
"""The report label that becomes the ``project`` metric label (and the first usage roll-up)."""

DCGM_LABELS: Final = [
    "gpu",
    "UUID",
    "modelName",
    "Hostname",
    "pci_bus_id",
    "GPU_I_ID",
    "GPU_I_PROFILE",
    "mig_parent_uuid",
    "session_id",
    "project",
    "tenant",
]
"""Label names of every per-GPU series (the DCGM exporter's first, then ours). ``tenant`` is the
reporting key's: each tenant has its own series of a GPU UUID."""

LABEL_VALUE_MAX_BYTES: Final = 64
"""The most UTF-8 bytes of a label value a report chooses: every per-GPU label but ``tenant``
(the key file names it) and the indexes (numbers). The contract allows 128 characters (512
bytes) and 256 for the ``project`` label; real values fit in 64 (a GPU or MIG UUID is 40-50
characters, a PCI bus id 16, an SDK session id about 30, a Kubernetes pod name at most 63), so
the series caps bound ``/metrics`` in bytes too (docs/gpu-metrics.md). Bytes, not characters:
the body, the worker's memory and Prometheus' ``label_value_length_limit`` count bytes."""


def bounded_label(value: str) -> str:
    """``value`` cut to :data:`LABEL_VALUE_MAX_BYTES` (:func:`ca4_schemas.bounded_text`), so
    that values that differ only past the bound (two GPUs' UUIDs, two hosts) still name
    different series."""
    return bounded_text(value, LABEL_VALUE_MAX_BYTES)


THROTTLE_REASON_BITS: Final = {
    "gpu_idle": 0x001,
    "applications_clocks_setting": 0x002,
    "sw_power_cap": 0x004,
    "hw_slowdown": 0x008,
    "sync_boost": 0x010,
    "sw_thermal_slowdown": 0x020,
    "hw_thermal_slowdown": 0x040,
    "hw_power_brake_slowdown": 0x080,
    "display_clock_setting": 0x100,
}
"""NVML's clock throttle reason bits: the SDK decodes the mask into these names, DCGM exports
the mask (``DCGM_FI_DEV_CLOCK_THROTTLE_REASONS``)."""

COMPUTE_MODES: Final = {
    "Default": 0,
    "Exclusive_Thread": 1,
    "Prohibited": 2,
    "Exclusive_Process": 3,
}
"""NVML's compute mode numbers, as DCGM exports them."""


def _throttle_mask(sample: GpuSample) -> float | None:
    # An empty list is a real reading: no throttling, 0 as DCGM exports it. A collector that
    # could not read the reasons lists the field as unavailable, and GpuField.value then gives
    # no series, better than a false 0. For a MIG slice the SDK's collectors never read them
    # (DCGM exports them per GPU), so there an empty list is no reading.
    if sample.mig is not None and not sample.throttle_reasons:
        return None
    return float(sum(THROTTLE_REASON_BITS.get(reason, 0) for reason in sample.throttle_reasons))


def _pstate(sample: GpuSample) -> float | None:
    state = sample.performance_state
    return float(state[1:]) if state is not None else None


def _compute_mode(sample: GpuSample) -> float | None:
    mode = sample.compute_mode
    return float(COMPUTE_MODES[mode]) if mode in COMPUTE_MODES else None


def _scaled(field_name: str, factor: float) -> Callable[[GpuSample], float | None]:
    def read(sample: GpuSample) -> float | None:
        value = getattr(sample, field_name)
        return None if value is None else float(value) * factor

    return read


def _process_count(sample: GpuSample) -> float | None:
    return float(len(sample.processes))  # none running is 0; unreadable is unavailable


@dataclass(frozen=True)
class GpuField:
    """One exported metric: its name, the contract field it comes from, and the unit."""

    metric: str
    source: str
    """The ``GpuSample`` field (``processes`` counts the list)."""
    unit: str
    """Unit of the exported value, as the DCGM field list states it."""
    help: str
    read: Callable[[GpuSample], float | None] | None = None
    """How to compute the value when it is not the field itself."""

    @property
    def is_dcgm(self) -> bool:
        """Whether the metric carries a DCGM field name."""
        return self.metric.startswith("DCGM_FI_")

    def value(self, sample: GpuSample, unavailable: Collection[str] = ()) -> float | None:
        """This metric's value for ``sample``; ``None`` when the sample lacks it or the
        collector listed its field in ``unavailable`` (``CollectorStatus.unavailable_fields``:
        the only way to tell an unread list field from an empty one)."""
        if self.source in unavailable:
            return None
        if self.read is not None:
            return self.read(sample)
        value = getattr(sample, self.source)
        return None if value is None else float(value)


GPU_FIELDS: Final = (
    GpuField("DCGM_FI_DEV_GPU_UTIL", "utilization_gpu_pct", "percent", "GPU utilization (in %)."),
    GpuField(
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        "utilization_memory_pct",
        "percent",
        "Memory utilization (in %).",
    ),
    GpuField(
        "DCGM_FI_DEV_ENC_UTIL", "utilization_encoder_pct", "percent", "Encoder utilization (in %)."
    ),
    GpuField(
        "DCGM_FI_DEV_DEC_UTIL", "utilization_decoder_pct", "percent", "Decoder utilization (in %)."
    ),
    GpuField(
        "DCGM_FI_DEV_FB_TOTAL", "memory_total_mib", "MiB", "Framebuffer memory total (in MiB)."
    ),
    GpuField("DCGM_FI_DEV_FB_USED", "memory_used_mib", "MiB", "Framebuffer memory used (in MiB)."),
    GpuField("DCGM_FI_DEV_FB_FREE", "memory_free_mib", "MiB", "Framebuffer memory free (in MiB)."),
    GpuField(
        "DCGM_FI_DEV_FB_RESERVED",
        "memory_reserved_mib",
        "MiB",
        "Framebuffer memory reserved (in MiB).",
    ),
    GpuField("DCGM_FI_DEV_GPU_TEMP", "temperature_gpu_c", "C", "GPU temperature (in C)."),
    GpuField("DCGM_FI_DEV_MEMORY_TEMP", "temperature_memory_c", "C", "Memory temperature (in C)."),
    GpuField("DCGM_FI_DEV_POWER_USAGE", "power_draw_w", "W", "Power draw (in W)."),
    GpuField(
        "DCGM_FI_DEV_ENFORCED_POWER_LIMIT", "power_limit_w", "W", "Enforced power limit (in W)."
    ),
    GpuField(
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "energy_consumption_j",
        "mJ",
        "Total energy consumption since the driver loaded (in mJ).",
        _scaled("energy_consumption_j", 1000.0),
    ),
    GpuField("DCGM_FI_DEV_SM_CLOCK", "clock_sm_mhz", "MHz", "SM clock frequency (in MHz)."),
    GpuField(
        "DCGM_FI_DEV_MEM_CLOCK", "clock_memory_mhz", "MHz", "Memory clock frequency (in MHz)."
    ),
    GpuField(
        "ca4_gpu_clock_graphics_mhz",
        "clock_graphics_mhz",
        "MHz",
        "Graphics clock frequency (in MHz); DCGM has no field for it.",
    ),
    GpuField("DCGM_FI_DEV_MAX_SM_CLOCK", "clock_sm_max_mhz", "MHz", "Maximum SM clock (in MHz)."),
    GpuField("DCGM_FI_DEV_FAN_SPEED", "fan_speed_pct", "percent", "Fan speed (in %)."),
    GpuField(
        "DCGM_FI_DEV_PSTATE", "performance_state", "pstate", "Performance state (0 = P0).", _pstate
    ),
    GpuField(
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        "pcie_tx_kib_s",
        "bytes/s",
        "PCIe transmit throughput (in bytes/s).",
        _scaled("pcie_tx_kib_s", 1024.0),
    ),
    GpuField(
        "DCGM_FI_PROF_PCIE_RX_BYTES",
        "pcie_rx_kib_s",
        "bytes/s",
        "PCIe receive throughput (in bytes/s).",
        _scaled("pcie_rx_kib_s", 1024.0),
    ),
    GpuField("DCGM_FI_DEV_PCIE_LINK_GEN", "pcie_link_gen", "generation", "PCIe link generation."),
    GpuField("DCGM_FI_DEV_PCIE_LINK_WIDTH", "pcie_link_width", "lanes", "PCIe link width."),
    GpuField(
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "ecc_errors_corrected",
        "errors",
        "Volatile corrected (single-bit) ECC errors.",
    ),
    GpuField(
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "ecc_errors_uncorrected",
        "errors",
        "Volatile uncorrected (double-bit) ECC errors.",
    ),
    GpuField(
        "ca4_gpu_retired_pages",
        "retired_pages",
        "pages",
        "Retired or remapped memory pages; DCGM splits them by cause.",
    ),
    GpuField(
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
        "throttle_reasons",
        "bitmask",
        "Active clock throttle reasons (NVML bitmask).",
        _throttle_mask,
    ),
    GpuField(
        "DCGM_FI_DEV_COMPUTE_MODE", "compute_mode", "enum", "Compute mode (NVML).", _compute_mode
    ),
    GpuField(
        "DCGM_FI_DEV_PERSISTENCE_MODE",
        "persistence_mode",
        "boolean",
        "Persistence mode (1 = enabled).",
    ),
    GpuField(
        "ca4_gpu_processes",
        "processes",
        "processes",
        "Compute processes seen on the GPU; DCGM has no such gauge.",
        _process_count,
    ),
)
"""Every numeric (or numerically encodable) ``GpuSample`` field the worker exports."""


def dcgm_labels(sample: GpuSample, event: GpuMetadataReported) -> tuple[str, ...]:
    """The label values of ``sample``'s series, in :data:`DCGM_LABELS` order, each value the
    report chose bounded (:func:`bounded_label`)."""
    mig = sample.mig
    return (
        str(sample.index),
        bounded_label(sample.uuid),
        bounded_label(sample.name),
        bounded_label(event.payload.host.hostname),
        bounded_label(sample.pci_bus_id or ""),
        str(mig.gpu_instance_id) if mig is not None else "",
        bounded_label(mig.profile or "") if mig is not None else "",
        bounded_label(mig.parent_uuid) if mig is not None else "",
        bounded_label(event.session_id),
        bounded_label(event.labels.get(PROJECT_LABEL, "")),
        event.tenant,
    )
