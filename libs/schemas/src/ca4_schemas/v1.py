"""Schema version 1 of the ``gpu.metadata.reported`` event.

The client (SDK) sends a :class:`GpuMetadataReportV1` (still the current report). Version 1
events (:class:`GpuMetadataReportedV1`, the report plus ``received_at``) were published before
tenancy; the processor now publishes version 2 (:mod:`ca4_schemas.v2`). Units are in field
names (``_mib``, ``_w``, ``_mhz``, ``_pct``, ``_c``) so no reader ever has to guess them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from ca4_schemas.constants import EVENT_TYPE_GPU_METADATA_REPORTED
from ca4_schemas.types import (
    Celsius,
    Count,
    Flag,
    Identifier,
    LabelKey,
    LabelValue,
    NonNegativeFloat,
    Percent,
    ShortText,
    Text,
)

MAX_GPUS_PER_REPORT = 64
"""Eight GPUs with seven MIG instances each still fit."""
MAX_PROCESSES_PER_GPU = 256
MAX_LABELS = 32
MAX_LABELS_BYTES = 16 * 1024
"""The most bytes of a new report's label keys and values together, in UTF-8. Any 32 labels in
ASCII fit (10,240 bytes at most); four-byte characters could otherwise make them 34,816 bytes,
which the session and its usage record keep and every projection round rewrites."""
GPU_KEY_MAX_BYTES = 128
"""The most bytes, in UTF-8, of a new report's GPU uuid and model name (as well as 128
characters): a session's read models keep up to 64 of each, rewritten whole every round that
touches the session. NVML's own buffers for both are 96 bytes."""


def _at_most_max_labels(labels: object) -> object:
    """Count the labels before validating them: pydantic checks a dict's ``max_length`` only
    after every entry, with one error per bad key and value, so 150,000 bad labels made
    300,000 errors (hundreds of MB and seconds of CPU) instead of this one."""
    if isinstance(labels, dict) and len(labels) > MAX_LABELS:
        raise PydanticCustomError(
            "too_long",
            "Dictionary should have at most {max_length} items after validation, not "
            "{actual_length}",
            {"field_type": "Dictionary", "max_length": MAX_LABELS, "actual_length": len(labels)},
        )
    return labels


def labels_utf8_bytes(labels: Mapping[str, str]) -> int:
    """Bytes of ``labels``' keys and values together in UTF-8 (keys are ASCII by the contract):
    what :data:`MAX_LABELS_BYTES` bounds, and the worker's usage records count."""
    return sum(len(key) + len(value.encode()) for key, value in labels.items())


def _labels_at_most_max_bytes(labels: dict[str, str]) -> dict[str, str]:
    if all(value.isascii() for value in labels.values()):
        return labels  # keys are ASCII: within MAX_LABELS_BYTES by the counts alone
    size = labels_utf8_bytes(labels)
    if size > MAX_LABELS_BYTES:
        raise PydanticCustomError(
            "too_long",
            "Labels should be at most {max_bytes} bytes in UTF-8 altogether, not {actual_bytes}",
            {"max_bytes": MAX_LABELS_BYTES, "actual_bytes": size},
        )
    return labels


def _gpu_keys_at_most_max_bytes(payload: GpuMetadataPayloadV1) -> GpuMetadataPayloadV1:
    for index, gpu in enumerate(payload.gpus):
        for field in ("uuid", "name"):
            value: str = getattr(gpu, field)
            if not value.isascii() and (size := len(value.encode())) > GPU_KEY_MAX_BYTES:
                raise PydanticCustomError(
                    "too_long",
                    "gpus[{index}].{field} should be at most {max_bytes} bytes in UTF-8, not "
                    "{actual_bytes}",
                    {
                        "index": index,
                        "field": field,
                        "max_bytes": GPU_KEY_MAX_BYTES,
                        "actual_bytes": size,
                    },
                )
    return payload


MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future a client clock may be before a report is rejected."""
EARLIEST_OCCURRED_AT = datetime(2000, 1, 1, tzinfo=UTC)
"""Reports dated before this are refused: a clock reset to the epoch or to year 1 reports
nonsense, and day arithmetic near year 1 overflows."""
MAX_EVENT_LEAD = MAX_CLOCK_SKEW + timedelta(minutes=1)
"""How far an event's ``occurred_at`` may lead its ``received_at``. Checked against the event's
own ``received_at``, never the reader's clock, so every worker decodes an event the same way;
the minute covers a processor that stamped before it validated."""


class _Frozen(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        ser_json_inf_nan="strings",
    )


class GpuProcess(_Frozen):
    """A compute process holding memory on a GPU."""

    pid: Count
    """Operating-system process id."""
    name: ShortText | None = None
    """Executable name; dropped by the SDK's privacy mode."""
    used_memory_mib: NonNegativeFloat | None = None
    """GPU memory used by this process, MiB."""


class MigInstance(_Frozen):
    """Where a sample comes from a MIG (multi-instance GPU) slice rather than a whole GPU."""

    parent_uuid: ShortText
    """UUID of the physical GPU this slice lives on."""
    gpu_instance_id: Count
    """MIG GPU instance id (GI)."""
    compute_instance_id: Count | None = None
    """MIG compute instance id (CI), where known."""
    profile: ShortText | None = None
    """MIG profile name such as ``1g.10gb``."""


class GpuSample(_Frozen):
    """One reading of one GPU (or MIG slice), as nvidia-smi, DCGM exporter and W&B collect it.

    ``uuid`` identifies the GPU; ``index`` and ``pci_bus_id`` are attributes that can change
    across boots. Every measurement is optional: drivers report ``[N/A]`` for many fields, and
    the SDK lists what it could not read in :class:`CollectorStatus`.
    """

    uuid: ShortText
    """Stable GPU UUID (``GPU-...``) or MIG UUID (``MIG-...``)."""
    index: Count
    """Index as enumerated by the driver at sample time."""
    name: ShortText
    """Product name, e.g. ``Tesla T4`` or ``NVIDIA H100 80GB HBM3``."""
    pci_bus_id: ShortText | None = None
    """PCI bus id, e.g. ``00000000:00:04.0``."""
    mig: MigInstance | None = None
    """Set when this sample describes a MIG slice."""
    serial: ShortText | None = None
    """Board serial number, where exposed."""
    vbios_version: ShortText | None = None
    """Video BIOS version."""
    compute_capability: ShortText | None = None
    """CUDA compute capability, e.g. ``8.0``."""
    memory_total_mib: NonNegativeFloat | None = None
    """Total framebuffer memory, MiB."""
    memory_used_mib: NonNegativeFloat | None = None
    """Used framebuffer memory, MiB."""
    memory_free_mib: NonNegativeFloat | None = None
    """Free framebuffer memory, MiB."""
    memory_reserved_mib: NonNegativeFloat | None = None
    """Memory reserved by the driver, MiB."""
    utilization_gpu_pct: Percent | None = None
    """Percent of time a kernel was running over the last sample period."""
    utilization_memory_pct: Percent | None = None
    """Percent of time device memory was read or written."""
    utilization_encoder_pct: Percent | None = None
    """Video encoder utilisation."""
    utilization_decoder_pct: Percent | None = None
    """Video decoder utilisation."""
    temperature_gpu_c: Celsius | None = None
    """Core temperature, degrees Celsius."""
    temperature_memory_c: Celsius | None = None
    """HBM temperature, degrees Celsius (data-centre GPUs only)."""
    power_draw_w: NonNegativeFloat | None = None
    """Power draw, watts."""
    power_limit_w: NonNegativeFloat | None = None
    """Enforced power limit, watts."""
    energy_consumption_j: NonNegativeFloat | None = None
    """Energy used since the driver loaded, joules."""
    clock_sm_mhz: NonNegativeFloat | None = None
    """Streaming-multiprocessor clock, MHz."""
    clock_memory_mhz: NonNegativeFloat | None = None
    """Memory clock, MHz."""
    clock_graphics_mhz: NonNegativeFloat | None = None
    """Graphics clock, MHz."""
    clock_sm_max_mhz: NonNegativeFloat | None = None
    """Maximum SM clock, MHz."""
    fan_speed_pct: Percent | None = None
    """Fan speed; passively cooled data-centre GPUs report none."""
    performance_state: Annotated[str, Field(pattern=r"^P([0-9]|1[0-5])$")] | None = None
    """Performance state P0 (max) to P15 (min)."""
    pcie_tx_kib_s: NonNegativeFloat | None = None
    """PCIe transmit throughput, KiB/s."""
    pcie_rx_kib_s: NonNegativeFloat | None = None
    """PCIe receive throughput, KiB/s."""
    pcie_link_gen: Count | None = None
    """Current PCIe link generation."""
    pcie_link_width: Count | None = None
    """Current PCIe link width (lanes)."""
    ecc_errors_corrected: Count | None = None
    """Volatile corrected ECC error count since the driver loaded."""
    ecc_errors_uncorrected: Count | None = None
    """Volatile uncorrected ECC error count since the driver loaded."""
    retired_pages: Count | None = None
    """Retired or remapped memory pages."""
    throttle_reasons: Annotated[list[ShortText], Field(max_length=32)] = Field(default_factory=list)
    """Active clock throttle reasons, e.g. ``sw_power_cap``, ``hw_thermal_slowdown``."""
    compute_mode: ShortText | None = None
    """``Default``, ``Exclusive_Process`` or ``Prohibited``."""
    persistence_mode: Flag | None = None
    """Whether the driver stays loaded without clients."""
    processes: Annotated[list[GpuProcess], Field(max_length=MAX_PROCESSES_PER_GPU)] = Field(
        default_factory=list
    )
    """Compute processes on this GPU, where the driver lets us see them."""


