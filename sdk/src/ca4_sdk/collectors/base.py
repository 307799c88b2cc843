"""What every GPU collector returns, and the helpers they share.

Samples are plain dicts shaped like ``ca4_schemas.GpuSample`` so the SDK needs no pydantic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

GpuSampleDict = dict[str, Any]

MEASURED_FIELDS: tuple[str, ...] = (
    "pci_bus_id",
    "serial",
    "vbios_version",
    "compute_capability",
    "memory_total_mib",
    "memory_used_mib",
    "memory_free_mib",
    "memory_reserved_mib",
    "utilization_gpu_pct",
    "utilization_memory_pct",
    "utilization_encoder_pct",
    "utilization_decoder_pct",
    "temperature_gpu_c",
    "temperature_memory_c",
    "power_draw_w",
    "power_limit_w",
    "energy_consumption_j",
    "clock_sm_mhz",
    "clock_memory_mhz",
    "clock_graphics_mhz",
    "clock_sm_max_mhz",
    "fan_speed_pct",
    "performance_state",
    "pcie_tx_kib_s",
    "pcie_rx_kib_s",
    "pcie_link_gen",
    "pcie_link_width",
    "ecc_errors_corrected",
    "ecc_errors_uncorrected",
    "retired_pages",
    "throttle_reasons",
    "compute_mode",
    "persistence_mode",
    "processes",
)
"""Optional ``GpuSample`` fields; the self-check lists those a collector could not read."""

THROTTLE_REASON_BITS: tuple[tuple[int, str], ...] = (
    (0x001, "gpu_idle"),
    (0x002, "applications_clocks_setting"),
    (0x004, "sw_power_cap"),
    (0x008, "hw_slowdown"),
    (0x010, "sync_boost"),
    (0x020, "sw_thermal_slowdown"),
    (0x040, "hw_thermal_slowdown"),
    (0x080, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)
"""NVML's clock throttle (event) reason bits, as nvidia-smi and NVML both report them."""

COMPUTE_MODES = {0: "Default", 1: "Exclusive_Thread", 2: "Prohibited", 3: "Exclusive_Process"}

MAX_TEXT = 128
MAX_ERROR_TEXT = 512
MAX_ERRORS = 16
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def short_text(value: object, limit: int = MAX_TEXT) -> str | None:
    """A bounded, printable string for the contract's text fields, or None when empty."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = _CONTROL_CHARS.sub("", str(value)).strip()
    return text[:limit].strip() or None


def throttle_reasons_from_mask(mask: int) -> list[str]:
    """Decode a throttle-reason bitmask into stable names (``gpu_idle`` excluded: not a cap)."""
    return [name for bit, name in THROTTLE_REASON_BITS if mask & bit and name != "gpu_idle"]


@dataclass
class CollectorResult:
    """GPU samples plus the self-check: which collector ran and what it could not read."""

    collector: str
    """``nvml``, ``nvidia-smi`` or ``none``."""
    gpus: list[GpuSampleDict] = field(default_factory=list)
    unavailable_fields: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    driver_version: str | None = None
    cuda_version: str | None = None
    nvml_version: str | None = None
    read_lists: set[str] = field(default_factory=set, repr=False)
    """List fields (``processes``, ``throttle_reasons``) read successfully, even when empty."""

    def add_error(self, message: str) -> None:
        """Record a collection error once, bounded to what the contract accepts."""
        text = short_text(message, MAX_ERROR_TEXT)
        if text and text not in self.errors and len(self.errors) < MAX_ERRORS:
            self.errors.append(text)

    def finish(self) -> CollectorResult:
        """Fill ``unavailable_fields``: a field missing on every GPU is one the host can't read."""
        if self.gpus:
            missing = {
                name
                for name in MEASURED_FIELDS
                if all(gpu.get(name) in (None, []) for gpu in self.gpus)
            }
            # Empty process and throttle lists are real readings, not failures.
            missing -= {
                name for name in ("processes", "throttle_reasons") if name in self.read_lists
            }
            self.unavailable_fields = sorted(set(self.unavailable_fields) | missing)
        return self
