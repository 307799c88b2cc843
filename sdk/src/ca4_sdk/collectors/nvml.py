"""GPU samples through NVML (``nvidia-ml-py``), the same library nvidia-smi and DCGM use.

Every property is read on its own: a ``Not Supported`` answer marks just that field as
unavailable instead of losing the whole sample. The ``pynvml`` module is injectable so the
collector can be tested with a fake.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any

from ca4_sdk.collectors.base import (
    COMPUTE_MODES,
    CollectorResult,
    GpuSampleDict,
    short_text,
    throttle_reasons_from_mask,
)

MIB = 1024 * 1024


class NvmlUnavailableError(RuntimeError):
    """NVML can't be loaded or initialised on this host."""


def load_pynvml() -> ModuleType:
    """Import ``pynvml`` (the ``nvml`` extra); raise :class:`NvmlUnavailableError` if absent."""
    try:
        return importlib.import_module("pynvml")
    except ImportError as error:
        raise NvmlUnavailableError(
            # Not `pip install ca4-sdk[nvml]`: that name on public PyPI is not ours.
            'nvidia-ml-py is not installed (pip install "nvidia-ml-py>=12.535")'
        ) from error


def _decode(value: Any) -> str | None:
    return short_text(value)


def _float_of(read: Callable[..., Any], *args: Any) -> float:
    return float(read(*args))


def _int_of(read: Callable[..., Any], *args: Any) -> int:
    return int(read(*args))


def _cuda_version(driver_int: int) -> str:
    """NVML encodes CUDA 12.4 as 12040."""
    return f"{driver_int // 1000}.{(driver_int % 1000) // 10}"