class HostFacts(_Frozen):
    """Facts about the machine the report comes from."""

    hostname: ShortText
    """Host name, or its salted hash in the SDK's privacy mode."""
    os: ShortText
    """Operating system, e.g. ``Linux``."""
    os_release: ShortText | None = None
    """Kernel or OS release string."""
    architecture: ShortText | None = None
    """Machine architecture, e.g. ``x86_64``."""
    python_version: ShortText
    """Python version of the reporting interpreter."""
    driver_version: ShortText | None = None
    """NVIDIA driver version; none on CPU-only hosts."""
    cuda_version: ShortText | None = None
    """Highest CUDA version the driver supports."""
    nvml_version: ShortText | None = None
    """NVML library version, where NVML is used."""
    cpu_model: ShortText | None = None
    """CPU model name."""
    cpu_count: Annotated[Count, Field(ge=1, le=65536)]
    """Logical CPUs."""
    cpu_load_1m: NonNegativeFloat | None = None
    """One-minute load average."""
    ram_total_mib: NonNegativeFloat
    """Installed memory, MiB."""
    ram_available_mib: NonNegativeFloat | None = None
    """Available memory, MiB."""
    disk_total_gib: NonNegativeFloat | None = None
    """Size of the working directory's file system, GiB."""
    disk_free_gib: NonNegativeFloat | None = None
    """Free space on the working directory's file system, GiB."""


class CollectorStatus(_Frozen):
    """The SDK's self-check: which collector ran and what it could not read.

    Metrics that silently go missing are the top complaint about notebook GPU monitoring, so
    every report says so explicitly.
    """

    collector: Literal["nvml", "nvidia-smi", "none"]
    """The collector that produced the GPU samples (``none`` when no GPU tooling exists)."""
    unavailable_fields: Annotated[list[ShortText], Field(max_length=128)] = Field(
        default_factory=list
    )
    """GpuSample fields the collector could not read on this host."""
    errors: Annotated[list[Text], Field(max_length=16)] = Field(default_factory=list)
    """Errors met while collecting (e.g. NVML not found); the report is still sent."""


