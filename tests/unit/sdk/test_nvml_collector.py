"""The NVML path, driven by a fake ``pynvml`` that replays recorded answers."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
from ca4_sdk import collectors
from ca4_sdk.collectors.base import CollectorResult
from ca4_sdk.collectors.nvml import NvmlCollector, NvmlUnavailableError, load_pynvml
from ca4_sdk.host import collect_host
from ca4_sdk.report import build_report

from tests.unit.sdk.fake_nvml import FakeNvml, a100_mig_recording, t4_recording
from tests.unit.sdk.reporter_support import make_reporter
from tests.unit.sdk.stub_api import stub_api
from tests.unit.sdk.support import assert_valid_report

pytestmark = pytest.mark.stand_in(
    "NVML on a GPU: no GPU here; ran instead: a fake pynvml replaying answers recorded on real GPUs"
)


def test_t4_through_nvml_reads_every_supported_field() -> None:
    fake = FakeNvml(t4_recording())
    collector = NvmlCollector(fake)  # type: ignore[arg-type]
    result = collector.collect()
    assert result.collector == "nvml"
    assert (result.driver_version, result.cuda_version) == ("535.104.05", "12.2")
    (gpu,) = result.gpus
    assert gpu["name"] == "Tesla T4"
    assert gpu["compute_capability"] == "7.5"
    assert gpu["memory_total_mib"] == 15360.0
    assert gpu["memory_reserved_mib"] == 266.0
    assert gpu["power_draw_w"] == pytest.approx(33.92)
    assert gpu["energy_consumption_j"] == pytest.approx(8123.456)
    assert gpu["clock_memory_mhz"] == 5000.0
    assert gpu["performance_state"] == "P0"
    assert gpu["throttle_reasons"] == ["sw_power_cap"]
    assert gpu["retired_pages"] == 0
    assert gpu["compute_mode"] == "Default"
    assert gpu["persistence_mode"] is False
    assert gpu["processes"] == [
        {"pid": 4411, "used_memory_mib": 1428.0, "name": "/usr/bin/python3"}
    ]
    assert "temperature_memory_c" not in gpu  # the sensor answers 0 on a T4
    assert result.unavailable_fields == ["fan_speed_pct", "temperature_memory_c"]
    assert result.errors == []
    collector.close()
    assert not fake.initialised


def test_mig_slices_are_samples_of_their_own() -> None:
    collector = NvmlCollector(FakeNvml(a100_mig_recording()))  # type: ignore[arg-type]
    result = collector.collect()
    parent, *slices = result.gpus
    assert [s["mig"]["gpu_instance_id"] for s in slices] == [1, 13]
    assert [s["mig"]["profile"] for s in slices] == ["3g.20gb", "1g.5gb"]
    assert all(s["mig"]["parent_uuid"] == parent["uuid"] for s in slices)
    assert slices[0]["memory_used_mib"] == 10213.0
    assert slices[0]["index"] == parent["index"] == 0
    # "Insufficient permissions" (4) is an error worth reporting; "Not Supported" is not.
    assert any(error.startswith("processes:") for error in result.errors)
    report = build_report(
        session_id="s-1", runtime="python", host=collect_host(), collection=result
    )
    assert_valid_report(report)


def test_missing_library_is_a_clear_unavailable_error() -> None:
    class NoLibrary(FakeNvml):
        def nvmlInit(self) -> None:
            raise self.NVMLError(12)

    with pytest.raises(NvmlUnavailableError, match="nvmlInit failed"):
        NvmlCollector(NoLibrary({}))  # type: ignore[arg-type]


def test_without_nvidia_ml_py_the_advice_names_the_package_not_a_public_pypi_sdk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `pip install ca4-sdk[nvml]` would fetch whatever public PyPI holds under that name.
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails as when not installed

    with pytest.raises(NvmlUnavailableError) as caught:
        load_pynvml()

    assert str(caught.value) == 'nvidia-ml-py is not installed (pip install "nvidia-ml-py>=12.535")'


GPU_IS_LOST = 15
DRIVER_MISMATCH = 18


@pytest.mark.parametrize("code", [GPU_IS_LOST, DRIVER_MISMATCH], ids=["gpu lost", "mismatch"])
def test_nvml_failing_for_the_whole_host_gives_a_report_that_says_so(code: int) -> None:
    """The GPU count failing mid-run (every GPU lost, the driver updated under the process)
    raised out of collect(): no report at all, and a traceback each interval."""
    recording = t4_recording()
    recording["calls"]["nvmlDeviceGetCount()"] = {"nvml_error": code}
    result = NvmlCollector(FakeNvml(recording)).collect()  # type: ignore[arg-type]
    assert result.gpus == []
    assert result.errors == [f"GPU count: NVML error {code}"]
    assert_valid_report(
        build_report(session_id="s-1", runtime="python", host=collect_host(), collection=result)
    )


@pytest.mark.parametrize(
    "failing",
    ["nvmlDeviceGetGpuInstanceId(gpu0.mig1)", "nvmlDeviceGetUUID(gpu0.mig1)"],
    ids=["instance id", "uuid"],
)
def test_a_mig_slice_lost_mid_collection_leaves_the_gpu_and_other_slices(failing: str) -> None:
    recording = a100_mig_recording()
    recording["calls"][failing] = {"nvml_error": GPU_IS_LOST}
    result = NvmlCollector(FakeNvml(recording)).collect()  # type: ignore[arg-type]
    parent, *slices = result.gpus
    assert "mig" not in parent
    assert [s["mig"]["gpu_instance_id"] for s in slices] == [1]
    assert "GPU 0 MIG slice 1: NVML error 15" in result.errors


def test_mig_slots_that_cannot_be_counted_leave_the_gpu() -> None:
    recording = a100_mig_recording()
    recording["calls"]["nvmlDeviceGetMaxMigDeviceCount(gpu0)"] = {"nvml_error": GPU_IS_LOST}
    result = NvmlCollector(FakeNvml(recording)).collect()  # type: ignore[arg-type]
    assert [gpu["uuid"] for gpu in result.gpus] == ["GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77"]
    assert "GPU 0 MIG slices: NVML error 15" in result.errors


def test_a_collector_that_raises_gives_a_result_without_gpus_that_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever escapes the collector chosen (an NVML failure it does not catch) is the API's
    to hear: the GPUs can no longer be read."""

    class Broken(NvmlCollector):
        def collect(self) -> CollectorResult:
            raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setattr(collectors, "NvmlCollector", lambda: Broken(FakeNvml(t4_recording())))  # type: ignore[arg-type]
    auto = collectors.AutoCollector()
    assert auto.name == "nvml"
    result = auto.collect()
    assert (result.collector, result.gpus) == ("none", [])
    assert result.errors == ["nvml: RuntimeError: NVML Shared Library Not Found"]


