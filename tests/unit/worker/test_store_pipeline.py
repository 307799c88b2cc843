"""Batch N is projected while N+1 is stored, and offsets are committed only after projection."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from aiokafka import TopicPartition
from ca4_worker.application.ingest import IngestService
from ca4_worker.domain.records import PositionedEvent, RawRecord
from ca4_worker.messaging.store_pipeline import (
    Offsets,
    ProjectionFailedError,
    StorePipeline,
)
from ca4_worker.persistence.memory import (
    InMemoryDeadLetters,
    InMemoryEventStore,
    InMemoryProjections,
)

from tests.unit.worker.factories import event_body, record

TOPIC = "gpu-metadata"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


class RecordingConsumer:
    """The consumer calls the pipeline makes, with a settable assignment."""

    def __init__(self, owned: set[TopicPartition] | None = None) -> None:
        self.owned = owned if owned is not None else {P0, P1}
        self.commits: list[Offsets] = []
        self.seeks: list[tuple[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.owned)

    async def commit(self, offsets: Offsets) -> None:
        self.commits.append(dict(offsets))

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))


class GatedProjections(InMemoryProjections):
    """Projections that wait for ``gate`` and can fail a number of times, like a bug would."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures_left = 0
        self.applied_batches = 0

    async def apply(self, events: Sequence[PositionedEvent]) -> None:
        await self.gate.wait()
        if self.failures_left > 0:
            self.failures_left -= 1
            raise RuntimeError("projection bug")
        await super().apply(events)
        self.applied_batches += 1


class FailingStore(InMemoryEventStore):
    def __init__(self) -> None:
        super().__init__()
        self.failures_left = 0
        self.appended = asyncio.Event()

    async def append(self, events: Sequence[PositionedEvent]):  # type: ignore[no-untyped-def]
        if self.failures_left > 0:
            self.failures_left -= 1
            raise RuntimeError("store bug")
        outcome = await super().append(events)
        self.appended.set()
        return outcome


def batch(first_offset: int, count: int, *, partition: int = 0) -> list[RawRecord]:
    return [
        record(event_body(session_id="s1"), partition=partition, offset=first_offset + index)
        for index in range(count)
    ]


@pytest.fixture
def projections() -> GatedProjections:
    return GatedProjections()


@pytest.fixture
def store() -> FailingStore:
    return FailingStore()


@pytest.fixture
def pipeline(store: FailingStore, projections: GatedProjections) -> StorePipeline:
    ingest = IngestService(
        store=store,
        projections=projections,
        dead_letters=InMemoryDeadLetters(),
        max_backoff_s=0.01,
    )
    return StorePipeline(ingest)


async def sample_count(projections: InMemoryProjections) -> int:
    session = await projections.session("s1")
    return 0 if session is None else session.sample_count


async def test_offsets_are_committed_only_once_the_batch_is_projected(
    pipeline: StorePipeline, projections: GatedProjections, store: FailingStore
) -> None:
    consumer = RecordingConsumer()
    projections.gate.clear()

    await pipeline.handle(batch(0, 5) + batch(0, 2, partition=1), consumer)

    assert await store.count() == 7  # stored before the handler returned
    assert consumer.commits == []
    projections.gate.set()
    await pipeline.close()
    assert consumer.commits == [{P0: 5, P1: 2}]
    assert await sample_count(projections) == 7


async def test_the_next_batch_is_stored_while_the_previous_one_projects(
    pipeline: StorePipeline, projections: GatedProjections, store: FailingStore
) -> None:
    consumer = RecordingConsumer()
    projections.gate.clear()
    await pipeline.handle(batch(0, 5), consumer)

    store.appended.clear()
    second = asyncio.create_task(pipeline.handle(batch(5, 5), consumer))
    await asyncio.wait_for(store.appended.wait(), 5)

    assert await store.count() == 10
    assert consumer.commits == []
    assert not second.done()  # it waits for the first projection before starting its own
    projections.gate.set()
    await second
    await pipeline.close()
    assert consumer.commits == [{P0: 5}, {P0: 10}]
    assert await sample_count(projections) == 10


async def test_a_failed_projection_rewinds_and_nothing_after_it_is_projected_or_committed(
    pipeline: StorePipeline, projections: GatedProjections
) -> None:
    consumer = RecordingConsumer()
    projections.failures_left = 1
    first, second = batch(0, 5), batch(5, 5)

    await pipeline.handle(first, consumer)
    with pytest.raises(ProjectionFailedError):
        await pipeline.handle(second, consumer)

    assert consumer.commits == []
    assert consumer.seeks[-1] == (P0, 0)  # the oldest uncommitted offset, not the second batch's
    assert await sample_count(projections) == 0

    # Kafka delivers both again: stored already, projected now, exactly once.
    await pipeline.handle(first, consumer)
    await pipeline.handle(second, consumer)
    await pipeline.close()
    assert consumer.commits == [{P0: 5}, {P0: 10}]
    assert await sample_count(projections) == 10


async def test_a_failed_store_rewinds_to_its_own_start_after_the_previous_batch_commits(
    pipeline: StorePipeline, projections: GatedProjections, store: FailingStore
) -> None:
    consumer = RecordingConsumer()
    await pipeline.handle(batch(0, 5), consumer)
    store.failures_left = 1

    with pytest.raises(RuntimeError, match="store bug"):
        await pipeline.handle(batch(5, 5), consumer)

    assert consumer.commits == [{P0: 5}]
    assert consumer.seeks == [(P0, 5)]
    assert await sample_count(projections) == 5


async def test_revocation_waits_for_the_pending_projection_and_its_commit(
    pipeline: StorePipeline, projections: GatedProjections
) -> None:
    consumer = RecordingConsumer()
    projections.gate.clear()
    await pipeline.handle(batch(0, 5), consumer)

    revoking = asyncio.create_task(pipeline.rebalance_listener().on_partitions_revoked({P0}))
    await asyncio.sleep(0.05)
    assert not revoking.done()
    projections.gate.set()
    await revoking

    assert consumer.commits == [{P0: 5}]


async def test_partitions_revoked_meanwhile_are_left_to_their_next_owner(
    pipeline: StorePipeline, projections: GatedProjections
) -> None:
    consumer = RecordingConsumer(owned={P1})

    await pipeline.handle(batch(0, 5) + batch(0, 3, partition=1), consumer)
    await pipeline.close()

    assert consumer.commits == [{P1: 3}]
    assert await sample_count(projections) == 8  # projected anyway; a redelivery adds nothing


async def test_after_close_each_batch_is_committed_before_the_handler_returns(
    pipeline: StorePipeline,
) -> None:
    consumer = RecordingConsumer()
    await pipeline.close()

    await pipeline.handle(batch(0, 5), consumer)

    assert consumer.commits == [{P0: 5}]


async def test_a_failure_seen_by_close_still_stops_the_next_batch(
    pipeline: StorePipeline, projections: GatedProjections
) -> None:
    consumer = RecordingConsumer()
    projections.failures_left = 1
    await pipeline.handle(batch(0, 5), consumer)
    await pipeline.close()  # shutdown begins and notices the failure first

    with pytest.raises(ProjectionFailedError):
        await pipeline.handle(batch(5, 5), consumer)

    assert consumer.commits == []
    assert consumer.seeks[-1] == (P0, 0)
    assert await sample_count(projections) == 0