class GpuMetadataPayloadV1(_Frozen):
    """What was observed: host facts and zero or more GPU samples."""

    host: HostFacts
    """The reporting host."""
    gpus: Annotated[list[GpuSample], Field(max_length=MAX_GPUS_PER_REPORT)] = Field(
        default_factory=list
    )
    """One sample per GPU or MIG slice; empty on a CPU runtime, which is valid."""
    collector: CollectorStatus
    """Which collector ran and what it could not read."""

    @field_validator("gpus")
    @classmethod
    def _unique_gpus(cls, gpus: list[GpuSample]) -> list[GpuSample]:
        uuids = [gpu.uuid for gpu in gpus]
        if len(uuids) != len(set(uuids)):
            raise ValueError("GPU uuids must be unique within one report")
        return gpus


class Source(_Frozen):
    """Who produced the report."""

    sdk: ShortText
    """SDK name, e.g. ``ca4-sdk``."""
    sdk_version: ShortText
    """SDK version."""
    runtime: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_\-]{0,31}$")]
    """Runtime kind: ``colab``, ``kaggle``, ``sagemaker``, ``jupyter``, ``python``, ..."""


class ReportEnvelope(_Frozen):
    """The fields a client sends, shared by every version of the report and the event.

    Each versioned model adds its own ``schema_version`` literal; everything the server stamps
    (``received_at``, and from version 2 ``key_id`` and ``tenant``) lives only on the events,
    so ``extra="forbid"`` refuses a client that tries to send it.
    """

    event_id: UUID
    """Generated by the SDK, so a retried POST is the same event."""
    event_type: Literal["gpu.metadata.reported"] = EVENT_TYPE_GPU_METADATA_REPORTED
    """Always ``gpu.metadata.reported``."""
    occurred_at: AwareDatetime
    """When the sample was taken, by the client's clock (timezone required)."""
    source: Source
    """SDK and runtime."""
    session_id: Identifier
    """One runtime session; Kafka key, so one session's events stay ordered."""
    labels: Annotated[
        dict[LabelKey, LabelValue],
        Field(max_length=MAX_LABELS),
        BeforeValidator(_at_most_max_labels),
    ] = Field(default_factory=dict)
    """Small string map, e.g. project, notebook, run."""
    payload: GpuMetadataPayloadV1
    """Host facts and GPU samples."""

    @field_validator("schema_version", mode="before", check_fields=False)
    @classmethod
    def _integer_version(cls, version: object) -> object:
        # Literal[1] alone lets 1.0 and true through; a consumer then could not tell versions apart.
        if type(version) is not int:
            raise ValueError("schema_version must be an integer")
        return version

    @field_validator("occurred_at")
    @classmethod
    def _occurred_in_utc(cls, occurred_at: datetime) -> datetime:
        return _to_utc(occurred_at, "occurred_at")


