"""GPU samples from the ``nvidia-smi`` command, for hosts where NVML can't be loaded from Python.

Three read-only calls: ``--query-gpu`` (one CSV row per physical GPU), ``-q -x`` (CUDA version,
PCIe throughput, processes and MIG slices) and ``-L`` (MIG slice UUIDs and profiles, only when a
GPU has MIG enabled). The parsers are pure functions over the command output so real outputs of
many GPU models can be tested without a GPU.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

from ca4_sdk.collectors.base import (
    COMPUTE_MODES,
    CollectorResult,
    GpuSampleDict,
    short_text,
    throttle_reasons_from_mask,
)

CommandRunner = Callable[[Sequence[str]], str]
"""Runs a command and returns its stdout; raises :class:`NvidiaSmiError` on failure."""

COMMAND_TIMEOUT_S = 10.0

_MISSING = frozenset({"[N/A]", "N/A", "[Not Supported]", "Not Supported", "[Unknown Error]", ""})
_INVALID_FIELD = re.compile(r'Field "([^"]+)" is not a valid field to query')
_MIG_LINE = re.compile(
    r"^\s+MIG\s+(?P<profile>\S+)\s+Device\s+(?P<index>\d+):\s+\(UUID:\s*(?P<uuid>MIG-[^)\s]+)\)"
)
_GPU_LINE = re.compile(r"^GPU\s+(?P<index>\d+):.*\(UUID:\s*(?P<uuid>GPU-[^)\s]+)\)")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


class NvidiaSmiError(RuntimeError):
    """``nvidia-smi`` is missing, failed or timed out."""


def _to_float(raw: str) -> float | None:
    match = _NUMBER.search(raw)
    return float(match.group()) if match else None


def _to_int(raw: str) -> int | None:
    value = _to_float(raw)
    return int(value) if value is not None and value >= 0 else None


def _to_pstate(raw: str) -> str | None:
    return raw if re.fullmatch(r"P([0-9]|1[0-5])", raw) else None


def _to_enabled(raw: str) -> bool | None:
    return {"enabled": True, "disabled": False}.get(raw.lower())


def _to_throttle_reasons(raw: str) -> list[str] | None:
    try:
        return throttle_reasons_from_mask(int(raw, 16))
    except ValueError:
        return None


def _to_compute_mode(raw: str) -> str | None:
    return raw if raw in COMPUTE_MODES.values() else None


@dataclass(frozen=True)
class QueryField:
    """One ``--query-gpu`` property and where its value goes in a sample."""

    query: str
    sample_key: str
    convert: Callable[[str], Any]


QUERY_FIELDS: tuple[QueryField, ...] = (
    QueryField("index", "index", _to_int),
    QueryField("uuid", "uuid", short_text),
    QueryField("name", "name", short_text),
    QueryField("pci.bus_id", "pci_bus_id", short_text),
    QueryField("serial", "serial", short_text),
    QueryField("vbios_version", "vbios_version", short_text),
    QueryField("compute_cap", "compute_capability", short_text),
    QueryField("memory.total", "memory_total_mib", _to_float),
    QueryField("memory.used", "memory_used_mib", _to_float),
    QueryField("memory.free", "memory_free_mib", _to_float),
    QueryField("memory.reserved", "memory_reserved_mib", _to_float),
    QueryField("utilization.gpu", "utilization_gpu_pct", _to_float),
    QueryField("utilization.memory", "utilization_memory_pct", _to_float),
    QueryField("utilization.encoder", "utilization_encoder_pct", _to_float),
    QueryField("utilization.decoder", "utilization_decoder_pct", _to_float),
    QueryField("temperature.gpu", "temperature_gpu_c", _to_float),
    QueryField("temperature.memory", "temperature_memory_c", _to_float),
    QueryField("power.draw", "power_draw_w", _to_float),
    QueryField("power.limit", "power_limit_w", _to_float),
    QueryField("clocks.sm", "clock_sm_mhz", _to_float),
    QueryField("clocks.mem", "clock_memory_mhz", _to_float),
    QueryField("clocks.gr", "clock_graphics_mhz", _to_float),
    QueryField("clocks.max.sm", "clock_sm_max_mhz", _to_float),
    QueryField("fan.speed", "fan_speed_pct", _to_float),
    QueryField("pstate", "performance_state", _to_pstate),
    QueryField("pcie.link.gen.current", "pcie_link_gen", _to_int),
    QueryField("pcie.link.width.current", "pcie_link_width", _to_int),
    QueryField("ecc.errors.corrected.volatile.total", "ecc_errors_corrected", _to_int),
    QueryField("ecc.errors.uncorrected.volatile.total", "ecc_errors_uncorrected", _to_int),
    QueryField("retired_pages.sbe", "_retired_sbe", _to_int),
    QueryField("retired_pages.dbe", "_retired_dbe", _to_int),
    QueryField("clocks_throttle_reasons.active", "throttle_reasons", _to_throttle_reasons),
    QueryField("compute_mode", "compute_mode", _to_compute_mode),
    QueryField("persistence_mode", "persistence_mode", _to_enabled),
    QueryField("mig.mode.current", "_mig_enabled", _to_enabled),
    QueryField("driver_version", "_driver_version", short_text),
)
"""Everything asked of ``--query-gpu``; keys starting with ``_`` are folded in afterwards."""


def query_gpu_args(fields: Sequence[QueryField] = QUERY_FIELDS) -> list[str]:
    """The ``nvidia-smi`` arguments for the CSV query over ``fields``."""
    names = ",".join(f.query for f in fields)
    return ["nvidia-smi", f"--query-gpu={names}", "--format=csv,noheader,nounits"]


def parse_query_csv(text: str, fields: Sequence[QueryField] = QUERY_FIELDS) -> list[GpuSampleDict]:
    """Parse ``--query-gpu`` CSV rows into samples; ``[N/A]``-style values become absent."""
    samples = []
    for row in csv.reader(text.splitlines(), skipinitialspace=True):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != len(fields):
            raise NvidiaSmiError(f"expected {len(fields)} columns, got {len(row)}: {row!r}")
        sample: GpuSampleDict = {}
        for query_field, cell in zip(fields, row, strict=True):
            raw = cell.strip()
            if raw in _MISSING:
                continue
            value = query_field.convert(raw)
            if value is not None:
                sample[query_field.sample_key] = value
        sbe, dbe = sample.pop("_retired_sbe", None), sample.pop("_retired_dbe", None)
        if sbe is not None or dbe is not None:
            sample["retired_pages"] = (sbe or 0) + (dbe or 0)
        if "uuid" in sample and "name" in sample and "index" in sample:
            samples.append(sample)
    return samples


@dataclass
class XmlGpu:
    """What ``nvidia-smi -q -x`` adds for one physical GPU."""

    processes: list[dict[str, Any]] = field(default_factory=list)
    mig_devices: list[dict[str, Any]] = field(default_factory=list)
    pcie_tx_kib_s: float | None = None
    pcie_rx_kib_s: float | None = None


@dataclass
class XmlReport:
    """The host-level facts and per-GPU details of ``nvidia-smi -q -x``, keyed by GPU UUID."""

    driver_version: str | None = None
    cuda_version: str | None = None
    gpus: dict[str, XmlGpu] = field(default_factory=dict)


def _text(element: ElementTree.Element | None, path: str) -> str | None:
    if element is None:
        return None
    found = element.find(path)
    if found is None or found.text is None:
        return None
    value = found.text.strip()
    return None if value in _MISSING else value


def _number(element: ElementTree.Element | None, path: str) -> float | None:
    raw = _text(element, path)
    return _to_float(raw) if raw is not None else None


def _count(element: ElementTree.Element | None, path: str) -> int | None:
    raw = _text(element, path)
    return _to_int(raw) if raw is not None else None


def parse_query_xml(text: str) -> XmlReport:
    """Parse ``nvidia-smi -q -x`` for CUDA version, PCIe throughput, processes and MIG slices."""
    # The XML comes from the local nvidia-smi binary, not from the network.
    root = ElementTree.fromstring(text)  # noqa: S314
    report = XmlReport(
        driver_version=short_text(_text(root, "driver_version")),
        cuda_version=short_text(_text(root, "cuda_version")),
    )
    for gpu in root.findall("gpu"):
        uuid = _text(gpu, "uuid")
        if not uuid:
            continue
        details = XmlGpu(
            pcie_tx_kib_s=_number(gpu, "pci/tx_util"),
            pcie_rx_kib_s=_number(gpu, "pci/rx_util"),
        )
        for process in gpu.findall("processes/process_info"):
            pid = _count(process, "pid")
            if pid is None:
                continue
            details.processes.append(
                {
                    "pid": pid,
                    "name": short_text(_text(process, "process_name")),
                    "used_memory_mib": _number(process, "used_memory"),
                    "gpu_instance_id": _count(process, "gpu_instance_id"),
                    "compute_instance_id": _count(process, "compute_instance_id"),
                }
            )
        for mig in gpu.findall("mig_devices/mig_device"):
            details.mig_devices.append(
                {
                    "index": _count(mig, "index"),
                    "gpu_instance_id": _count(mig, "gpu_instance_id"),
                    "compute_instance_id": _count(mig, "compute_instance_id"),
                    "memory_total_mib": _number(mig, "fb_memory_usage/total"),
                    "memory_used_mib": _number(mig, "fb_memory_usage/used"),
                    "memory_free_mib": _number(mig, "fb_memory_usage/free"),
                    "memory_reserved_mib": _number(mig, "fb_memory_usage/reserved"),
                }
            )
        report.gpus[uuid] = details
    return report


def parse_list(text: str) -> dict[str, list[dict[str, Any]]]:
    """Parse ``nvidia-smi -L``: each GPU UUID's MIG slices (device index, profile, MIG UUID)."""
    slices: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] | None = None
    for line in text.splitlines():
        gpu = _GPU_LINE.match(line)
        if gpu:
            current = slices.setdefault(gpu["uuid"], [])
            continue
        mig = _MIG_LINE.match(line)
        if mig and current is not None:
            current.append(
                {"index": int(mig["index"]), "profile": mig["profile"], "uuid": mig["uuid"]}
            )
    return slices


