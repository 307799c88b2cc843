"""Report building, runtime detection, the session id and privacy mode."""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

import pytest
from ca4_schemas import v1
from ca4_schemas import v1 as contract
from ca4_schemas.types import Identifier, LabelKey, LabelValue
from ca4_sdk import report
from ca4_sdk import report as report_module
from ca4_sdk.collectors.base import CollectorResult
from ca4_sdk.collectors.nvidia_smi import NvidiaSmiCollector
from ca4_sdk.host import collect_host, read_meminfo
from ca4_sdk.privacy import hash_hostname
from ca4_sdk.report import build_report, validate_labels
from ca4_sdk.runtime import SESSION_ID_PATTERN, detect_runtime, stable_session_id
from pydantic import TypeAdapter, ValidationError

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
    # The contract's 16 KiB of labels in UTF-8: every report of such labels would be refused.
    with pytest.raises(ValueError, match="at most 16384 bytes in UTF-8 altogether, got 16432"):
        validate_labels({f"k{i:02d}": "\U00020000" * 256 for i in range(16)})


@pytest.mark.parametrize(
    "labels",
    [
        {"run": "ft-7\n"},  # a value read from a file, its line break kept
        {"notes": "lr\t1e-4"},
        {"run": "a\u202eb"},  # a bidi override
        {"run": "\ue000"},  # private use
        {"run\n": "x"},  # the key pattern's $ matched before a final line break
    ],
)
def test_labels_the_contract_refuses_are_refused_in_the_callers_cell(
    labels: dict[str, str],
) -> None:
    """Every report carries the labels: ones the API refuses dropped the whole session's
    reports, a warning each, where ``Reporter(labels=...)`` could have said so at once."""
    with pytest.raises(ValueError, match="label"):
        validate_labels(labels)
    candidate = build_report(
        session_id="s", runtime="colab", host=collect_host(), collection=CollectorResult("none")
    )
    with pytest.raises(ValueError, match="labels"):
        contract.GpuMetadataReportV1.model_validate(dict(candidate, labels=labels))


def test_a_refused_label_value_is_named_by_its_character() -> None:
    with pytest.raises(ValueError, match="at position 5") as refused:
        validate_labels({"run": "ft-7\n"})
    assert str(refused.value) == (
        "label 'run' has U+000A (a control character) at position 5: the API refuses every "
        "report with it (.strip() a value read from a file)"
    )
    # What the contract takes stays taken: spaces, accents, emoji, an empty value.
    assert validate_labels({"a": "é 🚀", "b": ""}) == {"a": "é 🚀", "b": ""}


def test_a_character_newer_than_this_pythons_unicode_is_left_to_the_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python 3.10 knows Unicode 13, the API's 3.11 knows 14: 'U+1FAE0' (melting face) is
    unassigned for the first and taken by the second, so refusing unassigned characters here
    refused a label the API takes. This Python's database stands in for the API's and Unicode
    3.2's for an older Python's."""
    monkeypatch.setattr(report_module, "unicodedata", unicodedata.ucd_3_2_0)
    labels = {"mood": "\U0001fae0 \U0001f680"}  # Unicode 14 and 6: unassigned in 3.2
    assert validate_labels(labels) == labels
    candidate = build_report(
        session_id="s", runtime="colab", host=collect_host(), collection=CollectorResult("none")
    )
    assert contract.GpuMetadataReportV1.model_validate(dict(candidate, labels=labels)).labels
    # Unassigned in every version: still refused at once.
    for noncharacter in ("\ufdd0", "\uffff", "\U0010fffe"):
        with pytest.raises(ValueError, match="the API refuses every report with it"):
            validate_labels({"run": noncharacter})


def test_the_sdks_label_characters_are_the_contracts() -> None:
    """The SDK writes the contract's rule again (it cannot import the contract): on this
    Python, every character it refuses in a label value the contract refuses, and every one the
    contract refuses it refuses too, but those this Python's Unicode has not assigned (see
    :func:`test_a_character_newer_than_this_pythons_unicode_is_left_to_the_api`). Printable
    characters are never refused by either."""
    label_value = TypeAdapter(LabelValue)

    def contract_refuses(character: str) -> bool:
        try:
            label_value.validate_python(character)
        except ValidationError:
            return True
        return False

    disagree = []
    for code in range(sys.maxunicode + 1):
        character = chr(code)
        if character.isprintable():
            continue
        sdk_refuses = report_module._refused_in_a_label(character)
        if unicodedata.category(character) == "Cn" and not sdk_refuses:
            continue  # left to the API, whose Unicode may be newer
        if sdk_refuses != contract_refuses(character):
            disagree.append(f"U+{code:04X}")
    assert disagree == []


def test_the_sdks_label_key_and_session_id_patterns_are_the_contracts() -> None:
    """Written again in the SDK (checked with fullmatch there: the contract's ``$`` does not
    match before a final line break)."""
    assert report_module.LABEL_KEY.pattern == LabelKey.__metadata__[0].pattern
    assert SESSION_ID_PATTERN.pattern == Identifier.__metadata__[0].pattern


def test_the_sdks_label_caps_are_the_contracts() -> None:
    assert (report.MAX_LABELS, report.MAX_LABELS_BYTES) == (
        contract.MAX_LABELS,
        contract.MAX_LABELS_BYTES,
    )


def test_meminfo_parsing() -> None:
    info = read_meminfo("MemTotal:       16384000 kB\nMemAvailable:    8192000 kB\nHuge: x\n")
    assert info == {"MemTotal": 16000.0, "MemAvailable": 8000.0}


def test_the_process_cap_is_the_contracts() -> None:
    """The SDK keeps its own copy of the contract's cap (it does not import the contract)."""
    assert report_module.MAX_PROCESSES_PER_GPU == v1.MAX_PROCESSES_PER_GPU


def test_processes_past_the_contracts_cap_are_left_out_and_said() -> None:
    """A GPU with more than 256 processes made every report a 422, never retried: the host
    was not reported at all while it was that busy."""
    cap = report_module.MAX_PROCESSES_PER_GPU

    def processes(count: int) -> list[dict[str, object]]:
        # Memory grows with the pid: the last ``cap`` use the most.
        return [{"pid": pid, "used_memory_mib": float(pid)} for pid in range(1, count + 1)]

    gpu = {"uuid": "GPU-1", "index": 0, "name": "NVIDIA H100", "processes": processes(300)}
    mig = {
        "uuid": "MIG-1",
        "index": 0,
        "name": "NVIDIA H100 MIG 1g.10gb",
        "mig": {"parent_uuid": "GPU-1", "gpu_instance_id": 1},
        "processes": [{"pid": 7}, *processes(cap)],  # no memory figure: the first left out
    }
    result = CollectorResult(collector="nvml", gpus=[gpu, mig])
    report = build_report(
        session_id="python-abc", runtime="python", host=collect_host(), collection=result
    )
    model = assert_valid_report(report)
    kept, kept_on_mig = (sample.processes for sample in model.payload.gpus)
    assert [p.pid for p in kept] == list(range(300 - cap + 1, 301))  # in their order
    assert [p.pid for p in kept_on_mig] == list(range(1, cap + 1))
    assert model.payload.collector.errors == [
        f"processes: {300 - cap + 1} left out, past the {cap} per GPU or MIG slice a report "
        "takes (those using the most GPU memory are kept)"
    ]
    assert len(gpu["processes"]) == 300  # the collection itself is left as it was
