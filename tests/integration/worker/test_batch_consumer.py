"""The worker's consumer loop against the real Kafka: fresh batches, exact commits, rewinds,
rebalances, and the store watermark the projection stage waits on."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from ca4_schemas import record_weight
from ca4_worker.core.config import Settings
from ca4_worker.messaging.batch_consumer import BatchConsumer
from ca4_worker.messaging.store_progress import StoreWatermark

from tests.integration.worker.conftest import PARTITIONS
from tests.integration.worker.support import produce, wait_for


class Recorder:
    """A handler that records each batch's (partition, offset) pairs; it can be held (each
    batch waits for ``release``) or made to fail once."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.fail_next = False

    async def __call__(self, batch: Sequence[Any]) -> None:
        self.batches.append([(record.partition, record.offset) for record in batch])
        await self.hold.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("handler bug")

    def handled(self) -> list[tuple[int, int]]:
        return [position for batch in self.batches for position in batch]


@contextlib.asynccontextmanager
async def consuming(
    settings: Settings, handler: Recorder, group: str, **options: Any
) -> AsyncIterator[BatchConsumer]:
    consumer = BatchConsumer(
        name="test",
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=settings.kafka_topic,
        group_id=group,
        handler=handler,
        max_records=options.pop("max_records", 10_000),
        max_bytes=options.pop("max_bytes", 64 * 1024 * 1024),
        **options,
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def committed(settings: Settings, group: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in found.items() if meta.offset >= 0}


def bodies(count: int, *, session: str = "s") -> list[dict[str, Any]]:
    return [{"session_id": f"{session}-{index % 3}", "n": index} for index in range(count)]


async def test_records_that_arrive_during_a_batch_are_all_in_the_next_one(
    worker_settings: Settings,
) -> None:
    """A loop that polls only between batches hands over, next, just the few records fetched
    right after its last poll; the rest wait a whole further cycle on the broker."""
    handler = Recorder()
    group = f"{worker_settings.kafka_topic}-fresh"
    async with consuming(worker_settings, handler, group) as consumer:
        handler.hold.clear()
        await produce(worker_settings.kafka_bootstrap_servers, worker_settings.kafka_topic, [
            {"session_id": "first"}
        ])  # fmt: skip
        await wait_for(
            lambda: _true(len(handler.batches) == 1), timeout_s=60, what="the first batch"
        )
        for round_ in range(10):  # ten produce requests, each landing while the batch runs
            await produce(
                worker_settings.kafka_bootstrap_servers,
                worker_settings.kafka_topic,
                bodies(20, session=f"r{round_}"),
            )
            await asyncio.sleep(0.05)
        await wait_for(
            lambda: _true(consumer.buffered == 200), timeout_s=30, what="200 records polled"
        )
        handler.hold.set()
        await wait_for(
            lambda: _true(len(handler.batches) == 2), timeout_s=30, what="the second batch"
        )
    assert len(handler.batches[1]) == 200


async def test_large_records_make_small_batches_and_the_buffer_stays_within_its_bytes(
    worker_settings: Settings,
) -> None:
    """A client that sends the largest events the topic takes must not grow the worker's memory
    a thousandfold: every batch, and what is buffered for the next, stay near ``max_bytes``,
    the first included (a poll takes records from every partition, and its size is known only
    from records already seen)."""
    handler = Recorder()
    group = f"{worker_settings.kafka_topic}-bytes"
    filler = "x" * 100_000
    sessions = sessions_on_every_partition(PARTITIONS)
    sent = [
        {"session_id": sessions[index % PARTITIONS], "n": index, "filler": filler}
        for index in range(60)
    ]
    for start in range(0, 60, 10):
        await produce(
            worker_settings.kafka_bootstrap_servers,
            worker_settings.kafka_topic,
            sent[start : start + 10],
        )
    record_size = len(json.dumps(sent[0]))
    max_bytes = 1024 * 1024
    handler.hold.clear()
    most_buffered = 0
    async with consuming(worker_settings, handler, group, max_bytes=max_bytes) as consumer:
        await wait_for(
            lambda: _true(len(handler.batches) == 1), timeout_s=60, what="the first batch"
        )
        for _ in range(20):  # the pump runs on while the first batch is held
            await asyncio.sleep(0.1)
            most_buffered = max(most_buffered, consumer.buffered)
        handler.hold.set()
        await wait_for(
            lambda: _true(len(handler.handled()) == 60), timeout_s=60, what="all 60 handled"
        )
    assert len(handler.handled()) == len(set(handler.handled())) == 60  # each once
    assert {partition for partition, _ in handler.handled()} == set(range(PARTITIONS))
    assert most_buffered * record_size <= max_bytes + 2 * record_size
    sizes = [len(batch) * record_size for batch in handler.batches]
    assert max(sizes) <= max_bytes + 2 * record_size, sizes
    assert sum((await committed(worker_settings, group)).values()) == 60


async def test_records_of_many_small_objects_are_bounded_by_what_they_decode_to(
    worker_settings: Settings,
) -> None:
    """Reports that give only the required fields of many processes are small on the wire and
    large decoded (each object becomes a model with every field): batches are bounded by the
    records' weight, not their bytes, which let a 1 MiB batch of them hold about 40 MiB."""
    handler = Recorder()
    group = f"{worker_settings.kafka_topic}-weight"
    sessions = sessions_on_every_partition(PARTITIONS)
    processes = [{"pid": pid} for pid in range(1, 257)]
    sent = [
        {"session_id": sessions[index % PARTITIONS], "n": index, "processes": processes}
        for index in range(300)
    ]
    await produce(worker_settings.kafka_bootstrap_servers, worker_settings.kafka_topic, sent)
    value = json.dumps(sent[0]).encode()
    weight = record_weight(value)
    max_bytes = 256 * 1024
    async with consuming(worker_settings, handler, group, max_bytes=max_bytes):
        await wait_for(
            lambda: _true(len(handler.handled()) == 300), timeout_s=60, what="all 300 handled"
        )
    largest = max(len(batch) for batch in handler.batches)
    assert largest < max_bytes // len(value) // 4, largest  # counted by bytes: up to 76
    assert largest * weight <= max_bytes + 2 * weight, (largest, weight)
    assert weight > 6 * len(value)  # 256 objects of a dozen bytes each
    assert sum((await committed(worker_settings, group)).values()) == 300


async def test_a_backlog_is_taken_from_every_partition_evenly(worker_settings: Settings) -> None:
    """Over a backlog every partition has records fetched at once; taken one partition after
    the other, a batch bounded below the backlog held one partition's, and the projection
    stage, whose rounds span them all, waited for the store's later batches."""
    handler = Recorder()
    group = f"{worker_settings.kafka_topic}-even"
    sessions = sessions_on_every_partition(PARTITIONS)
    sent = [{"session_id": sessions[index % PARTITIONS], "n": index} for index in range(3000)]
    await produce(worker_settings.kafka_bootstrap_servers, worker_settings.kafka_topic, sent)
    handler.hold.clear()
    async with consuming(worker_settings, handler, group, max_records=600) as consumer:
        await wait_for(
            lambda: _true(len(handler.batches) == 1 and consumer.buffered == 600),
            timeout_s=60,
            what="the first batch held and the next one polled",
        )
        handler.hold.set()
        await wait_for(
            lambda: _true(len(handler.batches) >= 2), timeout_s=30, what="the second batch"
        )
    second = handler.batches[1]
    per_partition = {p: sum(1 for partition, _ in second if partition == p) for p in range(3)}
    assert len(second) == 600
    assert all(150 <= count <= 250 for count in per_partition.values()), per_partition


def sessions_on_every_partition(partitions: int) -> list[str]:
    """One session id per partition, as the producer's partitioner places their keys."""
    partitioner = DefaultPartitioner()
    found: dict[int, str] = {}
    for index in range(1000):
        session = f"big-{index}"
        all_ = list(range(partitions))
        found.setdefault(partitioner(session.encode(), all_, all_), session)
        if len(found) == partitions:
            return [found[partition] for partition in range(partitions)]
    raise AssertionError("no session id found for every partition")


async def test_a_failed_batch_is_handled_again_and_commits_stay_exact(
    worker_settings: Settings,
) -> None:
    handler = Recorder()
    handler.fail_next = True
    group = f"{worker_settings.kafka_topic}-rewind"
    await produce(worker_settings.kafka_bootstrap_servers, worker_settings.kafka_topic, bodies(90))
    async with consuming(worker_settings, handler, group):
        await wait_for(
            lambda: _true(len(set(handler.handled())) == 90 and len(handler.batches) >= 2),
            timeout_s=60,
            what="every record handled after the failure",
        )
        failed = set(handler.batches[0])
        # Everything in the failed batch came again, and nothing else came twice.
        again = [position for batch in handler.batches[1:] for position in batch]
        assert failed <= set(again)
        assert len(again) == len(set(again))

        async def all_committed() -> bool:
            return sum((await committed(worker_settings, group)).values()) == 90

        await wait_for(all_committed, timeout_s=30, what="offsets committed")


async def test_a_rebalance_during_a_batch_loses_nothing(worker_settings: Settings) -> None:
    """The first member holds a batch when a second joins: every record is handled, and the
    group ends up committed to the end (a batch whose commit the rebalance refused is handled
    again by the new owner, which the stages absorb)."""
    group = f"{worker_settings.kafka_topic}-rebalance"
    first, second = Recorder(), Recorder()
    await produce(worker_settings.kafka_bootstrap_servers, worker_settings.kafka_topic, bodies(60))
    async with consuming(worker_settings, first, group):
        first.hold.clear()
        await wait_for(lambda: _true(bool(first.batches)), timeout_s=60, what="a held batch")
        async with consuming(worker_settings, second, group):
            await asyncio.sleep(1.0)  # the second member is joining: the rebalance waits
            first.hold.set()

            async def all_handled() -> bool:
                return len(set(first.handled()) | set(second.handled())) == 60

            await wait_for(all_handled, timeout_s=60, what="all 60 records handled")

            async def all_committed() -> bool:
                return sum((await committed(worker_settings, group)).values()) == 60

            await wait_for(all_committed, timeout_s=30, what="offsets committed to the end")


async def test_the_watermark_follows_the_store_groups_commits_in_kafka(
    worker_settings: Settings,
) -> None:
    """A partition another worker stores is known from the store group's commits."""
    store_group = f"{worker_settings.kafka_topic}-other-store"
    watermark = StoreWatermark(
        store_group=store_group,
        bootstrap_servers=worker_settings.kafka_bootstrap_servers,
        poll_s=0.2,
    )
    await watermark.start()
    await produce(worker_settings.kafka_bootstrap_servers, worker_settings.kafka_topic, bodies(30))
    partition = TopicPartition(worker_settings.kafka_topic, 0)
    waiting = asyncio.create_task(
        watermark.wait_until_stored({(worker_settings.kafka_topic, 0): 5})
    )
    try:
        await asyncio.sleep(1.0)
        assert not waiting.done()  # nothing committed by the store group yet
        other_worker = AIOKafkaConsumer(
            bootstrap_servers=worker_settings.kafka_bootstrap_servers,
            group_id=store_group,
            enable_auto_commit=False,
        )
        await other_worker.start()
        try:
            other_worker.assign([partition])
            await other_worker.commit({partition: 5})
        finally:
            await other_worker.stop()
        await asyncio.wait_for(waiting, 10)
    finally:
        waiting.cancel()
        await watermark.stop()


async def _true(value: bool) -> bool:
    return value