class GpuMetadataReportV1(ReportEnvelope):
    """The body a client posts: the envelope without anything the processor stamps."""

    schema_version: Literal[1] = 1
    """Version of this contract: the integer 1 (``1.0`` or ``true`` are refused)."""

    @field_validator("labels")
    @classmethod
    def _labels_within_their_bytes(cls, labels: dict[str, str]) -> dict[str, str]:
        # Only where a report arrives (as the clock below): events stored before the bound
        # must still read, and the worker bounds what it keeps of them by itself.
        return _labels_at_most_max_bytes(labels)

    @field_validator("payload")
    @classmethod
    def _gpu_keys_within_their_bytes(cls, payload: GpuMetadataPayloadV1) -> GpuMetadataPayloadV1:
        return _gpu_keys_at_most_max_bytes(payload)

    @field_validator("occurred_at")
    @classmethod
    def _occurred_by_a_sane_clock(cls, occurred_at: datetime) -> datetime:
        # Checked against this machine's clock, so only where a report arrives: an event is
        # checked against its own received_at (see ``_event_occurred_before_received``).
        in_utc = _to_utc(occurred_at, "occurred_at")
        if in_utc - datetime.now(UTC) > MAX_CLOCK_SKEW:
            raise ValueError(
                f"occurred_at is more than {MAX_CLOCK_SKEW} in the future; check the client clock"
            )
        if in_utc < EARLIEST_OCCURRED_AT:
            raise ValueError(
                f"occurred_at is before {EARLIEST_OCCURRED_AT:%Y-%m-%d}; check the client clock"
            )
        return in_utc

    def received(self, received_at: datetime) -> GpuMetadataReportedV1:
        """Deprecated: the pre-tenancy (version 1) event for this report, as the seed built it.

        Kept so code written before tenancy still runs; the processor publishes
        ``GpuMetadataReportedV2.stamped(...)``, which records the key and tenant. Only
        ``received_at`` is checked: the report is already valid.
        """
        warnings.warn(
            "GpuMetadataReportV1.received() builds a pre-tenancy version 1 event; use "
            "GpuMetadataReported.stamped(report, received_at=..., key_id=..., tenant=...)",
            DeprecationWarning,
            stacklevel=2,
        )
        if received_at.tzinfo is None or received_at.utcoffset() is None:
            raise ValueError("received_at must be timezone-aware")
        return GpuMetadataReportedV1.model_construct(
            **dict(self), received_at=received_at.astimezone(UTC)
        )


class GpuMetadataReportedV1(GpuMetadataReportV1):
    """Version 1 of the event on Kafka and in the event store (read through the upcaster)."""

    received_at: AwareDatetime
    """When the processor accepted the report, by the processor's clock."""

    @field_validator("labels")
    @classmethod
    def _labels_within_their_bytes(cls, labels: dict[str, str]) -> dict[str, str]:
        return labels  # bounded where the report arrived, by the rules of its day

    @field_validator("payload")
    @classmethod
    def _gpu_keys_within_their_bytes(cls, payload: GpuMetadataPayloadV1) -> GpuMetadataPayloadV1:
        return payload

    @field_validator("occurred_at")
    @classmethod
    def _occurred_by_a_sane_clock(cls, occurred_at: datetime) -> datetime:
        return _to_utc(occurred_at, "occurred_at")

    @field_validator("received_at")
    @classmethod
    def _received_in_utc(cls, received_at: datetime, info: ValidationInfo) -> datetime:
        return event_received_at(received_at, info)


def event_received_at(received_at: datetime, info: ValidationInfo) -> datetime:
    """``received_at`` in UTC, refused when the event's ``occurred_at`` leads it by more than
    :data:`MAX_EVENT_LEAD` (the rule of every event version)."""
    in_utc = _to_utc(received_at, "received_at")
    occurred_at = info.data.get("occurred_at")
    if isinstance(occurred_at, datetime) and occurred_at - in_utc > MAX_EVENT_LEAD:
        raise ValueError(
            f"occurred_at leads received_at by more than {MAX_EVENT_LEAD}; no processor "
            "accepts such a report"
        )
    return in_utc


def _to_utc(moment: datetime, field: str) -> datetime:
    """``moment`` in UTC, or a validation error when UTC cannot hold it.

    ``0001-01-01T00:00:00+01:00`` is a valid ISO 8601 time whose UTC equivalent falls before
    year 1; Python raises ``OverflowError`` there, which pydantic would not turn into a field
    error (a ``500`` in the processor, an unclassified failure in the worker).
    """
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            f"{field} is outside the range UTC can represent (years 1 to 9999 in UTC); "
            "check the client clock"
        ) from None
