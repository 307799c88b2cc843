"""Project batch N while batch N+1 is stored; commit each batch's offsets after its projection.

Storing a batch (decode, dead-letter, append) is the long step; projecting it is a few hundred
milliseconds of per-aggregate writes. Running them one after the other left the database
idle-to-half-busy for that time on every batch, so the projection of a batch runs in a task
while the subscriber stores the next one. The rules that keep this exactly-once:

- A batch's offsets are committed (explicitly, per partition) only after its projection, and
  batches are projected strictly in order: the next projection starts only after the previous
  one finished, because a projection applied past a missing one would move the position guard
  over events that were never applied.
- When a projection fails, nothing after it is projected or committed: every partition is
  rewound to the oldest offset not yet committed, and the records come again (the store
  deduplicates them, and the guard lets their own positions be projected).
- On revocation and on shutdown the pending projection is finished and committed first, so the
  next owner does not redo it (redoing it would be harmless, only slower).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from aiokafka import TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import ConsumerStoppedError, KafkaError

from ca4_worker.application.ingest import IngestService, StoredBatch
from ca4_worker.domain.records import RawRecord

log = structlog.get_logger(__name__)

REVOKE_WAIT_S = 30.0
"""How long a rebalance waits for the pending projection (e.g. through a database outage)
before giving the partitions up anyway; the next owner then redoes that batch."""

Offsets = dict[TopicPartition, int]


class OffsetConsumer(Protocol):
    """What the pipeline needs of ``AIOKafkaConsumer``."""

    def assignment(self) -> set[TopicPartition]: ...

    async def commit(self, offsets: Offsets) -> None: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...


class ProjectionFailedError(RuntimeError):
    """The previous batch's projection failed; its records will be consumed again."""


def first_offsets(records: Iterable[RawRecord]) -> Offsets:
    """The lowest offset of ``records`` in each partition."""
    first: Offsets = {}
    for record in records:
        partition = TopicPartition(record.topic, record.partition)
        first[partition] = min(first.get(partition, record.offset), record.offset)
    return first


def next_offsets(records: Iterable[RawRecord]) -> Offsets:
    """The offset to commit after ``records``: one past the highest, per partition."""
    after: Offsets = {}
    for record in records:
        partition = TopicPartition(record.topic, record.partition)
        after[partition] = max(after.get(partition, 0), record.offset + 1)
    return after


@dataclass(frozen=True)
class _Projection:
    """One batch's projection-then-commit task, and where its records start."""

    task: asyncio.Task[None]
    first: Offsets


class StorePipeline:
    """Feeds store batches to :class:`IngestService`, one projection in flight behind them."""

    def __init__(self, ingest: IngestService) -> None:
        self._ingest = ingest
        self._pending: _Projection | None = None
        # Where failed projections' records start, kept until a handler rewinds to them.
        self._unprojected: list[Offsets] = []
        self._closing = False

    async def handle(self, records: Sequence[RawRecord], consumer: OffsetConsumer) -> None:
        """Store ``records`` now, and project and commit them in the background."""
        first = first_offsets(records)
        try:
            stored = await self._ingest.store_batch(records)
        except Exception:
            # Nothing of this batch may be committed; the one before commits only its own.
            await self._settle()
            self._rewind(consumer, first)
            raise
        await self._settle()
        if self._unprojected:
            self._rewind(consumer, first)
            raise ProjectionFailedError("a batch's projection failed; consuming it again")
        task = asyncio.create_task(
            self._project_and_commit(stored, next_offsets(records), first, consumer),
            name="ca4-store-projection",
        )
        self._pending = _Projection(task, first)
        if self._closing:  # shutting down: no task may outlive the consumer
            await self._settle()

    async def close(self) -> None:
        """Finish and commit the pending projection; later batches are projected inline."""
        self._closing = True
        await self._settle()

    def rebalance_listener(self) -> ConsumerRebalanceListener:
        """A listener that finishes the pending projection before partitions are revoked."""
        return _FinishBeforeRevoke(self)

    async def finish_pending(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the pending projection (it keeps running after)."""
        pending = self._pending
        if pending is not None:
            await asyncio.wait({pending.task}, timeout=timeout_s)

    async def _settle(self) -> None:
        """Wait for the pending projection; remember where its records start if it failed."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            await asyncio.shield(pending.task)
        except asyncio.CancelledError:
            if not pending.task.cancelled():
                self._pending = pending  # we were cancelled, not the projection: keep it
                raise
            self._unprojected.append(pending.first)
        except Exception:
            self._unprojected.append(pending.first)  # logged by the task

    async def _project_and_commit(
        self,
        stored: StoredBatch,
        commit_to: Offsets,
        first: Offsets,
        consumer: OffsetConsumer,
    ) -> None:
        try:
            await self._ingest.project_batch(stored)
        except Exception:
            log.exception("projection failed; the batch will be consumed again")
            # Rewind now too, in case no further batch arrives to notice.
            self._seek(consumer, [first])
            raise
        # Partitions revoked meanwhile are left to their next owner, which consumes that part
        # of the batch again; the store and the position guard make that a no-op.
        owned = consumer.assignment()
        offsets = {
            partition: offset for partition, offset in commit_to.items() if partition in owned
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (KafkaError, ConsumerStoppedError) as error:
            log.warning("offset commit failed; the batch may be consumed again", error=repr(error))

    def _rewind(self, consumer: OffsetConsumer, first: Offsets) -> None:
        """Rewind to the oldest uncommitted record: this batch's or a failed projection's."""
        self._seek(consumer, [first, *self._unprojected])
        self._unprojected.clear()

    @staticmethod
    def _seek(consumer: OffsetConsumer, starts: Iterable[Offsets]) -> None:
        """Seek each partition back to the lowest offset among ``starts``."""
        target: Offsets = {}
        for offsets in starts:
            for partition, offset in offsets.items():
                target[partition] = min(target.get(partition, offset), offset)
        for partition, offset in target.items():
            with contextlib.suppress(KafkaError):  # no longer ours: the next owner rereads it
                consumer.seek(partition, offset)


class _FinishBeforeRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, pipeline: StorePipeline) -> None:
        self._pipeline = pipeline

    async def on_partitions_revoked(self, revoked: object) -> None:
        await self._pipeline.finish_pending(REVOKE_WAIT_S)

    async def on_partitions_assigned(self, assigned: object) -> None:
        return
