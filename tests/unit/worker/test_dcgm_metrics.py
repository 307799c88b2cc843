"""The worker's GPU series against the DCGM exporter's field list (names, units, labels)."""

from __future__ import annotations

import csv
from pathlib import Path

from ca4_schemas import GpuMetadataReported, GpuSample
from ca4_worker.core.gpu_fields import DCGM_LABELS, GPU_FIELDS
from ca4_worker.core.metrics import GPU_REGISTRY, GpuGauges
from ca4_worker.domain.records import Position, PositionedEvent

from tests.unit.worker.factories import TENANT_A, event_body, gpu_sample, positioned

DCGM_FIELDS_CSV = Path(__file__).with_name("dcgm_fields.csv")
NOT_EXPORTED = {
    # Identity and text fields: labels or nothing, never a value.
    "uuid", "index", "name", "pci_bus_id", "mig", "serial", "vbios_version", "compute_capability",
}  # fmt: skip


def _dcgm_fields() -> dict[str, tuple[str, str]]:
    """The committed DCGM list: field -> (Prometheus type, unit)."""
    with DCGM_FIELDS_CSV.open() as handle:
        rows = [row for row in csv.reader(handle) if row and not row[0].startswith("#")]
    return {name.strip(): (kind.strip(), unit.strip()) for name, kind, unit in rows}


def test_every_dcgm_named_metric_is_in_the_dcgm_list_with_its_unit() -> None:
    dcgm = _dcgm_fields()
    exported = {field.metric: field.unit for field in GPU_FIELDS if field.is_dcgm}
    assert {name: dcgm[name][1] for name in exported if name in dcgm} == exported
    assert set(exported) == set(dcgm)


def test_our_own_names_are_only_for_what_dcgm_lacks() -> None:
    own = {field.metric for field in GPU_FIELDS if not field.is_dcgm}
    assert own == {"ca4_gpu_clock_graphics_mhz", "ca4_gpu_retired_pages", "ca4_gpu_processes"}


def test_every_numeric_contract_field_is_exported_once() -> None:
    sources = [field.source for field in GPU_FIELDS]
    assert len(sources) == len(set(sources))
    assert set(sources) == set(GpuSample.model_fields) - NOT_EXPORTED


def test_a_sample_becomes_dcgm_series_with_dcgm_labels_and_units() -> None:
    sample = gpu_sample(2, uuid_="MIG-dcgm-1", name="NVIDIA A100-SXM4-40GB", utilization=87.0)
    sample |= {
        "pci_bus_id": "00000000:00:04.0",
        "mig": {"parent_uuid": "GPU-parent", "gpu_instance_id": 3, "profile": "1g.5gb"},
        "energy_consumption_j": 12.5,
        "pcie_tx_kib_s": 2.0,
        "performance_state": "P2",
        "throttle_reasons": ["sw_power_cap", "hw_slowdown"],
        "compute_mode": "Exclusive_Process",
    }
    event = positioned(
        0, 0, session_id="dcgm-s1", gpus=[sample], labels={"project": "vision", "run": "r1"}
    )
    GpuGauges(ttl_s=60, max_series=10).update([event], now=0)
    labels = dict(
        zip(
            DCGM_LABELS,
            ["2", "MIG-dcgm-1", "NVIDIA A100-SXM4-40GB", "test-host", "00000000:00:04.0", "3",
             "1g.5gb", "GPU-parent", "dcgm-s1", "vision", TENANT_A],
            strict=True,
        )
    )  # fmt: skip
    expected = {
        "DCGM_FI_DEV_GPU_UTIL": 87.0,
        "DCGM_FI_DEV_FB_USED": 1000.0,
        "DCGM_FI_DEV_FB_TOTAL": 15360.0,
        "DCGM_FI_DEV_POWER_USAGE": 40.5,
        "DCGM_FI_DEV_GPU_TEMP": 60.0,
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": 12_500.0,
        "DCGM_FI_PROF_PCIE_TX_BYTES": 2048.0,
        "DCGM_FI_DEV_PSTATE": 2.0,
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": float(0x004 | 0x008),
        "DCGM_FI_DEV_COMPUTE_MODE": 3.0,
        "DCGM_FI_DEV_SM_CLOCK": None,
    }
    assert {name: GPU_REGISTRY.get_sample_value(name, labels) for name in expected} == expected