class NvmlCollector:
    """Reads every GPU (and MIG slice) through NVML; init once, shut down on :meth:`close`."""

    name = "nvml"

    def __init__(self, nvml: ModuleType | None = None) -> None:
        self._nvml = nvml or load_pynvml()
        try:
            self._nvml.nvmlInit()
        except Exception as error:
            raise NvmlUnavailableError(f"nvmlInit failed: {error}") from error
        self._closed = False
        self._state = threading.Lock()
        """Guards ``_closed`` and ``_closes``, never held across an NVML call (one may hang)."""
        self._closes = 0
        """close() calls so far: a collect initialising NVML again learns of one meanwhile."""

    def close(self) -> None:
        """Release NVML (a later :meth:`collect` initialises it again)."""
        with self._state:
            self._closes += 1
            was_open, self._closed = not self._closed, True
        if was_open:
            self._shutdown()

    def _shutdown(self) -> None:
        # Shutting down: nothing is left to report a failure to.
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()

    def _open_again(self, result: CollectorResult) -> bool:
        """After close(): initialise NVML again (NVML counts its inits, each shutdown undoes
        one), keeping it only when no other thread did meanwhile and no close() came."""
        nvml = self._nvml
        with self._state:
            closes = self._closes
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as error:
            result.add_error(f"nvmlInit failed: {error}")
            return False
        with self._state:
            closed_meanwhile = self._closes != closes
            kept = self._closed and not closed_meanwhile
            if kept:
                self._closed = False
        if not kept:
            self._shutdown()  # another thread's init stands, or close() came after this one
        if closed_meanwhile:
            result.add_error("nvmlInit: closed meanwhile")
            return False
        return True

    def _is_not_supported(self, error: Exception) -> bool:
        not_supported = getattr(self._nvml, "NVML_ERROR_NOT_SUPPORTED", 3)
        return getattr(error, "value", None) == not_supported

    def _read(
        self, result: CollectorResult, sample: GpuSampleDict, key: str, read: Callable[[], Any]
    ) -> None:
        """Store ``read()`` under ``key``; unsupported or failing reads leave the field absent."""
        try:
            value = read()
        except self._nvml.NVMLError as error:
            if not self._is_not_supported(error):
                result.add_error(f"{key}: {error}")
            return
        if value is not None:
            sample[key] = value

    def _sample(self, result: CollectorResult, handle: Any, index: int) -> GpuSampleDict:
        nvml = self._nvml
        sample: GpuSampleDict = {
            "uuid": _decode(nvml.nvmlDeviceGetUUID(handle)),
            "index": index,
            "name": _decode(nvml.nvmlDeviceGetName(handle)),
        }
        read = self._read

        def pci_bus_id() -> str | None:
            return _decode(nvml.nvmlDeviceGetPciInfo(handle).busId)

        def compute_capability() -> str:
            major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
            return f"{major}.{minor}"

        read(result, sample, "pci_bus_id", pci_bus_id)
        read(result, sample, "serial", lambda: _decode(nvml.nvmlDeviceGetSerial(handle)))
        read(
            result, sample, "vbios_version", lambda: _decode(nvml.nvmlDeviceGetVbiosVersion(handle))
        )
        read(result, sample, "compute_capability", compute_capability)
        self._read_memory(result, sample, handle)
        self._read_utilization(result, sample, handle)
        read(
            result,
            sample,
            "temperature_gpu_c",
            lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
        )
        read(result, sample, "temperature_memory_c", lambda: self._memory_temperature(handle))
        read(result, sample, "power_draw_w", lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)
        read(
            result,
            sample,
            "power_limit_w",
            lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
        )
        read(
            result,
            sample,
            "energy_consumption_j",
            lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0,
        )
        for key, clock in (
            ("clock_sm_mhz", nvml.NVML_CLOCK_SM),
            ("clock_memory_mhz", nvml.NVML_CLOCK_MEM),
            ("clock_graphics_mhz", nvml.NVML_CLOCK_GRAPHICS),
        ):
            read(
                result, sample, key, partial(_float_of, nvml.nvmlDeviceGetClockInfo, handle, clock)
            )
        read(
            result,
            sample,
            "clock_sm_max_mhz",
            lambda: float(nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM)),
        )
        read(result, sample, "fan_speed_pct", lambda: float(nvml.nvmlDeviceGetFanSpeed(handle)))
        read(
            result,
            sample,
            "performance_state",
            lambda: f"P{int(nvml.nvmlDeviceGetPerformanceState(handle))}",
        )
        for key, counter in (
            ("pcie_tx_kib_s", nvml.NVML_PCIE_UTIL_TX_BYTES),
            ("pcie_rx_kib_s", nvml.NVML_PCIE_UTIL_RX_BYTES),
        ):
            read(
                result,
                sample,
                key,
                partial(_float_of, nvml.nvmlDeviceGetPcieThroughput, handle, counter),
            )
        read(
            result,
            sample,
            "pcie_link_gen",
            lambda: int(nvml.nvmlDeviceGetCurrPcieLinkGeneration(handle)),
        )
        read(
            result,
            sample,
            "pcie_link_width",
            lambda: int(nvml.nvmlDeviceGetCurrPcieLinkWidth(handle)),
        )
        for key, error_type in (
            ("ecc_errors_corrected", nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
            ("ecc_errors_uncorrected", nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
        ):
            read(
                result,
                sample,
                key,
                partial(
                    _int_of,
                    nvml.nvmlDeviceGetTotalEccErrors,
                    handle,
                    error_type,
                    nvml.NVML_VOLATILE_ECC,
                ),
            )
        read(result, sample, "retired_pages", lambda: self._retired_pages(handle))
        read(result, sample, "throttle_reasons", lambda: self._throttle_reasons(result, handle))
        read(
            result,
            sample,
            "compute_mode",
            lambda: COMPUTE_MODES.get(int(nvml.nvmlDeviceGetComputeMode(handle))),
        )
        read(
            result,
            sample,
            "persistence_mode",
            lambda: bool(nvml.nvmlDeviceGetPersistenceMode(handle)),
        )
        read(result, sample, "processes", lambda: self._processes(result, handle))
        return sample

    def _read_memory(self, result: CollectorResult, sample: GpuSampleDict, handle: Any) -> None:
        nvml = self._nvml
        try:
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
            except (nvml.NVMLError, AttributeError, TypeError):
                # Older drivers lack the v2 call (and with it the reserved figure).
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        except nvml.NVMLError as error:
            if not self._is_not_supported(error):
                result.add_error(f"memory: {error}")
            return
        sample["memory_total_mib"] = memory.total / MIB
        sample["memory_used_mib"] = memory.used / MIB
        sample["memory_free_mib"] = memory.free / MIB
        reserved = getattr(memory, "reserved", None)
        if reserved is not None:
            sample["memory_reserved_mib"] = reserved / MIB

    def _read_utilization(
        self, result: CollectorResult, sample: GpuSampleDict, handle: Any
    ) -> None:
        nvml = self._nvml
        try:
            rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            sample["utilization_gpu_pct"] = float(rates.gpu)
            sample["utilization_memory_pct"] = float(rates.memory)
        except nvml.NVMLError as error:
            if not self._is_not_supported(error):
                result.add_error(f"utilization: {error}")
        self._read(
            result,
            sample,
            "utilization_encoder_pct",
            lambda: float(nvml.nvmlDeviceGetEncoderUtilization(handle)[0]),
        )
        self._read(
            result,
            sample,
            "utilization_decoder_pct",
            lambda: float(nvml.nvmlDeviceGetDecoderUtilization(handle)[0]),
        )

    def _memory_temperature(self, handle: Any) -> float | None:
        nvml = self._nvml
        field_id = getattr(nvml, "NVML_FI_DEV_MEMORY_TEMP", None)
        if field_id is None:
            return None
        (value,) = nvml.nvmlDeviceGetFieldValues(handle, [field_id])
        if value.nvmlReturn != 0:
            return None
        reading = float(value.value.uiVal)
        # Consumer GPUs answer 0 for a sensor they don't have.
        return reading if reading > 0 else None

    def _retired_pages(self, handle: Any) -> int:
        nvml = self._nvml
        return sum(
            len(nvml.nvmlDeviceGetRetiredPages(handle, cause))
            for cause in (
                nvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
                nvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
            )
        )

    def _throttle_reasons(self, result: CollectorResult, handle: Any) -> list[str]:
        nvml = self._nvml
        getter = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or (
            nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        reasons = throttle_reasons_from_mask(int(getter(handle)))
        result.read_lists.add("throttle_reasons")
        return reasons

    def _processes(self, result: CollectorResult, handle: Any) -> list[dict[str, Any]]:
        nvml = self._nvml
        processes = []
        for process in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
            entry: dict[str, Any] = {"pid": int(process.pid)}
            used = getattr(process, "usedGpuMemory", None)
            if used is not None:
                entry["used_memory_mib"] = used / MIB
            try:
                name = short_text(nvml.nvmlSystemGetProcessName(process.pid))
            except nvml.NVMLError:
                name = None
            if name:
                entry["name"] = name
            processes.append(entry)
        result.read_lists.add("processes")
        return processes

    def _mig_samples(
        self, result: CollectorResult, parent: GpuSampleDict, handle: Any
    ) -> list[GpuSampleDict]:
        nvml = self._nvml
        try:
            current_mode, _pending = nvml.nvmlDeviceGetMigMode(handle)
        except (nvml.NVMLError, AttributeError):
            return []
        if current_mode != getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1):
            return []
        try:
            slots = int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))
        except nvml.NVMLError as error:
            result.add_error(f"GPU {parent['index']} MIG slices: {error}")
            return []
        samples = []
        for mig_index in range(slots):
            try:
                mig_handle = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, mig_index)
            except nvml.NVMLError:
                continue  # slots without a configured slice
            try:
                samples.append(self._mig_sample(result, parent, mig_handle))
            except nvml.NVMLError as error:
                # A slice lost mid-collection: the GPU's other slices and the host still report.
                result.add_error(f"GPU {parent['index']} MIG slice {mig_index}: {error}")
        return samples

    def _mig_sample(
        self, result: CollectorResult, parent: GpuSampleDict, mig_handle: Any
    ) -> GpuSampleDict:
        nvml = self._nvml
        name = _decode(nvml.nvmlDeviceGetName(mig_handle)) or parent["name"]
        mig: dict[str, Any] = {
            "parent_uuid": parent["uuid"],
            "gpu_instance_id": int(nvml.nvmlDeviceGetGpuInstanceId(mig_handle)),
        }
        self._read(
            result,
            mig,
            "compute_instance_id",
            partial(_int_of, nvml.nvmlDeviceGetComputeInstanceId, mig_handle),
        )
        profile = name.rsplit("MIG ", 1)[1] if "MIG " in name else None
        if profile:
            mig["profile"] = short_text(profile)
        sample: GpuSampleDict = {
            "uuid": _decode(nvml.nvmlDeviceGetUUID(mig_handle)),
            "index": parent["index"],
            "name": name,
            "mig": mig,
        }
        for key in (
            "pci_bus_id",
            "compute_capability",
            "temperature_gpu_c",
            "performance_state",
        ):
            if key in parent:
                sample[key] = parent[key]
        self._read_memory(result, sample, mig_handle)
        self._read(result, sample, "processes", partial(self._processes, result, mig_handle))
        return sample

    def collect(self) -> CollectorResult:
        """Read every GPU; NVML failures (of a field, a GPU, a MIG slice, the GPU count) are
        recorded in the result's errors, never raised."""
        nvml = self._nvml
        result = CollectorResult(collector=self.name)
        # Used again after close() (a reporter's second ``with`` block): NVML answers nothing
        # until it is initialised again.
        if self._closed and not self._open_again(result):
            return result.finish()
        self._read_host(result)
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as error:
            # The driver or every GPU gone mid-run (GPU is lost, driver/library mismatch): a
            # report without GPUs that says so, rather than no report at all.
            result.add_error(f"GPU count: {error}")
            return result.finish()
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                sample = self._sample(result, handle, index)
            except nvml.NVMLError as error:
                result.add_error(f"GPU {index}: {error}")
                continue
            result.gpus.append(sample)
            result.gpus.extend(self._mig_samples(result, sample, handle))
        return result.finish()

    def _read_host(self, result: CollectorResult) -> None:
        nvml = self._nvml
        try:
            result.driver_version = _decode(nvml.nvmlSystemGetDriverVersion())
            result.nvml_version = _decode(nvml.nvmlSystemGetNVMLVersion())
            result.cuda_version = _cuda_version(int(nvml.nvmlSystemGetCudaDriverVersion()))
        except nvml.NVMLError as error:
            result.add_error(f"driver: {error}")
