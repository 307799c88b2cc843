"""Property: every valid report and event survives a JSON round trip unchanged."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime
from typing import Any

from ca4_schemas import (
    GpuMetadataReport,
    GpuMetadataReported,
    decode_event,
    encode_event,
)
from hypothesis import HealthCheck, given, settings
from pydantic import BaseModel

from tests.support.reports import TEST_KEY_ID, TEST_TENANT, stamped
from tests.unit.schemas.strategies import report_bodies

_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(report_bodies())
def test_report_round_trips_through_json(body: dict[str, Any]) -> None:
    report = GpuMetadataReport.model_validate(body)

    assert GpuMetadataReport.model_validate_json(report.model_dump_json()) == report


@_SETTINGS
@given(report_bodies())
def test_event_round_trips_through_json_and_decode_event(body: dict[str, Any]) -> None:
    event = stamped(GpuMetadataReport.model_validate(body))
    wire = event.model_dump_json()

    assert GpuMetadataReported.model_validate_json(wire) == event
    assert decode_event(wire.encode()) == event


@_SETTINGS
@given(report_bodies())
def test_stamping_builds_the_same_event_as_full_validation(body: dict[str, Any]) -> None:
    received_at = datetime.now(UTC)

    fast = stamped(GpuMetadataReport.model_validate(body), received_at)

    assert fast == GpuMetadataReported.model_validate(
        {
            **body,
            "schema_version": 2,
            "received_at": received_at,
            "key_id": TEST_KEY_ID,
            "tenant": TEST_TENANT,
        }
    )


@_SETTINGS
@given(report_bodies())
def test_an_event_without_its_null_fields_reads_back_the_same(body: dict[str, Any]) -> None:
    """The topic's records and the event store leave out the optional fields a report left
    out, and read back as the same event."""
    event = stamped(GpuMetadataReport.model_validate(body))
    stored = json.loads(event.model_dump_json(exclude_none=True))
    published = encode_event(event)

    assert not _has_null(stored)
    assert not _has_null(json.loads(published))
    assert decode_event(stored) == event
    assert decode_event(published) == event


def _has_null(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_null(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_null(item) for item in value)
    return value is None


def test_every_nullable_field_defaults_to_none() -> None:
    """What leaving out ``None`` relies on: an absent field reads back as ``None``."""
    required_nullable = []
    models: list[type[BaseModel]] = [GpuMetadataReported]
    seen: set[type[BaseModel]] = set()
    while models:
        model = models.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            kinds = [field.annotation, *typing.get_args(field.annotation)]
            if type(None) in kinds and (field.is_required() or field.default is not None):
                required_nullable.append(f"{model.__name__}.{name}")
            for kind in kinds:
                for inner in [kind, *typing.get_args(kind)]:
                    if isinstance(inner, type) and issubclass(inner, BaseModel):
                        models.append(inner)
    assert len(seen) > 5  # the walk reached the nested models
    assert required_nullable == []
