"""Buffers raw records per partition and uploads them as archive objects.

The caller commits ``next offset`` only after :meth:`Archiver.flush` returns, so after a crash
the next object starts at the committed offset, which is exactly where the last uncommitted
upload started: the same key is written again and replaces it. Objects hold at most
``max_records`` records, so a flush by count cuts the same boundaries on every run; a flush by
age may cut elsewhere, but only ever replaces the one uncommitted object of a partition.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from ca4_worker.application.ports import ObjectStore
from ca4_worker.application.retry import until_available
from ca4_worker.core import metrics
from ca4_worker.domain.archive import archive_key, encode_archive_object
from ca4_worker.domain.records import RawRecord

log = structlog.get_logger(__name__)


@dataclass
class _PartitionBuffer:
    records: list[RawRecord] = field(default_factory=list)
    oldest: float = 0.0


class Archiver:
    """Per-partition buffers flushed by count or age."""

    def __init__(
        self,
        objects: ObjectStore,
        *,
        prefix: str,
        max_records: int,
        max_age_s: float,
        max_backoff_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._objects = objects
        self._prefix = prefix
        self._max_records = max_records
        self._max_age_s = max_age_s
        self._max_backoff_s = max_backoff_s
        self._clock = clock
        self._buffers: dict[tuple[str, int], _PartitionBuffer] = {}

    def add(self, records: Iterable[RawRecord]) -> None:
        """Buffer records (each partition's in offset order, as Kafka delivers them)."""
        now = self._clock()
        for record in records:
            buffer = self._buffers.setdefault((record.topic, record.partition), _PartitionBuffer())
            if not buffer.records:
                buffer.oldest = now
            buffer.records.append(record)

    def buffered(self, topic: str, partition: int) -> int:
        """Records waiting for upload in one partition."""
        buffer = self._buffers.get((topic, partition))
        return len(buffer.records) if buffer else 0

    def due(self) -> list[tuple[str, int]]:
        """Partitions whose buffer is full or old enough to flush."""
        now = self._clock()
        return [
            key
            for key, buffer in self._buffers.items()
            if buffer.records
            and (len(buffer.records) >= self._max_records or now - buffer.oldest >= self._max_age_s)
        ]

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
        chunk = buffer.records[: self._max_records]
        key = archive_key(self._prefix, topic, chunk[0])
        data = encode_archive_object(chunk)
        await until_available(
            lambda: self._objects.put(key, data),
            what="upload archive object",
            max_backoff_s=self._max_backoff_s,
        )
        metrics.ARCHIVE_OBJECTS.inc()
        log.info("archived", key=key, records=len(chunk), partition=partition)
        del buffer.records[: len(chunk)]
        buffer.oldest = self._clock()
        return chunk[-1].offset + 1

    def drop(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Forget buffers of partitions this consumer no longer owns (they will be re-read)."""
        for key in partitions:
            self._buffers.pop(key, None)

    def drop_all(self) -> None:
        """Forget every buffer."""
        self._buffers.clear()