def test_empty_lists_are_readings_that_export_zero_as_dcgm_does() -> None:
    idle = gpu_sample(0, uuid_="GPU-idle") | {"throttle_reasons": [], "processes": []}
    busy = gpu_sample(1, uuid_="GPU-busy") | {
        "throttle_reasons": ["sw_thermal_slowdown"],
        "processes": [{"pid": 7, "name": "python3", "used_memory_mib": 900.0}],
    }
    event = positioned(0, 0, session_id="dcgm-lists", gpus=[idle, busy])
    GpuGauges(ttl_s=60, max_series=10).update([event], now=0)

    assert _values("GPU-idle", "GPU-busy") == {
        "GPU-idle": (0.0, 0.0),
        "GPU-busy": (float(0x020), 1.0),
    }


def test_lists_the_collector_could_not_read_have_no_value() -> None:
    sample = GpuSample.model_validate(gpu_sample(0, uuid_="GPU-unread"))
    unavailable = ["processes", "throttle_reasons"]  # CollectorStatus.unavailable_fields
    by_source = {field.source: field for field in GPU_FIELDS}

    assert [by_source[name].value(sample, unavailable) for name in unavailable] == [None, None]
    assert [by_source[name].value(sample) for name in unavailable] == [0.0, 0.0]
    assert by_source["utilization_gpu_pct"].value(sample, unavailable) == 50.0


def test_lists_the_collector_could_not_read_export_no_series() -> None:
    body = event_body(session_id="dcgm-unread", gpus=[gpu_sample(0, uuid_="GPU-unread")])
    body["payload"]["collector"]["unavailable_fields"] = ["processes", "throttle_reasons"]
    event = PositionedEvent(event=GpuMetadataReported.model_validate(body), position=Position(0, 0))
    GpuGauges(ttl_s=60, max_series=10).update([event], now=0)

    assert _values("GPU-unread") == {"GPU-unread": (None, None)}


def _values(*uuids: str) -> dict[str, tuple[float | None, float | None]]:
    """``(throttle mask, process count)`` per GPU UUID; ``None`` where there is no series."""
    found: dict[str, dict[str, float]] = {uuid: {} for uuid in uuids}
    names = {"DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "ca4_gpu_processes"}
    for metric in GPU_REGISTRY.collect():
        for sample in metric.samples:
            if sample.name in names and sample.labels.get("UUID") in found:
                found[sample.labels["UUID"]][sample.name] = sample.value
    return {
        uuid: (values.get("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"), values.get("ca4_gpu_processes"))
        for uuid, values in found.items()
    }


def test_series_of_a_silent_session_are_removed() -> None:
    gauges = GpuGauges(ttl_s=60, max_series=10)
    event = positioned(0, 0, session_id="dcgm-silent", gpus=[gpu_sample(0, uuid_="GPU-silent")])
    gauges.update([event], now=0)
    assert _utilization("GPU-silent") == 50.0
    gauges.sweep(now=61)
    assert _utilization("GPU-silent") is None


def _utilization(uuid: str) -> float | None:
    for metric in GPU_REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "DCGM_FI_DEV_GPU_UTIL" and sample.labels["UUID"] == uuid:
                return sample.value
    return None


def test_the_docs_table_maps_every_field_to_its_metric() -> None:
    table = (Path(__file__).parents[3] / "docs" / "gpu-metrics.md").read_text()
    missing = [
        field.metric
        for field in GPU_FIELDS
        if f"| `{field.source}` | `{field.metric}` | {field.unit} |" not in table
    ]
    assert missing == []


def test_a_mig_slice_has_no_throttle_reasons_of_its_own() -> None:
    """The collectors never read throttle reasons for a slice: its empty list is no reading."""
    sample = GpuSample.model_validate(
        gpu_sample(0, uuid_="MIG-slice")
        | {"throttle_reasons": [], "mig": {"parent_uuid": "GPU-parent", "gpu_instance_id": 1}}
    )
    by_source = {field.source: field for field in GPU_FIELDS}
    assert by_source["throttle_reasons"].value(sample) is None
