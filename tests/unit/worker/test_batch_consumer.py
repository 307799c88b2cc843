"""How the worker's consumer sizes its polls, on a fake aiokafka consumer: the byte bound must
hold from the first poll, when records grow at once, and after a rebalance; and a batch holds
every partition's records evenly, not one partition's first."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from ca4_schemas import OBJECT_WEIGHT
from ca4_worker.messaging.batch_consumer import BatchConsumer

TOPIC = "ca4.gpu.metadata"
KIB = 1024
Fetched = tuple[int, int] | tuple[int, int, int]


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    serialized_key_size: int
    serialized_value_size: int
    objects: int = 0

    @property
    def value(self) -> bytes:
        """Bytes of the record's size, ``objects`` of them JSON objects (``{}``)."""
        return b"{}" * self.objects + bytes(self.serialized_value_size - 2 * self.objects)


class ScriptedFetches:
    """Stands in for ``AIOKafkaConsumer``'s ``getmany`` and ``assignment`` as aiokafka behaves:
    fetched records wait per partition until polled; a poll drains the partitions asked for
    (every one when none is named) one after the other, in the order they were fetched, up to
    ``max_records``; and a poll that finds nothing and may wait gets the next scripted fetch.
    Remembers the ``max_records`` of each poll that returned records."""

    def __init__(
        self,
        fetches: Sequence[dict[int, Fetched | KafkaError]],
        assigned: Sequence[int] = (0, 1, 2),
    ) -> None:
        # per fetch: partition -> (records fetched, bytes per record[, JSON objects in each]),
        # or the partition's error,
        # which a poll raises once, when it reaches it with nothing drained before it
        self._fetches = list(fetches)
        self._assigned = {TopicPartition(TOPIC, partition) for partition in assigned}
        self._fetched: dict[int, list[FakeRecord] | KafkaError] = {}
        self._next_offset: dict[int, int] = {}
        self.asked: list[int] = []
        self.idle = asyncio.Event()

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[FakeRecord]]:
        wanted = {tp.partition for tp in partitions or self._assigned}
        if timeout_ms and not any(self._fetched.get(partition) for partition in wanted):
            if not self._fetches:
                self.idle.set()
                await asyncio.Event().wait()
            self._fetch(self._fetches.pop(0))
        polled: dict[TopicPartition, list[FakeRecord]] = {}
        left = max_records
        for partition, records in list(self._fetched.items()):
            if partition in wanted and isinstance(records, KafkaError):
                if polled:
                    break
                del self._fetched[partition]
                raise records
            if partition in wanted and records and left:
                polled[TopicPartition(TOPIC, partition)] = records[:left]
                del records[:left]
                left = max_records - sum(map(len, polled.values()))
        if polled:
            self.asked.append(max_records)
        return polled

    def _fetch(self, fetch: dict[int, Fetched | KafkaError]) -> None:
        for partition, fetched in fetch.items():
            if isinstance(fetched, KafkaError):
                self._fetched[partition] = fetched
                continue
            count, size, objects = (*fetched, 0)[:3]
            start = self._next_offset.get(partition, 0)
            self._next_offset[partition] = start + count
            records = self._fetched.setdefault(partition, [])
            assert isinstance(records, list)
            records.extend(
                FakeRecord(TOPIC, partition, start + index, 36, size - 36, objects)
                for index in range(count)
            )


async def pumped(consumer: BatchConsumer, polls: ScriptedFetches) -> None:
    """Run the consumer's poll loop until the script is spent, or for 0.2 s (a full buffer
    stops the loop before)."""
    if not isinstance(consumer.consumer, ScriptedFetches):
        await consumer.consumer.stop()  # never started: only marks it closed
    consumer.consumer = polls
    pump = asyncio.create_task(consumer._pump())
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(polls.idle.wait(), 0.2)
    finally:
        pump.cancel()


def consumer(max_bytes: int = 1024 * KIB, max_records: int = 10_000) -> BatchConsumer:
    async def handler(batch: Sequence[object]) -> None:
        return None

    return BatchConsumer(
        name="test",
        bootstrap_servers="127.0.0.1:1",
        topic=TOPIC,
        group_id="test",
        handler=handler,
        max_records=max_records,
        max_bytes=max_bytes,
    )