def _clean_process(process: dict[str, Any]) -> dict[str, Any]:
    return {
        key: process[key]
        for key in ("pid", "name", "used_memory_mib")
        if process.get(key) is not None
    }


def _mig_samples(
    parent: GpuSampleDict, xml_gpu: XmlGpu, listed: list[dict[str, Any]]
) -> list[GpuSampleDict]:
    """One sample per MIG slice, matched between ``-L`` and ``-q -x`` by MIG device index."""
    by_index = {mig["index"]: mig for mig in xml_gpu.mig_devices}
    samples = []
    for listed_slice in listed:
        details = by_index.get(listed_slice["index"], {})
        mig: dict[str, Any] = {
            "parent_uuid": parent["uuid"],
            "gpu_instance_id": details.get("gpu_instance_id", listed_slice["index"]),
            "profile": listed_slice["profile"],
        }
        if details.get("compute_instance_id") is not None:
            mig["compute_instance_id"] = details["compute_instance_id"]
        sample: GpuSampleDict = {
            "uuid": listed_slice["uuid"],
            "index": parent["index"],
            "name": short_text(f"{parent['name']} MIG {listed_slice['profile']}"),
            "mig": mig,
        }
        for key in ("pci_bus_id", "compute_capability", "temperature_gpu_c", "performance_state"):
            if key in parent:
                sample[key] = parent[key]
        for key in (
            "memory_total_mib",
            "memory_used_mib",
            "memory_free_mib",
            "memory_reserved_mib",
        ):
            if details.get(key) is not None:
                sample[key] = details[key]
        sample["processes"] = [
            _clean_process(p)
            for p in xml_gpu.processes
            if p.get("gpu_instance_id") == mig["gpu_instance_id"]
            and p.get("compute_instance_id") in (None, mig.get("compute_instance_id"))
        ]
        samples.append(sample)
    return samples


