"""nvidia-smi parsing over realistic outputs of several GPU models."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from ca4_sdk.collectors.base import CollectorResult
from ca4_sdk.collectors.nvidia_smi import (
    QUERY_FIELDS,
    NvidiaSmiCollector,
    NvidiaSmiError,
    combine,
    parse_list,
    parse_query_csv,
    parse_query_xml,
)
from ca4_sdk.host import collect_host
from ca4_sdk.report import build_report

from tests.unit.sdk.support import assert_valid_report, fixture_text

pytestmark = pytest.mark.stand_in(
    "nvidia-smi on a GPU: no GPU here; ran instead: outputs recorded on real GPUs (T4, A100 with "
    "MIG, H100) fed to the collector"
)


def _report_for(result: CollectorResult) -> dict[str, object]:
    return build_report(
        session_id="test-session",
        runtime="python",
        host=collect_host(driver_version=result.driver_version, cuda_version=result.cuda_version),
        collection=result,
    )


class FakeRunner:
    """Answers nvidia-smi invocations from fixture files."""

    def __init__(self, query: str, xml: str | None = None, listing: str | None = None) -> None:
        self.query, self.xml, self.listing = query, xml, listing
        self.commands: list[list[str]] = []

    def __call__(self, args: Sequence[str]) -> str:
        self.commands.append(list(args))
        if args[1].startswith("--query-gpu="):
            return self.query
        if args[1:] == ["-q", "-x"]:
            if self.xml is None:
                raise NvidiaSmiError("no xml")
            return self.xml
        if args[1:] == ["-L"] and self.listing is not None:
            return self.listing
        raise NvidiaSmiError(f"unexpected {args}")


def test_t4_colab_row_parses_with_units_and_missing_values() -> None:
    (gpu,) = parse_query_csv(fixture_text("t4_query_gpu.csv"))
    assert gpu["uuid"] == "GPU-6c1a7e4e-2d4b-3c9e-8f1a-5b7d9e0c1a2b"
    assert gpu["name"] == "Tesla T4"
    assert gpu["index"] == 0
    assert gpu["memory_total_mib"] == 15360.0
    assert gpu["power_draw_w"] == 33.92
    assert gpu["compute_capability"] == "7.5"
    assert gpu["performance_state"] == "P0"
    assert gpu["persistence_mode"] is False
    assert gpu["throttle_reasons"] == []
    assert "temperature_memory_c" not in gpu  # [N/A] on a T4
    assert "fan_speed_pct" not in gpu  # passively cooled


def test_t4_collector_adds_processes_cuda_and_pcie_from_xml() -> None:
    runner = FakeRunner(fixture_text("t4_query_gpu.csv"), fixture_text("t4_q.xml"))
    result = NvidiaSmiCollector(runner).collect()
    assert result.collector == "nvidia-smi"
    assert result.cuda_version == "12.2"
    assert result.driver_version == "535.104.05"
    (gpu,) = result.gpus
    assert gpu["processes"] == [
        {"pid": 4411, "name": "/usr/bin/python3", "used_memory_mib": 1428.0}
    ]
    assert gpu["pcie_rx_kib_s"] == 98000.0
    assert "fan_speed_pct" in result.unavailable_fields
    assert "energy_consumption_j" in result.unavailable_fields
    assert "processes" not in result.unavailable_fields
    assert not any(c[1:] == ["-L"] for c in runner.commands)  # no MIG, no listing call
    assert_valid_report(_report_for(result))


def test_l4_idle_reports_gpu_idle_as_no_throttle() -> None:
    (gpu,) = parse_query_csv(fixture_text("l4_query_gpu.csv"))
    assert gpu["name"] == "NVIDIA L4"
    assert gpu["compute_capability"] == "8.9"
    assert gpu["performance_state"] == "P8"
    assert gpu["throttle_reasons"] == []
    assert gpu["persistence_mode"] is True


def test_a100_two_gpus_with_hbm_temperature_and_ecc() -> None:
    gpus = parse_query_csv(fixture_text("a100_query_gpu.csv"))
    assert [g["index"] for g in gpus] == [0, 1]
    assert len({g["uuid"] for g in gpus}) == 2
    assert gpus[0]["temperature_memory_c"] == 69.0
    assert gpus[0]["utilization_gpu_pct"] == 87.0
    assert gpus[1]["ecc_errors_corrected"] == 2
    assert "retired_pages" not in gpus[0]  # A100 remaps rows instead
    runner = FakeRunner(fixture_text("a100_query_gpu.csv"))
    result = NvidiaSmiCollector(runner).collect()
    assert result.errors == ["nvidia-smi -q -x: no xml"]
    assert "processes" in result.unavailable_fields
    assert_valid_report(_report_for(result))


def test_h100_power_cap_throttle_is_decoded() -> None:
    (gpu,) = parse_query_csv(fixture_text("h100_power_capped_query_gpu.csv"))
    assert gpu["name"] == "NVIDIA H100 80GB HBM3"
    assert gpu["throttle_reasons"] == ["sw_power_cap"]
    assert gpu["pcie_link_gen"] == 5


def test_unsupported_fields_become_absent_and_are_reported() -> None:
    runner = FakeRunner(fixture_text("unsupported_query_gpu.csv"), fixture_text("t4_q.xml"))
    result = NvidiaSmiCollector(runner).collect()
    (gpu,) = result.gpus
    for missing in ("utilization_gpu_pct", "power_draw_w", "serial", "ecc_errors_corrected"):
        assert missing not in gpu
        assert missing in result.unavailable_fields
    assert gpu["memory_used_mib"] == 5.0
    assert_valid_report(_report_for(result))


def test_mig_layout_yields_parent_and_one_sample_per_slice() -> None:
    runner = FakeRunner(
        fixture_text("a100_mig_query_gpu.csv"),
        fixture_text("a100_mig_q.xml"),
        fixture_text("a100_mig_list.txt"),
    )
    result = NvidiaSmiCollector(runner).collect()
    parent, *slices = result.gpus
    assert parent["uuid"].startswith("GPU-")
    assert parent["processes"] == []  # the process belongs to a slice
    assert [s["mig"]["profile"] for s in slices] == ["3g.20gb", "2g.10gb", "1g.5gb"]
    assert [s["mig"]["gpu_instance_id"] for s in slices] == [1, 5, 13]
    first = slices[0]
    assert first["uuid"] == "MIG-a9f8b1c2-3d4e-5f60-7182-93a4b5c6d7e8"
    assert first["mig"]["parent_uuid"] == parent["uuid"]
    assert first["memory_total_mib"] == 19968.0
    assert first["processes"] == [{"pid": 28114, "name": "python", "used_memory_mib": 10200.0}]
    assert first["name"] == "NVIDIA A100-SXM4-40GB MIG 3g.20gb"
    assert slices[1]["processes"] == []
    assert_valid_report(_report_for(result))


def test_old_driver_rejecting_a_field_is_asked_again_without_it() -> None:
    query = fixture_text("t4_query_gpu.csv")

    class OldDriver(FakeRunner):
        def __call__(self, args: Sequence[str]) -> str:
            if "compute_cap" in args[1]:
                self.commands.append(list(args))
                raise NvidiaSmiError('Field "compute_cap" is not a valid field to query.')
            return super().__call__(args)

    # Drop the compute_cap column from the canned row, as the old driver would answer.
    position = [f.query for f in QUERY_FIELDS].index("compute_cap")
    row = [cell.strip() for cell in query.strip().split(",")]
    del row[position]
    runner = OldDriver(", ".join(row), fixture_text("t4_q.xml"))
    collector = NvidiaSmiCollector(runner)
    result = collector.collect()
    assert "compute_capability" in result.unavailable_fields
    assert result.gpus[0]["memory_total_mib"] == 15360.0
    collector.collect()
    assert sum("compute_cap" in c[1] for c in runner.commands if len(c) > 1) == 1


def test_wrong_column_count_is_an_error() -> None:
    with pytest.raises(NvidiaSmiError, match="columns"):
        parse_query_csv("0, GPU-x, Tesla T4\n")


def test_no_gpu_output_means_no_samples() -> None:
    assert parse_query_csv("") == []
    assert combine([], None) == []


def test_list_parsing_ignores_gpus_without_mig() -> None:
    listing = parse_list(
        "GPU 0: Tesla T4 (UUID: GPU-aaa)\nGPU 1: NVIDIA A100 (UUID: GPU-bbb)\n"
        "  MIG 1g.5gb     Device  0: (UUID: MIG-ccc)\n"
    )
    assert listing == {
        "GPU-aaa": [],
        "GPU-bbb": [{"index": 0, "profile": "1g.5gb", "uuid": "MIG-ccc"}],
    }


def test_xml_without_processes_or_mig() -> None:
    report = parse_query_xml(
        "<nvidia_smi_log><driver_version>550.1</driver_version><cuda_version>12.4</cuda_version>"
        "<gpu id='x'><uuid>GPU-1</uuid><processes></processes></gpu></nvidia_smi_log>"
    )
    assert report.cuda_version == "12.4"
    assert report.gpus["GPU-1"].processes == []
