"""Archive objects: deterministic keys, the lines ``json.dumps`` writes, flush by count, weight
or age within a bound on every partition's buffer, exact re-upload, encoding without a copy."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import random
import threading
import tracemalloc
from collections.abc import Iterable
from dataclasses import dataclass

import pytest
from aiokafka import TopicPartition
from ca4_schemas import encode_event, record_weight
from ca4_worker.application.archiver import Archiver
from ca4_worker.domain import archive
from ca4_worker.domain.archive import (
    COMPRESS_LEVEL,
    archive_key,
    decode_archive_object,
    encode_archive_object,
)
from ca4_worker.domain.records import RawRecord
from ca4_worker.messaging.archive_consumer import ArchiveConsumer
from ca4_worker.persistence.memory import InMemoryObjectStore

from tests.unit.worker.factories import event_body, make_event, record

KIB = 1024
MIB = 1024 * KIB
TOPIC = "gpu-metadata"
EMOJI = "\U0001f600"


def large(offset: int, *, partition: int = 0, size: int = 100 * KIB) -> RawRecord:
    """A record of ``size`` bytes, one JSON object with one string: it weighs about that."""
    return record(b'{"x":"' + b"a" * (size - 8) + b'"}', partition=partition, offset=offset)


LARGE_WEIGHT = len(b"poison") + record_weight(large(0).value)
"""What :func:`large` weighs: its key's bytes and its value's weight."""


def weighed(record: RawRecord) -> int:
    return len(record.key or b"") + record_weight(record.value)


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
    archiver = Archiver(
        objects, prefix="raw", max_records=3, max_bytes=MIB, max_age_s=10, clock=clock
    )
    archiver.add(record(b"v", offset=offset) for offset in range(4))
    assert archiver.due() == [("gpu-metadata", 0)]
    assert await archiver.flush("gpu-metadata", 0) == 3
    assert archiver.due() == []
    clock.now = 11
    assert archiver.due() == [("gpu-metadata", 0)]
    assert await archiver.flush("gpu-metadata", 0) == 4
    assert len(objects.objects) == 2


async def test_the_event_loop_runs_while_an_object_is_encoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Encoding a 16 MiB object at gzip level 9 held the event loop, which the store and the
    projections share, about 1 s."""
    encode = archive.encode_archive_object
    ticked = threading.Event()

    def slow_encode(records: Iterable[RawRecord]) -> bytes:
        # Compressing, no await in it, until the event loop has ticked ten times meanwhile (a
        # fixed 0.3 s counted the ticks, which a loaded machine makes fewer): on the event
        # loop, it waits the 5 s for nothing, and no tick is counted.
        ticked.wait(5)
        return encode(records)

    monkeypatch.setattr("ca4_worker.application.archiver.encode_archive_object", slow_encode)
    archiver = Archiver(
        InMemoryObjectStore(), prefix="raw", max_records=1, max_bytes=MIB, max_age_s=10
    )
    archiver.add([record(b"v")])
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1
            if ticks == 10:
                ticked.set()

    ticking = asyncio.create_task(tick())
    await archiver.flush("gpu-metadata", 0)
    ticking.cancel()
    assert ticks >= 10


async def test_reupload_after_crash_replaces_the_same_object() -> None:
    objects = InMemoryObjectStore()
    records = [record(b"v", offset=offset) for offset in range(10, 15)]
    first_run = Archiver(
        objects, prefix="raw", max_records=100, max_bytes=MIB, max_age_s=1, clock=lambda: 5.0
    )
    first_run.add(records)
    await first_run.flush("gpu-metadata", 0)  # uploaded, then the process dies before commit
    restarted = Archiver(
        objects, prefix="raw", max_records=3, max_bytes=MIB, max_age_s=1, clock=lambda: 9.0
    )
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
    archiver = Archiver(
        objects, prefix="raw", max_records=1, max_bytes=MIB, max_age_s=1, max_backoff_s=0.01
    )
    archiver.add([record(b"v", offset=0)])
    assert await archiver.flush("gpu-metadata", 0) == 1
    assert objects.puts == 1