def test_a_reporter_used_in_a_second_with_block_reads_the_gpus_again(tmp_path: Path) -> None:
    """Leaving ``with reporter:`` shuts NVML down; a later ``with reporter:`` (the next phase
    of training, in another cell) reported no GPU at all, every NVML call Uninitialized."""
    with stub_api() as (url, _):
        reporter = make_reporter(
            url,
            tmp_path,
            interval=60,
            collector=NvmlCollector(FakeNvml(t4_recording())),  # type: ignore[arg-type]
        )
        for _ in range(2):
            with reporter:
                report = reporter.collect()
            assert [gpu["name"] for gpu in report["payload"]["gpus"]] == ["Tesla T4"]
            assert report["payload"]["collector"]["errors"] == []


class _CountingNvml(FakeNvml):
    """NVML as it is: init and shutdown counted (initialised while above zero); an init may be
    held until ``go`` is set, as one taking its time loading the driver."""

    def __init__(self) -> None:
        super().__init__(t4_recording())
        self.count = 0
        self.hold = False
        self.inside = threading.Semaphore(0)
        self.go = threading.Event()
        self._count_lock = threading.Lock()

    def nvmlInit(self) -> None:
        if self.hold:
            self.inside.release()
            assert self.go.wait(10)
        with self._count_lock:
            self.count += 1
            self.initialised = True

    def nvmlShutdown(self) -> None:
        with self._count_lock:
            self.count -= 1
            self.initialised = self.count > 0


def _collect_in_threads(
    collector: NvmlCollector, nvml: _CountingNvml, threads: int
) -> tuple[list[threading.Thread], list[CollectorResult]]:
    nvml.hold = True
    results: list[CollectorResult] = []
    started = [
        threading.Thread(target=lambda: results.append(collector.collect())) for _ in range(threads)
    ]
    for thread in started:
        thread.start()
    for _ in started:
        assert nvml.inside.acquire(timeout=10)  # every thread is initialising NVML again
    return started, results


def test_close_while_another_thread_initialises_nvml_again_leaves_it_shut_down() -> None:
    """close() saw the collector closed and did nothing, then the collect initialising NVML
    again marked it open: NVML stayed initialised after close() returned, for good."""
    nvml = _CountingNvml()
    collector = NvmlCollector(nvml)  # type: ignore[arg-type]
    collector.close()
    threads, results = _collect_in_threads(collector, nvml, 1)
    collector.close()
    nvml.go.set()
    for thread in threads:
        thread.join(10)
    assert nvml.count == 0
    assert results[0].gpus == []
    assert results[0].errors == ["nvmlInit: closed meanwhile"]
    nvml.hold = False
    assert [gpu["name"] for gpu in collector.collect().gpus] == ["Tesla T4"]  # used again


def test_two_threads_initialising_nvml_again_take_it_once() -> None:
    """Both saw the collector closed and both initialised NVML: the next close() released one
    of the two, and NVML stayed initialised."""
    nvml = _CountingNvml()
    collector = NvmlCollector(nvml)  # type: ignore[arg-type]
    collector.close()
    threads, results = _collect_in_threads(collector, nvml, 2)
    nvml.go.set()
    for thread in threads:
        thread.join(10)
    assert [[gpu["name"] for gpu in result.gpus] for result in results] == [["Tesla T4"]] * 2
    assert nvml.count == 1
    collector.close()
    assert nvml.count == 0
