"""Report building, runtime detection, the session id and privacy mode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ca4_sdk.collectors.base import CollectorResult
from ca4_sdk.collectors.nvidia_smi import NvidiaSmiCollector
from ca4_sdk.host import collect_host, read_meminfo
from ca4_sdk.privacy import hash_hostname
from ca4_sdk.report import build_report, validate_labels
from ca4_sdk.runtime import detect_runtime, stable_session_id

from tests.unit.sdk.support import assert_valid_report, fixture_text
from tests.unit.sdk.test_nvidia_smi_parser import FakeRunner


def test_cpu_only_report_is_valid() -> None:
    result = CollectorResult(collector="none", errors=["nvml: not installed"])
    report = build_report(
        session_id="python-abc",
        runtime="python",
        host=collect_host(),
        collection=result,
        labels={"project": "demo"},
    )
    model = assert_valid_report(report)
    assert model.payload.gpus == []
    assert model.payload.collector.errors == ["nvml: not installed"]
    assert model.source.sdk == "ca4-sdk"
    assert model.labels == {"project": "demo"}
    assert model.occurred_at.tzinfo is not None


def test_privacy_hashes_hostname_and_drops_process_names() -> None:
    result = NvidiaSmiCollector(
        FakeRunner(fixture_text("t4_query_gpu.csv"), fixture_text("t4_q.xml"))
    ).collect()
    host = collect_host()
    report = build_report(
        session_id="s", runtime="colab", host=host, collection=result, privacy_salt="pepper"
    )
    model = assert_valid_report(report)
    assert model.payload.host.hostname == hash_hostname(host["hostname"], "pepper")
    assert model.payload.host.hostname != host["hostname"]
    assert [p.name for p in model.payload.gpus[0].processes] == [None]
    assert model.payload.gpus[0].processes[0].pid == 4411
    assert hash_hostname("a", "salt1") != hash_hostname("a", "salt2")


def test_each_report_has_its_own_event_id() -> None:
    result = CollectorResult(collector="none")
    ids = {
        build_report(session_id="s", runtime="python", host=collect_host(), collection=result)[
            "event_id"
        ]
        for _ in range(5)
    }
    assert len(ids) == 5


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"COLAB_RELEASE_TAG": "release-colab_20251105"}, "colab"),
        ({"COLAB_GPU": "1"}, "colab"),
        ({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, "kaggle"),
        ({"SM_CURRENT_HOST": "algo-1"}, "sagemaker"),
        ({"JPY_PARENT_PID": "12"}, "jupyter"),
    ],
)
def test_runtime_detection(environ: dict[str, str], expected: str) -> None:
    assert detect_runtime(environ) == expected


def test_plain_python_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert detect_runtime({}) == "python"


def test_session_id_is_stable_for_the_runtime(tmp_path: Path) -> None:
    first = stable_session_id("colab", tmp_path)
    assert first.startswith("colab-")
    assert stable_session_id("colab", tmp_path) == first
    assert stable_session_id("kaggle", tmp_path) != first


def test_labels_are_checked_in_the_callers_cell() -> None:
    assert validate_labels({"project": "x"}) == {"project": "x"}
    with pytest.raises(ValueError, match="label key"):
        validate_labels({"$where": "x"})
    with pytest.raises(ValueError, match="at most"):
        validate_labels({f"k{i}": "v" for i in range(33)})


def test_meminfo_parsing() -> None:
    info = read_meminfo("MemTotal:       16384000 kB\nMemAvailable:    8192000 kB\nHuge: x\n")
    assert info == {"MemTotal": 16000.0, "MemAvailable": 8000.0}