async def test_a_partition_flushes_at_its_byte_bound_not_at_its_record_count() -> None:
    """A client sending the largest reports the topic takes, at its full rate into one
    partition: counted by records and age only, the archive held 5,000 of them (gigabytes)
    or 30 s of them (420 MiB) before writing an object, and the out-of-memory kill stopped the
    store and projection stages in the same process."""
    objects = InMemoryObjectStore()
    archiver = Archiver(
        objects, prefix="raw", max_records=5000, max_bytes=MIB, max_age_s=30, clock=Clock()
    )
    added = archiver.add(large(offset) for offset in range(25))
    assert archiver.due() == [(TOPIC, 0)]  # 2.4 MiB: not 5,000 records, not 30 s old
    assert added == 25 * LARGE_WEIGHT
    assert await archiver.flush(TOPIC, 0) == 11  # 10 records weigh just under 1 MiB
    assert archiver.due() == [(TOPIC, 0)]  # 14 left, over 1 MiB again
    assert await archiver.flush(TOPIC, 0) == 22
    assert archiver.due() == []
    assert archiver.buffered(TOPIC, 0) == 3
    for data in objects.objects.values():
        weight = sum(map(weighed, decode_archive_object(data)))
        assert MIB <= weight < MIB + LARGE_WEIGHT  # the bound, and the record that reached it


async def test_every_partition_together_holds_at_most_two_objects() -> None:
    """Each partition under its object's bound, all of them together over twice it: the
    heaviest are flushed early, so what the archive holds does not grow with the partitions it
    is assigned."""
    objects = InMemoryObjectStore()
    archiver = Archiver(
        objects, prefix="raw", max_records=5000, max_bytes=MIB, max_age_s=30, clock=Clock()
    )
    for partition, count in enumerate([8, 9, 7, 6]):  # 3 MB, each partition under 1 MiB
        archiver.add(large(offset, partition=partition) for offset in range(count))
    assert archiver.due() == [(TOPIC, 1), (TOPIC, 0)]  # 2.1 MB without the heaviest: still over
    for topic, partition in archiver.due():
        await archiver.flush(topic, partition)
    assert archiver.held_weight == 13 * LARGE_WEIGHT <= 2 * MIB
    assert archiver.room() == 2 * MIB - 13 * LARGE_WEIGHT
    assert archiver.due() == []


@dataclass
class PolledRecord:
    """What the archive consumer reads of an aiokafka ``ConsumerRecord``."""

    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes = b"poison"
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 1_767_614_400_000


class Backlog:
    """Stands in for ``AIOKafkaConsumer`` over a backlog: a poll takes up to ``max_records``
    (aiokafka's ``max_poll_records`` when not given) of what is left, in offset order."""

    def __init__(self, records: list[PolledRecord]) -> None:
        self.records = records
        self.asked: list[int] = []
        self.committed: dict[TopicPartition, int] = {}

    async def getmany(
        self, *, timeout_ms: int, max_records: int = 5000
    ) -> dict[TopicPartition, list[PolledRecord]]:
        self.asked.append(max_records)
        taken, self.records = self.records[:max_records], self.records[max_records:]
        polled: dict[TopicPartition, list[PolledRecord]] = {}
        for polled_record in taken:
            tp = TopicPartition(polled_record.topic, polled_record.partition)
            polled.setdefault(tp, []).append(polled_record)
        return polled

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.update(offsets)


async def test_the_archive_consumer_holds_at_most_two_objects_over_a_backlog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After any lag the archive read its backlog as fast as Kafka gave it, 5,000 records a
    poll, into buffers flushed at 5,000 records a partition: up to 5 GB of large reports, an
    out-of-memory kill, and the same backlog again after the restart. Polls are now sized
    like the stages' (one record first, then the room left at the recent record weight)."""
    archiver = Archiver(
        InMemoryObjectStore(), prefix="raw", max_records=5000, max_bytes=MIB, max_age_s=30
    )
    subject = ArchiveConsumer(
        archiver, bootstrap_servers="127.0.0.1:1", topic=TOPIC, group_id="test"
    )
    await subject._consumer.stop()  # never started: only marks it closed
    value = large(0).value or b""
    backlog = Backlog(
        [PolledRecord(TOPIC, p, offset, value) for offset in range(40) for p in range(3)]
    )
    subject._consumer = backlog
    held_after_polls: list[int] = []
    add = archiver.add

    def add_and_weigh(records: list[RawRecord]) -> int:
        weight = add(records)
        held_after_polls.append(archiver.held_weight)
        return weight

    monkeypatch.setattr(archiver, "add", add_and_weigh)
    while backlog.records:
        await subject._poll_and_flush()
        assert archiver.held_weight <= 2 * MIB
    assert backlog.asked[0] == 1
    assert max(held_after_polls) <= 2 * MIB + LARGE_WEIGHT
    for partition in range(3):  # nothing skipped: committed, or still held
        tp = TopicPartition(TOPIC, partition)
        assert backlog.committed[tp] + archiver.buffered(TOPIC, partition) == 40


