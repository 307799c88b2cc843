"""Archive objects: deterministic keys, flush by count or age, exact re-upload."""

from __future__ import annotations

from ca4_schemas import encode_event
from ca4_worker.application.archiver import Archiver
from ca4_worker.domain.archive import archive_key, decode_archive_object, encode_archive_object
from ca4_worker.persistence.memory import InMemoryObjectStore

from tests.unit.worker.factories import event_body, make_event, record


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_key_is_deterministic_and_sorts_by_offset() -> None:
    first = record(b"x", partition=2, offset=42, timestamp_ms=1_767_614_400_000)
    key = archive_key("raw", "gpu-metadata", first)
    assert key == (
        "raw/gpu-metadata/dt=2026-01-05/partition=2/gpu-metadata+2+00000000000000000042.jsonl.gz"
    )


def test_objects_round_trip_even_binary_poison() -> None:
    records = [
        record(event_body(), offset=0),
        record(b"\xff\x00bin", offset=1),
        record(None, offset=2),
    ]
    data = encode_archive_object(records)
    assert encode_archive_object(records) == data  # byte-for-byte reproducible
    assert list(decode_archive_object(data)) == records


def test_values_with_unicode_line_breaks_round_trip() -> None:
    """Values are archived unescaped: a report's label with U+2028 (the schema takes it) or a
    poison record's U+0085 split the object's lines where ``str.splitlines`` cut them, and the
    whole object failed to read back, so a replay from the archive stopped there."""
    records = [
        record(encode_event(make_event(labels={"note": "a\u2028b\u2029c"})), offset=0),
        record("\u0085\x1c\x1d\x1e\x0b\x0c\r".encode(), offset=1),
        record(event_body(), offset=2),
    ]
    assert "\u2028".encode() in (records[0].value or b"")  # published as it came, unescaped
    assert list(decode_archive_object(encode_archive_object(records))) == records


async def test_flush_by_count_then_by_age() -> None:
    objects, clock = InMemoryObjectStore(), Clock()
    archiver = Archiver(objects, prefix="raw", max_records=3, max_age_s=10, clock=clock)
    archiver.add(record(b"v", offset=offset) for offset in range(4))
    assert archiver.due() == [("gpu-metadata", 0)]
    assert await archiver.flush("gpu-metadata", 0) == 3
    assert archiver.due() == []
    clock.now = 11
    assert archiver.due() == [("gpu-metadata", 0)]
    assert await archiver.flush("gpu-metadata", 0) == 4
    assert len(objects.objects) == 2


async def test_reupload_after_crash_replaces_the_same_object() -> None:
    objects = InMemoryObjectStore()
    records = [record(b"v", offset=offset) for offset in range(10, 15)]
    first_run = Archiver(objects, prefix="raw", max_records=100, max_age_s=1, clock=lambda: 5.0)
    first_run.add(records)
    await first_run.flush("gpu-metadata", 0)  # uploaded, then the process dies before commit
    restarted = Archiver(objects, prefix="raw", max_records=3, max_age_s=1, clock=lambda: 9.0)
    restarted.add(records)  # re-read from the committed offset 10
    await restarted.flush("gpu-metadata", 0)
    await restarted.flush("gpu-metadata", 0)
    positions = [
        rec.offset for data in objects.objects.values() for rec in decode_archive_object(data)
    ]
    assert sorted(positions) == [10, 11, 12, 13, 14]


async def test_s3_outage_is_waited_out() -> None:
    objects = InMemoryObjectStore()
    objects.outage.failures_left = 2
    archiver = Archiver(objects, prefix="raw", max_records=1, max_age_s=1, max_backoff_s=0.01)
    archiver.add([record(b"v", offset=0)])
    assert await archiver.flush("gpu-metadata", 0) == 1
    assert objects.puts == 1