async def test_the_first_poll_takes_one_record_and_the_next_are_sized_by_it() -> None:
    """Before any record is seen its size is unknown: a first poll of 10,000 records from a
    topic of 100 kB events would buffer a gigabyte, decoded ten."""
    subject = consumer()
    polls = ScriptedFetches([{0: (30, 100 * KIB), 1: (30, 100 * KIB), 2: (30, 100 * KIB)}] * 3)
    await pumped(subject, polls)
    assert polls.asked[0] == 1
    assert subject.buffered == 11  # ten fill 1000 of 1024 KiB; a poll takes at least one
    assert subject._buffered_weight <= 1024 * KIB + 100 * KIB


async def test_records_that_grow_at_once_are_taken_at_their_new_size() -> None:
    """A client that sends small events, then the largest the topic takes: the poll after the
    first large ones must be sized by them, not by a slow mean of the small ones."""
    subject = consumer(max_bytes=8 * 1024 * KIB)
    polls = ScriptedFetches(
        [{0: (1, 1 * KIB)}, {0: (1, 1000 * KIB)}, {0: (100, 1000 * KIB)}], assigned=[0]
    )
    await pumped(subject, polls)
    assert polls.asked[:3] == [1, 8191, 7]
    assert subject._buffered_weight <= 8 * 1024 * KIB + 1000 * KIB


async def test_records_weigh_what_they_decode_to() -> None:
    """A report that leaves out its optional fields is small on the wire and large decoded:
    counted by their bytes, a 1 MiB buffer of reports with 256 processes each held about 38 MiB
    once decoded. Each JSON object in a record weighs in."""
    subject = consumer(max_bytes=1024 * KIB)
    polls = ScriptedFetches([{0: (1000, 4 * KIB, 256)}], assigned=[0])
    await pumped(subject, polls)
    weight = 4 * KIB + 256 * OBJECT_WEIGHT
    assert subject._buffered_weight == subject.buffered * weight
    assert subject.buffered <= 1024 * KIB // weight + 1  # 43, where counting bytes took 256


async def test_smaller_records_bring_the_size_down_slowly() -> None:
    subject = consumer(max_bytes=8 * 1024 * KIB)
    polls = ScriptedFetches([{0: (1, 100 * KIB)}, {1: (1, 1 * KIB)}, {1: (1, 1 * KIB)}])
    await pumped(subject, polls)
    assert subject._poll_size.record_weight is not None
    assert subject._poll_size.record_weight > 50 * KIB  # not at 1 KiB at once: 100 times more


async def test_a_rebalance_that_leaves_the_buffer_full_does_not_let_the_pump_poll() -> None:
    """Dropping a revoked partition's records makes room only if it brings the buffer under its
    bounds; otherwise the pump would poll past them until the next batch is taken."""
    subject = consumer(max_bytes=1024 * KIB)
    await pumped(subject, ScriptedFetches([{0: (1, 100 * KIB)}, {1: (3, 600 * KIB)}]))
    assert subject._buffered_weight == 1900 * KIB
    assert not subject._room.is_set()
    subject._drop([TopicPartition(TOPIC, 0)])  # 1.8 MB left: still over
    assert not subject._room.is_set()
    subject._drop([TopicPartition(TOPIC, 1)])
    assert subject._room.is_set()
    assert subject.buffered == 0


def per_partition(subject: BatchConsumer) -> dict[int, int]:
    return {tp.partition: len(records) for tp, records in subject._buffer.items()}


async def test_a_batch_takes_an_even_share_of_every_partition() -> None:
    """Over a backlog aiokafka has records fetched for every partition; drained in turn, a
    batch bounded in records or bytes held the first partition's only (the bench's first store
    batch: 10,885 records of one partition, 270 of another, none of the third)."""
    subject = consumer(max_records=3000, max_bytes=1024 * 1024 * KIB)
    fetched = dict.fromkeys(range(3), (10_000, 1 * KIB))
    await pumped(subject, ScriptedFetches([fetched]))
    assert subject.buffered == 3000
    assert all(abs(count - 1000) <= 3 for count in per_partition(subject).values())
    assert len(per_partition(subject)) == 3


