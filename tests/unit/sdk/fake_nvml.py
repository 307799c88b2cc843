"""A fake ``pynvml`` that replays recorded NVML answers (see sdk/scripts/record_nvml.py).

Calls absent from the recording answer ``NVML_ERROR_NOT_SUPPORTED``, so hand-written recordings
only list what a GPU actually reports.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

UNINITIALIZED = 1
NOT_SUPPORTED = 3

DEFAULT_CONSTANTS: dict[str, Any] = {
    "NVML_ERROR_NOT_SUPPORTED": NOT_SUPPORTED,
    "NVML_TEMPERATURE_GPU": 0,
    "NVML_CLOCK_GRAPHICS": 0,
    "NVML_CLOCK_SM": 1,
    "NVML_CLOCK_MEM": 2,
    "NVML_PCIE_UTIL_TX_BYTES": 0,
    "NVML_PCIE_UTIL_RX_BYTES": 1,
    "NVML_MEMORY_ERROR_TYPE_CORRECTED": 0,
    "NVML_MEMORY_ERROR_TYPE_UNCORRECTED": 1,
    "NVML_VOLATILE_ECC": 0,
    "NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS": 0,
    "NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR": 1,
    "NVML_FI_DEV_MEMORY_TEMP": 82,
    "NVML_DEVICE_MIG_ENABLE": 1,
    "nvmlMemory_v2": 0x02000028,
}


class FakeNVMLError(Exception):
    """Same shape as pynvml.NVMLError: the code is in ``.value``."""

    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def _revive(value: Any) -> Any:
    if isinstance(value, dict):
        if "__handle__" in value:
            return value["__handle__"]
        return SimpleNamespace(**{key: _revive(item) for key, item in value.items()})
    if isinstance(value, list):
        return [_revive(item) for item in value]
    return value


class FakeNvml:
    """Module-like object: constants as attributes, recorded calls as functions."""

    NVMLError = FakeNVMLError

    def __init__(self, recording: dict[str, Any]) -> None:
        self._calls: dict[str, Any] = recording.get("calls", {})
        self._constants = {**DEFAULT_CONSTANTS, **recording.get("constants", {})}
        self.initialised = False
        self.calls_made: list[str] = []

    def nvmlInit(self) -> None:
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._constants:
            return self._constants[name]
        if not name.startswith("nvml"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            parts = [str(a) if isinstance(a, str) else repr(a) for a in args]
            parts += [f"{k}={v!r}" for k, v in sorted(kwargs.items())]
            key = f"{name}({', '.join(parts)})"
            self.calls_made.append(key)
            if not self.initialised:  # as NVML: nothing answers before nvmlInit or after shutdown
                raise FakeNVMLError(UNINITIALIZED)
            if key not in self._calls:
                raise FakeNVMLError(NOT_SUPPORTED)
            answer = self._calls[key]
            if isinstance(answer, dict) and "nvml_error" in answer:
                raise FakeNVMLError(answer["nvml_error"])
            return _revive(answer)

        return call


MIB = 1024 * 1024


def t4_recording() -> dict[str, Any]:
    """What NVML answers on a Colab Tesla T4 with one PyTorch process (hand-written)."""
    g = "gpu0"
    return {
        "calls": {
            "nvmlSystemGetDriverVersion()": "535.104.05",
            "nvmlSystemGetNVMLVersion()": "12.535.104.05",
            "nvmlSystemGetCudaDriverVersion()": 12020,
            "nvmlDeviceGetCount()": 1,
            "nvmlDeviceGetHandleByIndex(0)": {"__handle__": g},
            f"nvmlDeviceGetUUID({g})": "GPU-6c1a7e4e-2d4b-3c9e-8f1a-5b7d9e0c1a2b",
            f"nvmlDeviceGetName({g})": b"Tesla T4".decode(),
            f"nvmlDeviceGetPciInfo({g})": {"busId": "00000000:00:04.0"},
            f"nvmlDeviceGetSerial({g})": "1323120041234",
            f"nvmlDeviceGetVbiosVersion({g})": "90.04.96.00.01",
            f"nvmlDeviceGetCudaComputeCapability({g})": [7, 5],
            f"nvmlDeviceGetMemoryInfo({g}, version=33554472)": {
                "total": 15360 * MIB,
                "reserved": 266 * MIB,
                "used": 1432 * MIB,
                "free": 13662 * MIB,
            },
            f"nvmlDeviceGetUtilizationRates({g})": {"gpu": 37, "memory": 12},
            f"nvmlDeviceGetEncoderUtilization({g})": [0, 167000],
            f"nvmlDeviceGetDecoderUtilization({g})": [0, 167000],
            f"nvmlDeviceGetTemperature({g}, 0)": 52,
            f"nvmlDeviceGetFieldValues({g}, [82])": [{"nvmlReturn": 0, "value": {"uiVal": 0}}],
            f"nvmlDeviceGetPowerUsage({g})": 33920,
            f"nvmlDeviceGetEnforcedPowerLimit({g})": 70000,
            f"nvmlDeviceGetTotalEnergyConsumption({g})": 8_123_456,
            f"nvmlDeviceGetClockInfo({g}, 1)": 1590,
            f"nvmlDeviceGetClockInfo({g}, 2)": 5000,
            f"nvmlDeviceGetClockInfo({g}, 0)": 1590,
            f"nvmlDeviceGetMaxClockInfo({g}, 1)": 1590,
            f"nvmlDeviceGetFanSpeed({g})": {"nvml_error": NOT_SUPPORTED},
            f"nvmlDeviceGetPerformanceState({g})": 0,
            f"nvmlDeviceGetPcieThroughput({g}, 0)": 1250,
            f"nvmlDeviceGetPcieThroughput({g}, 1)": 98000,
            f"nvmlDeviceGetCurrPcieLinkGeneration({g})": 3,
            f"nvmlDeviceGetCurrPcieLinkWidth({g})": 16,
            f"nvmlDeviceGetTotalEccErrors({g}, 0, 0)": 0,
            f"nvmlDeviceGetTotalEccErrors({g}, 1, 0)": 0,
            f"nvmlDeviceGetRetiredPages({g}, 0)": [],
            f"nvmlDeviceGetRetiredPages({g}, 1)": [],
            f"nvmlDeviceGetCurrentClocksEventReasons({g})": 0x4,
            f"nvmlDeviceGetComputeMode({g})": 0,
            f"nvmlDeviceGetPersistenceMode({g})": 0,
            f"nvmlDeviceGetComputeRunningProcesses({g})": [
                {"pid": 4411, "usedGpuMemory": 1428 * MIB}
            ],
            "nvmlSystemGetProcessName(4411)": "/usr/bin/python3",
            f"nvmlDeviceGetMigMode({g})": {"nvml_error": NOT_SUPPORTED},
        }
    }


def a100_mig_recording() -> dict[str, Any]:
    """An A100 with MIG on: two slices configured out of seven slots (hand-written)."""
    g = "gpu0"
    calls: dict[str, Any] = {
        "nvmlSystemGetDriverVersion()": "535.129.03",
        "nvmlSystemGetNVMLVersion()": "12.535.129.03",
        "nvmlSystemGetCudaDriverVersion()": 12020,
        "nvmlDeviceGetCount()": 1,
        "nvmlDeviceGetHandleByIndex(0)": {"__handle__": g},
        f"nvmlDeviceGetUUID({g})": "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77",
        f"nvmlDeviceGetName({g})": "NVIDIA A100-SXM4-40GB",
        f"nvmlDeviceGetPciInfo({g})": {"busId": "00000000:07:00.0"},
        f"nvmlDeviceGetTemperature({g}, 0)": 44,
        f"nvmlDeviceGetPerformanceState({g})": 0,
        f"nvmlDeviceGetUtilizationRates({g})": {"nvml_error": NOT_SUPPORTED},
        f"nvmlDeviceGetComputeRunningProcesses({g})": {"nvml_error": 4},
        f"nvmlDeviceGetMigMode({g})": [1, 1],
        f"nvmlDeviceGetMaxMigDeviceCount({g})": 7,
    }
    for index, (gi, profile, uuid, used) in enumerate(
        [
            (1, "3g.20gb", "MIG-a9f8b1c2-3d4e-5f60-7182-93a4b5c6d7e8", 10213),
            (13, "1g.5gb", "MIG-c3d4e5f6-a7b8-5c9d-0e1f-2a3b4c5d6e7f", 7),
        ]
    ):
        mig = f"{g}.mig{index}"
        calls[f"nvmlDeviceGetMigDeviceHandleByIndex({g}, {index})"] = {"__handle__": mig}
        calls[f"nvmlDeviceGetName({mig})"] = f"NVIDIA A100-SXM4-40GB MIG {profile}"
        calls[f"nvmlDeviceGetUUID({mig})"] = uuid
        calls[f"nvmlDeviceGetGpuInstanceId({mig})"] = gi
        calls[f"nvmlDeviceGetComputeInstanceId({mig})"] = 0
        calls[f"nvmlDeviceGetMemoryInfo({mig}, version=33554472)"] = {
            "total": 19968 * MIB,
            "reserved": 0,
            "used": used * MIB,
            "free": (19968 - used) * MIB,
        }
        calls[f"nvmlDeviceGetComputeRunningProcesses({mig})"] = []
    for empty_slot in range(2, 7):
        calls[f"nvmlDeviceGetMigDeviceHandleByIndex({g}, {empty_slot})"] = {"nvml_error": 6}
    return {"calls": calls}
