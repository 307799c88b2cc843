"""How the worker's consumer sizes its polls, on a fake aiokafka consumer: the byte bound must
hold from the first poll, when records grow at once, and after a rebalance."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import TopicPartition
from ca4_worker.messaging.batch_consumer import BatchConsumer

TOPIC = "ca4.gpu.metadata"
KIB = 1024


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    serialized_key_size: int
    serialized_value_size: int


class ScriptedPolls:
    """Stands in for ``AIOKafkaConsumer.getmany``: returns the scripted polls in turn, each
    cut to the ``max_records`` asked for, and remembers what each poll asked for."""

    def __init__(self, polls: Sequence[dict[int, tuple[int, int]]]) -> None:
        # per poll: partition -> (records available, bytes per record)
        self._polls = list(polls)
        self._next_offset: dict[int, int] = {}
        self.asked: list[int] = []
        self.idle = asyncio.Event()

    async def getmany(
        self, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[FakeRecord]]:
        if not self._polls:
            self.idle.set()
            await asyncio.Event().wait()
        self.asked.append(max_records)
        fetched: dict[TopicPartition, list[FakeRecord]] = {}
        for partition, (available, size) in self._polls.pop(0).items():
            take = min(available, max_records - sum(map(len, fetched.values())))
            start = self._next_offset.get(partition, 0)
            self._next_offset[partition] = start + take
            if take:
                fetched[TopicPartition(TOPIC, partition)] = [
                    FakeRecord(TOPIC, partition, start + index, 36, size - 36)
                    for index in range(take)
                ]
        return fetched


async def pumped(consumer: BatchConsumer, polls: ScriptedPolls) -> None:
    """Run the consumer's poll loop until the script is spent, or for 0.2 s (a full buffer
    stops the loop before)."""
    if not isinstance(consumer.consumer, ScriptedPolls):
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
    polls = ScriptedPolls([{0: (30, 100 * KIB), 1: (30, 100 * KIB), 2: (30, 100 * KIB)}] * 3)
    await pumped(subject, polls)
    assert polls.asked[0] == 1
    assert polls.asked[1] == 9  # 1 MiB less the 100 kB buffered, at 100 kB a record
    assert subject.buffered == 11  # ten fill 1000 of 1024 KiB; a poll takes at least one
    assert subject._buffered_bytes <= 1024 * KIB + 100 * KIB


async def test_records_that_grow_at_once_are_taken_at_their_new_size() -> None:
    """A client that sends small events, then the largest the topic takes: the poll after the
    first large ones must be sized by them, not by a slow mean of the small ones."""
    subject = consumer(max_bytes=8 * 1024 * KIB)
    polls = ScriptedPolls([{0: (1, 1 * KIB)}, {0: (1, 1000 * KIB)}, {0: (100, 1000 * KIB)}])
    await pumped(subject, polls)
    assert polls.asked == [1, 8191, 7]
    assert subject._buffered_bytes <= 8 * 1024 * KIB + 1000 * KIB


async def test_smaller_records_bring_the_size_down_slowly() -> None:
    subject = consumer(max_bytes=8 * 1024 * KIB)
    polls = ScriptedPolls([{0: (1, 100 * KIB)}, {1: (1, 1 * KIB)}, {1: (1, 1 * KIB)}])
    await pumped(subject, polls)
    assert polls.asked[2] < polls.asked[1] * 2  # not 100 times more at once


async def test_a_rebalance_that_leaves_the_buffer_full_does_not_let_the_pump_poll() -> None:
    """Dropping a revoked partition's records makes room only if it brings the buffer under its
    bounds; otherwise the pump would poll past them until the next batch is taken."""
    subject = consumer(max_bytes=1024 * KIB)
    await pumped(subject, ScriptedPolls([{0: (1, 100 * KIB)}, {1: (9, 200 * KIB)}]))
    assert subject._buffered_bytes == 1900 * KIB
    assert not subject._room.is_set()
    subject._drop([TopicPartition(TOPIC, 0)])  # 1.8 MB left: still over
    assert not subject._room.is_set()
    subject._drop([TopicPartition(TOPIC, 1)])
    assert subject._room.is_set()
    assert subject.buffered == 0