async def test_what_one_partition_lacks_goes_to_the_others() -> None:
    subject = consumer(max_records=3000, max_bytes=1024 * 1024 * KIB)
    fetched = {0: (10, 1 * KIB), 1: (10_000, 1 * KIB), 2: (10_000, 1 * KIB)}
    await pumped(subject, ScriptedFetches([fetched]))
    counts = per_partition(subject)
    assert subject.buffered == 3000
    assert counts[0] == 10
    assert abs(counts[1] - counts[2]) <= 3


async def test_the_share_is_of_the_bytes_bound_too() -> None:
    subject = consumer(max_records=100_000, max_bytes=3 * 1024 * KIB)
    fetched = dict.fromkeys(range(3), (10_000, 1 * KIB))
    await pumped(subject, ScriptedFetches([fetched]))
    assert subject._buffered_weight <= 3 * 1024 * KIB + 1 * KIB
    assert all(abs(count - 1024) <= 3 for count in per_partition(subject).values())


async def test_a_partition_no_longer_assigned_is_not_polled() -> None:
    subject = consumer(max_records=3000, max_bytes=1024 * 1024 * KIB)
    fetched = dict.fromkeys(range(3), (10_000, 1 * KIB))
    await pumped(subject, ScriptedFetches([fetched], assigned=[1, 2]))
    assert set(per_partition(subject)) == {1, 2}
    assert subject.buffered == 3000


async def test_records_polled_before_a_partitions_error_are_kept() -> None:
    """aiokafka raises a partition's fetch error (authorisation, a record too large) on a poll
    that reaches it with nothing drained. Polled one partition at a time, the partitions before
    it have already moved on: their records must reach the batch, or the next batch's commit
    would pass over them."""
    subject = consumer(max_records=3000, max_bytes=1024 * 1024 * KIB)
    fetched: dict[int, tuple[int, int] | KafkaError] = {
        0: (10, 1 * KIB),
        1: TopicAuthorizationFailedError(),
        2: (10, 1 * KIB),
    }
    await pumped(subject, ScriptedFetches([fetched, {0: (5, 1 * KIB), 2: (5, 1 * KIB)}]))
    offsets = {
        tp.partition: [record.offset for record in records]
        for tp, records in subject._buffer.items()
    }
    assert offsets == {0: list(range(15)), 2: list(range(15))}


class BlackHoleCommits(ScriptedFetches):
    """Fetches as scripted; a commit never returns, as aiokafka's does not while the broker
    accepts connections and never answers (it looks the coordinator up again and again)."""

    def __init__(self, fetches: Sequence[dict[int, Fetched | KafkaError]]) -> None:
        super().__init__(fetches)
        self.committing = asyncio.Event()
        self.stopped = False

    async def commit(self, offsets: object) -> None:
        self.committing.set()
        await asyncio.Event().wait()

    async def stop(self) -> None:
        self.stopped = True


async def test_stopping_does_not_wait_for_good_on_a_commit_the_broker_never_answers() -> None:
    """SIGTERM while Kafka is a black hole: the worker must still leave within its grace
    period. The batch's handling is bounded by ``wait_s``; the commit in flight was not, so
    ``stop`` waited for good and never closed the consumer."""
    subject = consumer()
    await subject.consumer.stop()  # never started: only marks it closed
    fake = BlackHoleCommits([{0: (3, 1 * KIB)}])
    subject.consumer = fake  # type: ignore[assignment]
    subject._tasks = [asyncio.create_task(subject._pump()), asyncio.create_task(subject._work())]
    await asyncio.wait_for(fake.committing.wait(), 5)
    started = time.monotonic()
    # Not asyncio.timeout: stop() swallowed the cancellation, so a timeout never surfaced.
    stopping = asyncio.create_task(subject.stop(wait_s=0.5))
    done, _ = await asyncio.wait([stopping], timeout=5)
    assert done, "stop() still waiting for the commit after 5 s"
    assert time.monotonic() - started < 2
    assert fake.stopped
