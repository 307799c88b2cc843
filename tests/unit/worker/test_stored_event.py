"""What the event store keeps of each event: the record's own JSON when it holds the newest
version as is, the model dumped otherwise; read back, both give the same event."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from ca4_schemas import LEGACY_TENANT, decode_event
from ca4_worker.application.ingest import decode_record
from ca4_worker.domain.records import Position, PositionedEvent
from ca4_worker.persistence.documents import event_document, positioned_from_document

from tests.unit.worker.factories import event_body, make_event, record, v1_body

STORED_AT = datetime(2026, 1, 5, 12, 0, 1, tzinfo=UTC)


def stored(value: bytes) -> dict[str, object]:
    decoded = decode_record(record(value, offset=7))
    assert isinstance(decoded, PositionedEvent)
    return event_document(decoded, topic="gpu-metadata", stored_at=STORED_AT)


def test_the_newest_version_is_kept_as_its_record_says_it() -> None:
    """Valid but not as the model writes it: padded names, an upper-case id, a whole number
    for a float and another time zone. Kept as sent, read back as the same event."""
    body = event_body()
    body["event_id"] = str(body["event_id"]).upper()
    body["payload"]["host"]["hostname"] = "  worker-7  "
    body["payload"]["gpus"][0]["memory_total_mib"] = 15360
    body["received_at"] = (
        datetime.fromisoformat(body["received_at"]).astimezone(timezone(timedelta(hours=2)))
    ).isoformat()
    value = json.dumps(body).encode()

    document = stored(value)

    assert document["event"] == json.loads(value)
    assert document["_id"] == str(body["event_id"]).lower()
    assert positioned_from_document(document).event == decode_event(value)


def test_an_upcast_older_version_is_stored_as_the_newest() -> None:
    value = json.dumps(v1_body(event_body())).encode()

    document = stored(value)

    event = decode_event(value)
    assert document["event"] == event.model_dump(mode="json")
    assert (document["event"]["schema_version"], document["event"]["tenant"]) == (2, LEGACY_TENANT)
    assert positioned_from_document(document).event == event


def test_an_event_without_its_record_is_the_model_dumped() -> None:
    event = make_event()
    document = event_document(
        PositionedEvent(event, Position(0, 0)),
        topic="gpu-metadata",
        stored_at=STORED_AT,
    )
    assert document["event"] == event.model_dump(mode="json")
