"""The upcaster chain and decode_event: old versions become the newest, unknown ones fail loudly."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from ca4_schemas import (
    EventDecodeError,
    GpuMetadataReport,
    InvalidJsonError,
    UnknownSchemaVersionError,
    decode_event,
    upcast,
    upcasting,
)
from ca4_schemas.v1 import GpuMetadataReportedV1
from pydantic import ValidationError

from tests.support.reports import make_report, stamped


def _event_body(**overrides: Any) -> dict[str, Any]:
    event = stamped(GpuMetadataReport.model_validate(make_report()))
    return {**json.loads(event.model_dump_json()), **overrides}


def test_registered_upcasters_run_in_order_up_to_the_latest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def upcast_v1_v2(raw: dict[str, Any]) -> dict[str, Any]:
        renamed = {key: value for key, value in raw.items() if key != "host"}
        return {**renamed, "hostname": raw["host"], "steps": ["v1->v2"]}

    def upcast_v2_v3(raw: dict[str, Any]) -> dict[str, Any]:
        return {**raw, "steps": [*raw["steps"], "v2->v3"]}

    monkeypatch.setattr(upcasting, "LATEST_SCHEMA_VERSION", 3)
    monkeypatch.setattr(upcasting, "UPCASTERS", {1: upcast_v1_v2, 2: upcast_v2_v3})

    result = upcast({"schema_version": 1, "host": "h1"})

    assert result == {"schema_version": 3, "hostname": "h1", "steps": ["v1->v2", "v2->v3"]}


def test_latest_version_passes_through_unchanged() -> None:
    body = _event_body()

    assert upcast(dict(body)) == body


def test_decode_event_reads_the_current_version() -> None:
    body = _event_body()

    event = decode_event(json.dumps(body).encode())

    assert str(event.event_id) == body["event_id"]
    assert event.received_at.tzinfo is not None


@pytest.mark.parametrize("version", [3, 99])
def test_unknown_future_version_raises_for_the_dlq(version: int) -> None:
    with pytest.raises(UnknownSchemaVersionError) as caught:
        decode_event(json.dumps(_event_body(schema_version=version)).encode())

    assert caught.value.error_class == "unknown_schema_version"
    assert str(version) in str(caught.value)


@pytest.mark.parametrize("as_bytes", [False, True], ids=["object", "bytes"])
@pytest.mark.parametrize("version", [0, -1, "2", True, None, 1.5, 2.0])
def test_malformed_version_is_a_decode_error(version: object, as_bytes: bool) -> None:
    body = _event_body(schema_version=version)

    with pytest.raises(EventDecodeError) as caught:
        decode_event(json.dumps(body).encode() if as_bytes else body)

    assert caught.value.error_class == "invalid_event"


def test_missing_version_is_a_decode_error() -> None:
    body = _event_body()
    del body["schema_version"]

    with pytest.raises(EventDecodeError) as caught:
        decode_event(json.dumps(body).encode())

    assert caught.value.error_class == "invalid_event"


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"\xff\xfe",
        b"[1, 2]",
        b'"text"',
        b"[" * 5000 + b"]" * 5000,
        # Past Python's 4,300-digit limit for int() the json module raises a plain ValueError.
        b'{"schema_version": 1, "n": ' + b"9" * 5000 + b"}",
    ],
)
def test_non_object_or_invalid_json_is_invalid_json(body: bytes) -> None:
    with pytest.raises(InvalidJsonError) as caught:
        decode_event(body)

    assert caught.value.error_class == "invalid_json"


def test_known_version_breaking_the_contract_raises_validation_error() -> None:
    body = _event_body()
    body["payload"]["host"]["cpu_count"] = -1

    with pytest.raises(ValidationError):
        decode_event(json.dumps(body).encode())


def test_a_version_1_event_is_read_as_the_legacy_tenants() -> None:
    v1 = {k: v for k, v in _event_body().items() if k not in {"key_id", "tenant"}}
    v1["schema_version"] = 1

    event = decode_event(json.dumps(v1).encode())

    assert (event.schema_version, event.key_id, event.tenant) == (2, "legacy", "legacy")
    assert str(event.event_id) == v1["event_id"]


def test_a_version_1_event_cannot_bring_its_own_tenant() -> None:
    forged = {**_event_body(), "schema_version": 1, "tenant": "victim", "key_id": "victim-key"}

    event = decode_event(json.dumps(forged).encode())

    assert (event.key_id, event.tenant) == ("legacy", "legacy")


def test_a_version_2_event_without_its_owner_is_refused() -> None:
    body = _event_body()
    del body["tenant"]

    with pytest.raises(ValidationError, match="tenant"):
        decode_event(json.dumps(body).encode())


def test_the_seeds_received_still_builds_a_version_1_event_with_a_deprecation_warning() -> None:
    """Code written before tenancy called ``report.received(...)`` (an ``AttributeError`` once
    it was removed); it gets the seed's version-1 event, which is read as the legacy tenant's."""
    body = make_report()
    received_at = datetime.now(UTC)

    with pytest.warns(DeprecationWarning, match=r"received\(\) builds a pre-tenancy"):
        event = GpuMetadataReport.model_validate(body).received(received_at)

    assert type(event) is GpuMetadataReportedV1
    assert event == GpuMetadataReportedV1.model_validate({**body, "received_at": received_at})
    decoded = decode_event(event.model_dump_json().encode())
    assert (decoded.schema_version, decoded.event_id, decoded.tenant) == (
        2,
        event.event_id,
        "legacy",
    )


def test_the_seeds_received_requires_an_aware_time() -> None:
    report = GpuMetadataReport.model_validate(make_report())

    with (
        pytest.warns(DeprecationWarning, match=r"received\(\) builds a pre-tenancy"),
        pytest.raises(ValueError, match=r"^received_at must be timezone-aware$"),
    ):
        report.received(datetime.now(UTC).replace(tzinfo=None))