def combine(
    samples: list[GpuSampleDict],
    xml_report: XmlReport | None,
    mig_listing: dict[str, list[dict[str, Any]]] | None = None,
) -> list[GpuSampleDict]:
    """Fold ``-q -x`` details and MIG slices into the ``--query-gpu`` samples."""
    combined: list[GpuSampleDict] = []
    for sample in samples:
        sample.pop("_driver_version", None)
        mig_enabled = sample.pop("_mig_enabled", False)
        xml_gpu = xml_report.gpus.get(sample["uuid"]) if xml_report else None
        if xml_gpu is not None:
            for key in ("pcie_tx_kib_s", "pcie_rx_kib_s"):
                value = getattr(xml_gpu, key)
                if value is not None:
                    sample[key] = value
            sample["processes"] = [
                _clean_process(p)
                for p in xml_gpu.processes
                if not mig_enabled or p.get("gpu_instance_id") is None
            ]
        combined.append(sample)
        listed = (mig_listing or {}).get(sample["uuid"], [])
        if mig_enabled and xml_gpu is not None and listed:
            combined.extend(_mig_samples(sample, xml_gpu, listed))
    return combined


def run_command(args: Sequence[str]) -> str:
    """Run a read-only nvidia-smi command with a timeout; raise :class:`NvidiaSmiError`."""
    try:
        completed = subprocess.run(  # noqa: S603 - fixed argument list, no shell
            list(args), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NvidiaSmiError(f"{args[0]}: {error}") from error
    if completed.returncode != 0:
        message = (completed.stdout + completed.stderr).strip() or f"exit {completed.returncode}"
        raise NvidiaSmiError(message)
    return completed.stdout


def available() -> bool:
    """True when an ``nvidia-smi`` binary is on PATH."""
    return shutil.which("nvidia-smi") is not None


class NvidiaSmiCollector:
    """Collects samples with nvidia-smi; drops query fields an older driver does not know."""

    name = "nvidia-smi"

    def __init__(self, runner: CommandRunner = run_command) -> None:
        self._runner = runner
        self._fields: list[QueryField] = list(QUERY_FIELDS)

    def _query(self, result: CollectorResult) -> list[GpuSampleDict]:
        while True:
            try:
                return parse_query_csv(self._runner(query_gpu_args(self._fields)), self._fields)
            except NvidiaSmiError as error:
                invalid = _INVALID_FIELD.search(str(error))
                known = [f for f in self._fields if invalid and f.query == invalid.group(1)]
                if not known:
                    raise
                # Older drivers reject newer properties; ask again without them, once each.
                self._fields.remove(known[0])
                result.unavailable_fields.append(known[0].sample_key.lstrip("_"))

    def collect(self) -> CollectorResult:
        """Query every GPU; raise :class:`NvidiaSmiError` when nvidia-smi itself fails."""
        result = CollectorResult(collector=self.name)
        samples = self._query(result)
        driver_versions = {s["_driver_version"] for s in samples if "_driver_version" in s}
        result.driver_version = next(iter(driver_versions), None)
        xml_report: XmlReport | None = None
        try:
            xml_report = parse_query_xml(self._runner(["nvidia-smi", "-q", "-x"]))
            result.cuda_version = xml_report.cuda_version
            result.driver_version = result.driver_version or xml_report.driver_version
            result.read_lists.add("processes")
        except (NvidiaSmiError, ElementTree.ParseError) as error:
            result.add_error(f"nvidia-smi -q -x: {error}")
        mig_listing = None
        if any(s.get("_mig_enabled") for s in samples):
            try:
                mig_listing = parse_list(self._runner(["nvidia-smi", "-L"]))
            except NvidiaSmiError as error:
                result.add_error(f"nvidia-smi -L: {error}")
        if any(f.sample_key == "throttle_reasons" for f in self._fields):
            result.read_lists.add("throttle_reasons")
        result.gpus = combine(samples, xml_report, mig_listing)
        return result.finish()
