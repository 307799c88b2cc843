"""Real outputs captured on an NVIDIA H100 80GB HBM3 (driver 580.159.04, CUDA 13.0) under load.

Captured with ``sdk/scripts/capture_gpu_fixtures.sh`` while a PyTorch matmul loop ran, so
utilisation, clocks, power and the process list are non-idle. The NVML recording replays every
NVML answer of that run through the fake ``pynvml``; its process list was re-entered from the
same run's probe because that recorder version serialised pynvml's process objects as repr.
"""

from __future__ import annotations

import json

import pytest
from ca4_sdk.collectors.nvidia_smi import NvidiaSmiCollector, parse_query_csv
from ca4_sdk.collectors.nvml import NvmlCollector

from tests.unit.sdk.fake_nvml import FakeNvml
from tests.unit.sdk.support import assert_valid_report, fixture_text
from tests.unit.sdk.test_nvidia_smi_parser import FakeRunner

pytestmark = pytest.mark.stand_in(
    "NVML and nvidia-smi on a GPU: no GPU here; ran instead: answers recorded on a real H100 under "
    "load, replayed"
)

H100_UUID = "GPU-569b46dc-f653-74d8-57e5-03443d474385"


def test_query_fields_match_the_capture() -> None:
    """The captured CSV was produced by this SDK's field list (a changed list needs a recapture)."""
    from ca4_sdk.collectors.nvidia_smi import QUERY_FIELDS

    assert fixture_text("h100_query_gpu_fields.txt").strip() == ",".join(
        f.query for f in QUERY_FIELDS
    )


def test_real_h100_query_row() -> None:
    (gpu,) = parse_query_csv(fixture_text("h100_query_gpu.csv"))
    assert gpu["uuid"] == H100_UUID
    assert gpu["name"] == "NVIDIA H100 80GB HBM3"
    assert gpu["compute_capability"] == "9.0"
    assert gpu["memory_total_mib"] == 81559.0
    assert gpu["utilization_gpu_pct"] == 100.0
    assert gpu["power_limit_w"] == 700.0
    assert gpu["temperature_memory_c"] == 40.0
    assert gpu["pcie_link_gen"] == 5
    assert gpu["persistence_mode"] is True
    assert "fan_speed_pct" not in gpu
    assert "retired_pages" not in gpu  # H100 remaps rows: [N/A]


def test_real_h100_through_the_nvidia_smi_collector() -> None:
    runner = FakeRunner(
        fixture_text("h100_query_gpu.csv"),
        fixture_text("h100_q.xml"),
        fixture_text("h100_list.txt"),
    )
    result = NvidiaSmiCollector(runner).collect()
    assert (result.driver_version, result.cuda_version) == ("580.159.04", "13.0")
    (gpu,) = result.gpus
    assert gpu["processes"] == [{"pid": 603, "name": "python3", "used_memory_mib": 1220.0}]
    assert gpu["pcie_tx_kib_s"] > 0
    assert result.unavailable_fields == ["energy_consumption_j", "fan_speed_pct", "retired_pages"]
    assert result.errors == []
    expected = json.loads(fixture_text("h100_probe_nvidia_smi.json"))
    assert expected["payload"]["collector"]["unavailable_fields"] == result.unavailable_fields


def test_real_h100_nvml_recording_replays_to_the_probe_output() -> None:
    recording = json.loads(fixture_text("h100_nvml_recording.json"))
    collector = NvmlCollector(FakeNvml(recording))  # type: ignore[arg-type]
    result = collector.collect()
    (gpu,) = result.gpus
    probe = json.loads(fixture_text("h100_probe_nvml.json"))
    (probed,) = probe["payload"]["gpus"]
    # The probe ran a moment after the recording: same fields, same identity, live readings move.
    assert gpu.keys() == probed.keys()
    live = {"power_draw_w", "temperature_memory_c", "temperature_gpu_c", "energy_consumption_j"}
    live |= {"pcie_rx_kib_s", "pcie_tx_kib_s", "memory_used_mib", "memory_free_mib"}
    assert {k: v for k, v in gpu.items() if k not in live} == {
        k: v for k, v in probed.items() if k not in live
    }
    assert gpu["power_draw_w"] == pytest.approx(probed["power_draw_w"], rel=0.05)
    assert result.unavailable_fields == ["fan_speed_pct", "retired_pages"]
    assert (result.driver_version, result.cuda_version, result.nvml_version) == (
        "580.159.04",
        "13.0",
        "13.580.159.04",
    )


@pytest.mark.parametrize("name", ["h100_probe_nvml.json", "h100_probe_nvidia_smi.json"])
def test_reports_built_on_the_h100_satisfy_the_contract(name: str) -> None:
    report = assert_valid_report(json.loads(fixture_text(name)))
    assert report.payload.gpus[0].uuid == H100_UUID
    assert report.payload.host.cuda_version == "13.0"
