"""Every bound of the contract rejects what it should, naming the offending field."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ca4_schemas import GpuMetadataReport, GpuMetadataReported, decode_event
from pydantic import ValidationError

from tests.support.reports import make_report, stamped

Mutation = Callable[[dict[str, Any]], None]


def _gpu(field: str, value: Any) -> Mutation:
    def mutate(report: dict[str, Any]) -> None:
        report["payload"]["gpus"][0][field] = value

    return mutate


def _host(field: str, value: Any) -> Mutation:
    def mutate(report: dict[str, Any]) -> None:
        report["payload"]["host"][field] = value

    return mutate


def _top(field: str, value: Any) -> Mutation:
    def mutate(report: dict[str, Any]) -> None:
        report[field] = value

    return mutate


def _duplicate_gpu(report: dict[str, Any]) -> None:
    report["payload"]["gpus"].append(dict(report["payload"]["gpus"][0]))


def _naive_occurred_at(report: dict[str, Any]) -> None:
    report["occurred_at"] = datetime.now(UTC).replace(tzinfo=None).isoformat()


def _future_occurred_at(report: dict[str, Any]) -> None:
    report["occurred_at"] = (datetime.now(UTC) + timedelta(hours=1)).isoformat()


CASES: dict[str, tuple[Mutation, str]] = {
    "percent over 100": (_gpu("utilization_gpu_pct", 100.5), "utilization_gpu_pct"),
    "negative percent": (_gpu("fan_speed_pct", -1.0), "fan_speed_pct"),
    "negative memory": (_gpu("memory_used_mib", -5.0), "memory_used_mib"),
    "negative power": (_gpu("power_draw_w", -0.1), "power_draw_w"),
    "absurd temperature": (_gpu("temperature_gpu_c", 1000.0), "temperature_gpu_c"),
    "number as string": (_gpu("memory_used_mib", "12"), "memory_used_mib"),
    "bool as count": (_gpu("index", True), "index"),
    "float as count": (_gpu("index", 1.5), "index"),
    "string bool": (_gpu("persistence_mode", "true"), "persistence_mode"),
    "bad performance state": (_gpu("performance_state", "P16"), "performance_state"),
    "oversized name": (_gpu("name", "x" * 129), "name"),
    "name over 128 bytes": (_gpu("name", "\U00020000" * 33), "payload"),
    "uuid over 128 bytes": (_gpu("uuid", "GPU-" + "\u00e9" * 63), "payload"),
    "empty name": (_gpu("name", "   "), "name"),
    "control character": (_gpu("name", "Tesla\x00T4"), "name"),
    "bidi override": (_gpu("name", "Tesla \u202eT4"), "name"),
    "too many throttle reasons": (_gpu("throttle_reasons", ["a"] * 33), "throttle_reasons"),
    "duplicate gpu uuid": (_duplicate_gpu, "gpus"),
    "zero cpus": (_host("cpu_count", 0), "cpu_count"),
    "missing hostname": (lambda r: r["payload"]["host"].pop("hostname"), "hostname"),
    "dollar label key": (_top("labels", {"$where": "1"}), "labels"),
    "dotted label key": (_top("labels", {"a.b": "1"}), "labels"),
    "too many labels": (_top("labels", {f"k{i}": "v" for i in range(33)}), "labels"),
    "oversized label value": (_top("labels", {"k": "v" * 257}), "labels"),
    "labels over 16 KiB": (
        _top("labels", {f"k{i}": "\U00020000" * 256 for i in range(16)}),
        "labels",
    ),
    "session id with slash": (_top("session_id", "a/b"), "session_id"),
    "naive timestamp": (_naive_occurred_at, "occurred_at"),
    "future timestamp": (_future_occurred_at, "occurred_at"),
    "year 1 east of UTC": (_top("occurred_at", "0001-01-01T00:00:00+01:00"), "occurred_at"),
    "year 9999 west of UTC": (_top("occurred_at", "9999-12-31T23:00:00-05:00"), "occurred_at"),
    "bad event id": (_top("event_id", "not-a-uuid"), "event_id"),
    "future schema version": (_top("schema_version", 2), "schema_version"),
    "wrong event type": (_top("event_type", "gpu.other"), "event_type"),
    "unknown field": (_top("surprise", 1), "surprise"),
    "received_at from client": (_top("received_at", datetime.now(UTC).isoformat()), "received_at"),
}


@pytest.mark.parametrize(("mutate", "field"), CASES.values(), ids=CASES.keys())
def test_out_of_bounds_report_is_rejected_at_its_field(mutate: Mutation, field: str) -> None:
    report = make_report()
    mutate(report)

    with pytest.raises(ValidationError) as caught:
        GpuMetadataReport.model_validate_json(json.dumps(report))

    assert any(field in map(str, error["loc"]) for error in caught.value.errors()), (
        caught.value.errors()
    )


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_rejected(literal: str) -> None:
    wire = json.dumps(make_report()).replace('"power_draw_w": 63.4', f'"power_draw_w": {literal}')

    with pytest.raises(ValidationError):
        GpuMetadataReport.model_validate_json(wire)


@pytest.mark.parametrize("occurred_at", ["0001-01-01T00:00:00+01:00", "0001-01-01T00:59:59+01:00"])
def test_time_before_year_1_in_utc_is_a_field_error(occurred_at: str) -> None:
    with pytest.raises(ValidationError) as caught:
        GpuMetadataReport.model_validate_json(json.dumps(make_report(occurred_at=occurred_at)))

    (error,) = caught.value.errors()
    assert error["loc"] == ("occurred_at",)
    assert "outside the range UTC can represent" in error["msg"]


@pytest.mark.parametrize(
    "occurred_at", ["0001-01-01T01:00:00+01:00", "1970-01-01T00:00:00Z", "1999-12-31T23:59:59Z"]
)
def test_a_report_from_before_2000_is_refused(occurred_at: str) -> None:
    # Day arithmetic on year 1 overflowed in the worker's usage fold, for every tenant's round.
    with pytest.raises(ValidationError) as caught:
        GpuMetadataReport.model_validate_json(json.dumps(make_report(occurred_at=occurred_at)))

    (error,) = caught.value.errors()
    assert error["loc"] == ("occurred_at",)
    assert error["msg"] == ("Value error, occurred_at is before 2000-01-01; check the client clock")


def test_a_report_from_2000_on_is_valid() -> None:
    report = GpuMetadataReport.model_validate_json(
        json.dumps(make_report(occurred_at="2000-01-01T00:00:00Z"))
    )

    assert report.occurred_at == datetime(2000, 1, 1, tzinfo=UTC)


def _event_json(occurred_at: datetime, received_at: datetime) -> str:
    event = {
        **make_report(occurred_at=occurred_at.isoformat()),
        "schema_version": 2,
        "received_at": received_at.isoformat(),
        "key_id": "colab",
        "tenant": "acme",
    }
    return json.dumps(event)


def test_an_event_stored_before_the_floor_is_still_read() -> None:
    year_one = datetime(1, 1, 1, tzinfo=UTC)

    event = GpuMetadataReported.model_validate_json(_event_json(year_one, datetime.now(UTC)))

    assert event.occurred_at == year_one


def test_an_event_is_read_the_same_whatever_the_readers_clock() -> None:
    # A report accepted by a processor whose clock is ahead of this worker's: checked against
    # this machine's clock, it was unreadable here (the projection round retried until the
    # clocks agreed) and readable on another worker.
    processor_clock = datetime.now(UTC) + timedelta(hours=1)

    event = GpuMetadataReported.model_validate_json(
        _event_json(processor_clock + timedelta(minutes=4), processor_clock)
    )

    assert event.received_at == processor_clock


def test_an_event_whose_time_leads_its_receipt_past_the_skew_is_refused() -> None:
    received_at = datetime(2026, 1, 1, tzinfo=UTC)

    with pytest.raises(ValidationError) as caught:
        GpuMetadataReported.model_validate_json(
            _event_json(received_at + timedelta(minutes=7), received_at)
        )

    (error,) = caught.value.errors()
    assert error["loc"] == ("received_at",)
    assert "occurred_at leads received_at by more than 0:06:00" in error["msg"]


def test_cpu_runtime_with_zero_gpus_is_valid() -> None:
    report = GpuMetadataReport.model_validate_json(json.dumps(make_report(gpus=0)))

    assert report.payload.gpus == []


def test_models_are_frozen() -> None:
    report = GpuMetadataReport.model_validate_json(json.dumps(make_report()))

    with pytest.raises(ValidationError):
        report.session_id = "other"  # type: ignore[misc]


def test_received_requires_an_aware_time() -> None:
    report = GpuMetadataReport.model_validate_json(json.dumps(make_report()))

    with pytest.raises(ValueError, match="timezone-aware"):
        stamped(report, datetime.now(UTC).replace(tzinfo=None))


def test_too_many_labels_is_one_error_however_bad_they_are() -> None:
    """Counted before any label is validated: a dict's own ``max_length`` is checked after
    every entry, so 10,000 labels with bad keys and values were 20,000 errors (the processor
    held hundreds of MB listing such a body's errors)."""
    report = make_report()
    report["labels"] = {f"-{index}": index for index in range(10_000)}

    with pytest.raises(ValidationError) as caught:
        GpuMetadataReport.model_validate_json(json.dumps(report))

    (error,) = caught.value.errors()
    assert error["loc"] == ("labels",)
    assert error["type"] == "too_long"
    assert error["msg"] == "Dictionary should have at most 32 items after validation, not 10000"


@pytest.mark.parametrize("field", ["uuid", "name"])
def test_a_gpu_key_is_bounded_in_bytes_as_well_as_characters(field: str) -> None:
    def with_value(value: str) -> dict[str, Any]:
        report = make_report()
        _gpu(field, value)(report)
        return report

    # 128 characters of ASCII, and 32 of four bytes each, are 128 bytes: both fit.
    for fits in ("x" * 128, "\U00020000" * 32):
        report = GpuMetadataReport.model_validate_json(json.dumps(with_value(fits)))
        assert getattr(report.payload.gpus[0], field) == fits
    with pytest.raises(ValidationError) as caught:
        GpuMetadataReport.model_validate_json(json.dumps(with_value("\U00020000" * 33)))
    [error] = caught.value.errors()
    assert error["loc"] == ("payload",)
    assert error["msg"] == f"gpus[0].{field} should be at most 128 bytes in UTF-8, not 132"


@pytest.mark.parametrize("version", [1, 2])
def test_events_stored_before_the_byte_bounds_still_read(version: int) -> None:
    """The bounds are the edge's, for new reports: an event a processor accepted before them
    (uuid, name and labels as long as the characters allowed) reads back as it was, from the
    topic, the event store or the archive, in either event version."""
    heavy = "\U00020000" * 128
    event = {
        **make_report(),
        "schema_version": version,
        "received_at": datetime.now(UTC).isoformat(),
    } | ({"key_id": "colab", "tenant": "acme"} if version == 2 else {})
    event["payload"]["gpus"][0] |= {"uuid": "GPU-" + "\u00e9" * 100, "name": heavy}
    event["labels"] = {f"k{key:02d}": "\U00020000" * 256 for key in range(32)}

    decoded = decode_event(json.dumps(event).encode())

    assert decoded.payload.gpus[0].name == heavy
    assert decoded.labels == event["labels"]


def test_labels_are_bounded_in_bytes_altogether() -> None:
    report = make_report()
    # 32 labels at their longest in ASCII fit; 16 of 256 four-byte characters do not.
    report["labels"] = {f"k{key:02d}{'x' * 60}": "v" * 256 for key in range(32)}
    assert len(GpuMetadataReport.model_validate_json(json.dumps(report)).labels) == 32
    report["labels"] = {f"k{key:02d}": "\U00020000" * 256 for key in range(16)}
    with pytest.raises(ValidationError) as caught:
        GpuMetadataReport.model_validate_json(json.dumps(report))
    [error] = caught.value.errors()
    assert error["loc"] == ("labels",)
    assert error["msg"] == "Labels should be at most 16384 bytes in UTF-8 altogether, not 16432"
