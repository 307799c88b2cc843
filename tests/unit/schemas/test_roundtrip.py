"""Property: every valid report and event survives a JSON round trip unchanged."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ca4_schemas import GpuMetadataReport, GpuMetadataReported, decode_event
from hypothesis import HealthCheck, given, settings

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