def heavy_report(reason: str, label: str = "tests") -> bytes:
    """A report as the processor publishes it, 64 GPUs with 30 throttle reasons each."""
    reasons = [reason + chr(ord("A") + k) for k in range(30)]
    gpus = [
        {"uuid": f"GPU-{g}", "index": g, "name": "x", "throttle_reasons": reasons}
        for g in range(64)
    ]
    body = event_body(gpus=gpus, labels={"note": label})
    return json.dumps(body, ensure_ascii=False).encode()


@pytest.mark.parametrize(
    ("value", "count"),
    [(heavy_report(EMOJI * 127), 8), (heavy_report("a" * 127, label=EMOJI), 32)],
    ids=["emoji-1MB", "ascii-with-one-emoji-250kB"],
)
def test_encoding_holds_little_besides_the_records(value: bytes, count: int) -> None:
    """Encoding built the object's whole text, then its UTF-8 copy, then compressed that: at
    its peak 2.1 times the records' bytes for reports full of emoji, 8.1 times for ASCII
    reports with one emoji (which makes every character of the text four bytes). Now the
    lines are compressed as they are written, a chunk of a record at a time."""
    records = [record(value[:-1] + b"}", offset=offset) for offset in range(count)]
    held = sum(len(each.value or b"") for each in records)
    tracemalloc.start()
    try:
        data = encode_archive_object(records)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.25 * held, f"{peak / held:.2f} times the records' bytes"
    assert list(decode_archive_object(data)) == records


def reference_line(record: RawRecord) -> str:
    """A line as the archive wrote it before it streamed: ``json.dumps`` of the whole line."""
    line: dict[str, object] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
        "key": record.key.decode("utf-8", "backslashreplace") if record.key else None,
        "headers": [[name, base64.b64encode(value).decode()] for name, value in record.headers],
    }
    if record.value is None:
        line["value"] = None
    else:
        try:
            line["value"] = record.value.decode("utf-8")
        except UnicodeDecodeError:
            line["value_b64"] = base64.b64encode(record.value).decode()
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"


def test_objects_are_the_bytes_json_dumps_and_gzip_compress_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Streamed in chunks (7 bytes here, so chunks cut multi-byte characters, invalid bytes
    and escapes), an object is byte for byte what compressing the whole text made: replays
    read the same lines, and an object re-archived after a crash by a newer worker is the
    same object."""
    monkeypatch.setattr(archive, "TEXT_CHUNK_BYTES", 7)
    rng = random.Random(7)
    pieces = [bytes([b]) for b in range(256)]
    pieces += [piece.encode() for piece in ("é", EMOJI, "\u2028", '"', "\\", "\n", "\x00")]

    def some_bytes(most: int) -> bytes:
        return b"".join(rng.choice(pieces) for _ in range(rng.randint(0, most)))

    for _ in range(300):
        records = [
            RawRecord(
                TOPIC,
                rng.randint(0, 3),
                rng.randint(0, 10**12),
                rng.choice([None, b"", some_bytes(60), (EMOJI + 'x\u2028"').encode() * 9]),
                rng.choice([None, b"", some_bytes(30), b"session-a"]),
                tuple((rng.choice(["a", "é", 'x"y']), some_bytes(5)) for _ in range(2)),
                rng.randint(0, 2**41),
            )
            for _ in range(rng.randint(0, 4))
        ]
        text = "".join(map(reference_line, records)).encode()
        assert encode_archive_object(records) == gzip.compress(text, COMPRESS_LEVEL, mtime=0)
