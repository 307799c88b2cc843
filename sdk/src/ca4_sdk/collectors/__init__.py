"""Pick the best GPU collector on this host: NVML, else nvidia-smi, else none (CPU runtime)."""

from __future__ import annotations

import logging
from typing import Protocol

from ca4_sdk.collectors.base import CollectorResult, GpuSampleDict
from ca4_sdk.collectors.nvidia_smi import NvidiaSmiCollector, NvidiaSmiError
from ca4_sdk.collectors.nvidia_smi import available as nvidia_smi_available
from ca4_sdk.collectors.nvml import NvmlCollector, NvmlUnavailableError

__all__ = ["AutoCollector", "CollectorResult", "GpuCollector", "GpuSampleDict"]

logger = logging.getLogger("ca4_sdk")


class GpuCollector(Protocol):
    """Anything that can produce a :class:`CollectorResult`."""

    name: str

    def collect(self) -> CollectorResult:
        """Read every GPU on this host."""
        ...


class AutoCollector:
    """Chooses NVML, then nvidia-smi, then none, once; remembers why the better ones failed.

    ``prefer`` forces one collector (``nvml``, ``nvidia-smi`` or ``none``), e.g. for tests.
    """

    def __init__(self, prefer: str | None = None) -> None:
        self._setup_errors: list[str] = []
        self._collector: GpuCollector | None = None
        self.name = "none"
        if prefer in (None, "nvml"):
            try:
                self._collector = NvmlCollector()
                self.name = "nvml"
                return
            except NvmlUnavailableError as error:
                self._setup_errors.append(f"nvml: {error}")
        if prefer in (None, "nvidia-smi") and nvidia_smi_available():
            self._collector = NvidiaSmiCollector()
            self.name = "nvidia-smi"
        elif prefer in (None, "nvidia-smi"):
            self._setup_errors.append("nvidia-smi: not found on PATH")

    def collect(self) -> CollectorResult:
        """Read every GPU; an empty list with the reasons when no collector works.

        A collector that fails outright (nvidia-smi gone, NVML failing in a way it does not
        catch) gives a ``none`` result carrying the error, never an exception: the API then
        hears that the GPUs can no longer be read, instead of hearing nothing.
        """
        if self._collector is None:
            result = CollectorResult(collector="none")
        else:
            try:
                result = self._collector.collect()
            except NvidiaSmiError as error:
                result = CollectorResult(collector="none")
                result.add_error(f"nvidia-smi: {error}")
            except Exception as error:
                result = CollectorResult(collector="none")
                result.add_error(f"{self.name}: {type(error).__name__}: {error}")
        for message in self._setup_errors:
            # A GPU host without NVML but with nvidia-smi is normal; only say so in the report.
            result.add_error(message)
        return result

    def close(self) -> None:
        """Release NVML if it was loaded."""
        if isinstance(self._collector, NvmlCollector):
            self._collector.close()
