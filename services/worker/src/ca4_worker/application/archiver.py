"""Buffers raw records per partition and uploads them as archive objects.

The caller commits ``next offset`` only after :meth:`Archiver.flush` returns, so after a crash
the next object starts at the committed offset, which is exactly where the last uncommitted
upload started: the same key is written again and replaces it. Objects hold at most
``max_records`` records, and records weighing at most ``max_bytes`` and one record, so a
flush of a full buffer cuts the same boundaries on every run; a flush by age, or of the
heaviest buffer when all of them together hold too much, may cut elsewhere, but only ever
replaces the one uncommitted object of a partition.

Records are weighed as the stages' consumers weigh what they poll (their key's bytes and their
value's :func:`ca4_schemas.record_weight`, never less than their bytes), so one rule bounds
every buffer of the worker. Encoding an object holds it compressed and a chunk of text besides
its records (:func:`~ca4_worker.domain.archive.encode_archive_object`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog
from ca4_schemas import record_weight

from ca4_worker.application.ports import ObjectStore
from ca4_worker.application.retry import until_available
from ca4_worker.core import metrics
from ca4_worker.domain.archive import archive_key, encode_archive_object
from ca4_worker.domain.records import RawRecord

log = structlog.get_logger(__name__)

HELD_OBJECTS = 2
"""What the buffers of every partition hold together, in objects of ``max_bytes``: room for one
partition's object to fill while the others hold some of theirs."""


@dataclass
class _PartitionBuffer:
    records: list[RawRecord] = field(default_factory=list)
    weights: list[int] = field(default_factory=list)
    """Each record's weight, to cut objects by weight."""
    weight: int = 0
    oldest: float = 0.0


class Archiver:
    """Per-partition buffers flushed by count, weight or age, within a bound on them all."""

    def __init__(
        self,
        objects: ObjectStore,
        *,
        prefix: str,
        max_records: int,
        max_bytes: int,
        max_age_s: float,
        max_backoff_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._objects = objects
        self._prefix = prefix
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._max_held = HELD_OBJECTS * max_bytes
        self._max_age_s = max_age_s
        self._max_backoff_s = max_backoff_s
        self._clock = clock
        self._buffers: dict[tuple[str, int], _PartitionBuffer] = {}

    def add(self, records: Iterable[RawRecord]) -> int:
        """Buffer records (each partition's in offset order, as Kafka delivers them); their
        weight."""
        now = self._clock()
        added = 0
        for record in records:
            buffer = self._buffers.setdefault((record.topic, record.partition), _PartitionBuffer())
            if not buffer.records:
                buffer.oldest = now
            weight = _weight(record)
            buffer.records.append(record)
            buffer.weights.append(weight)
            buffer.weight += weight
            added += weight
        return added

    def buffered(self, topic: str, partition: int) -> int:
        """Records waiting for upload in one partition."""
        buffer = self._buffers.get((topic, partition))
        return len(buffer.records) if buffer else 0

    @property
    def held_weight(self) -> int:
        """What every partition's buffer holds, weighed."""
        return sum(buffer.weight for buffer in self._buffers.values())

    def room(self) -> int:
        """Weight the buffers may take before the heaviest are flushed early (for sizing
        polls)."""
        return max(0, self._max_held - self.held_weight)

    def due(self) -> list[tuple[str, int]]:
        """Partitions to flush now: those whose buffer is full (by count or weight) or old
        enough, then, while the rest together hold more than ``2 * max_bytes``, the heaviest
        of them."""
        now = self._clock()
        due: list[tuple[str, int]] = []
        rest: list[tuple[int, tuple[str, int]]] = []
        for key, buffer in self._buffers.items():
            if not buffer.records:
                continue
            if (
                len(buffer.records) >= self._max_records
                or buffer.weight >= self._max_bytes
                or now - buffer.oldest >= self._max_age_s
            ):
                due.append(key)
            else:
                rest.append((buffer.weight, key))
        held = sum(weight for weight, _ in rest)
        rest.sort(reverse=True)
        for weight, key in rest:
            if held <= self._max_held:
                break
            due.append(key)
            held -= weight
        return due

    def seconds_until_due(self) -> float:
        """How long until the oldest buffer is due by age (for the poll timeout)."""
        now = self._clock()
        waits = [
            self._max_age_s - (now - buffer.oldest)
            for buffer in self._buffers.values()
            if buffer.records
        ]
        return max(0.0, min(waits)) if waits else self._max_age_s

    async def flush(self, topic: str, partition: int) -> int | None:
        """Upload the partition's next object (retrying while S3 is down).

        Returns the offset to commit (last archived offset + 1), or ``None`` if nothing was
        buffered.
        """
        buffer = self._buffers.get((topic, partition))
        if buffer is None or not buffer.records:
            return None
        count = weight = 0
        for each in buffer.weights:
            count += 1
            weight += each
            if count >= self._max_records or weight >= self._max_bytes:
                break
        chunk = buffer.records[:count]
        key = archive_key(self._prefix, topic, chunk[0])
        # In a thread: compressing is most of it and releases the GIL, and the event loop is
        # the store's and the projections' too.
        data = await asyncio.to_thread(encode_archive_object, chunk)
        await until_available(
            lambda: self._objects.put(key, data),
            what="upload archive object",
            max_backoff_s=self._max_backoff_s,
        )
        metrics.ARCHIVE_OBJECTS.inc()
        log.info("archived", key=key, records=count, weight=weight, partition=partition)
        # (If a rebalance dropped the buffer during the upload, this only empties the dropped
        # one: held weight is counted from the buffers still kept.)
        del buffer.records[:count]
        del buffer.weights[:count]
        buffer.weight -= weight
        buffer.oldest = self._clock()
        return chunk[-1].offset + 1

    def drop(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Forget buffers of partitions this consumer no longer owns (they will be re-read)."""
        for key in partitions:
            self._buffers.pop(key, None)

    def drop_all(self) -> None:
        """Forget every buffer."""
        self._buffers.clear()


def _weight(record: RawRecord) -> int:
    """The record's key bytes and its value's weight, as the stages' consumers weigh a polled
    record."""
    return len(record.key or b"") + record_weight(record.value)
