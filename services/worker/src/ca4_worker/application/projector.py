"""The projection stage: applies stored events to the read models, behind the store.

It reads the topic in its own consumer group (``ca4-project``) and never passes the store:
a batch waits until the store stage has handled every record in it (:class:`StoreProgress`).
It then projects exactly what the store kept, each event at the position it was stored from:
a record the store dead-lettered (unreadable, another tenant's, refused) is not in the store,
and a later copy of a stored event id (a client retry) is at another position; both are
skipped. The position guards make a repeat a no-op, so redelivery, a second worker or a replay
apply each event once.

When the store stage runs in the same process, it hands over what it decided
(:class:`StoreHandoff`), so those records are neither decoded again nor looked up; records it
did not handle here (another worker stores that partition, or after a restart) are.

So storing never waits for a projection round, and a projection round amortises its
statements over everything that arrived while the last one ran (they cost per session and
GPU, not per event). An event refused by the projections for good is dead-lettered as
``projection_<cause>``: it stays stored, and later events of its session still apply.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import structlog
from ca4_schemas import record_weight

from ca4_worker.application.ingest import decode_record, observe_since_received
from ca4_worker.application.poison import isolating_poison, publish_dead_letters
from ca4_worker.application.ports import DeadLetterSink, EventStore, Projections, StoreProgress
from ca4_worker.application.retry import until_available
from ca4_worker.core import metrics
from ca4_worker.core.gc_pause import gc_paused
from ca4_worker.domain.records import Position, PositionedEvent, RawRecord

log = structlog.get_logger(__name__)

NOT_HANDED_OVER: Final = object()


class StoreHandoff:
    """What the store stage of this process decided for each record position: the event it
    kept, or ``None`` (a duplicate, or dead-lettered), for the projection stage of this process
    to take instead of decoding the record again and looking it up.

    Bounded by the kept events' weight (:func:`record_weight`, what their records decode to)
    and by positions. When full it keeps what it holds and turns new decisions away:
    the projection stage reads each partition in order, so the oldest decisions are the ones
    it takes next. (Evicting the oldest instead meant that a projection stage behind by more
    than the handoff, as after an outage, missed nearly every record.) So that nothing waits
    in it for good, it keeps decisions only for the partitions ``projected()`` names, the
    projection stage's assignment here, and drops the others' on each put.
    """

    def __init__(
        self,
        *,
        max_bytes: int,
        max_positions: int,
        projected: Callable[[], Collection[int]] | None = None,
    ) -> None:
        self._max_bytes = max_bytes
        self._max_positions = max_positions
        self.projected = projected
        """The partitions this process projects; ``None``: every partition."""
        self._decided: dict[int, dict[int, tuple[PositionedEvent | None, int]]] = {}
        self._positions = 0
        self._weight = 0

    def put(self, handled: Iterable[RawRecord], kept: Iterable[PositionedEvent]) -> None:
        """Record a durable store batch: every record ``handled``, the ``kept`` events."""
        projected = None if self.projected is None else set(self.projected())
        if projected is not None:
            for partition in [p for p in self._decided if p not in projected]:
                self._forget(partition)
        kept_at = {item.position: item for item in kept}
        for record in handled:
            if projected is not None and record.partition not in projected:
                continue
            self.take(record.position)  # handled again (a redelivery): the newer decision wins
            item = kept_at.get(record.position)
            weight = 0 if item is None else record_weight(record.value)
            if self._positions >= self._max_positions or self._weight + weight > self._max_bytes:
                continue  # full: the projection stage decodes this one and looks it up
            self._decided.setdefault(record.partition, {})[record.offset] = (item, weight)
            self._positions += 1
            self._weight += weight

    def take(self, position: Position) -> PositionedEvent | object | None:
        """The decision for ``position``, once, or :data:`NOT_HANDED_OVER`."""
        decided = self._decided.get(position.partition, {}).pop(position.offset, None)
        if decided is None:
            return NOT_HANDED_OVER
        item, weight = decided
        self._positions -= 1
        self._weight -= weight
        return item

    def _forget(self, partition: int) -> None:
        for _, weight in self._decided.pop(partition, {}).values():
            self._positions -= 1
            self._weight -= weight

    def __len__(self) -> int:
        return self._positions

    @property
    def held_weight(self) -> int:
        """Weight (:func:`record_weight`) of the kept events held."""
        return self._weight


class StoredEventUnreadableError(Exception):
    """The store holds an event this worker cannot decode (a newer schema version)."""


@dataclass(frozen=True)
class ProjectionOutcome:
    """Counts of one projection batch."""

    projected: int
    skipped: int
    dead_lettered: int


class ProjectionService:
    """Projects batches of raw records once the store has handled them."""

    def __init__(
        self,
        *,
        store: EventStore,
        projections: Projections,
        dead_letters: DeadLetterSink,
        progress: StoreProgress,
        handoff: StoreHandoff | None = None,
        gpu_gauges: metrics.GpuGauges | None = None,
        max_backoff_s: float = 5.0,
        max_attempts: int = 5,
        known_tenants: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        self._store = store
        self._projections = projections
        self._dead_letters = dead_letters
        self._known_tenants = known_tenants
        self._progress = progress
        self._handoff = handoff
        self._gpu_gauges = gpu_gauges
        self._max_backoff_s = max_backoff_s
        self._max_attempts = max_attempts

    async def handle_batch(self, records: Sequence[RawRecord]) -> ProjectionOutcome:
        """Project one batch; returns only when its projections are durable."""
        next_offsets: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            next_offsets[key] = max(next_offsets.get(key, 0), record.offset + 1)
        # Decisions of records the store has handled already are taken before waiting for
        # the rest, so a round that spans two store batches finds the first one's still there.
        progress = self._progress
        early: list[RawRecord] = []
        late: list[RawRecord] = []
        for record in records:
            handled = record.offset < progress.handled(record.topic, record.partition)
            (early if handled else late).append(record)
        handed, left = self._handed_over(early)
        with _stage("wait_store"):
            await progress.wait_until_stored(next_offsets)
        handed_late, left_late = self._handed_over(late)
        decoded = len(left) + len(left_late)
        metrics.PROJECTION_RECORDS.labels("handoff").inc(len(records) - decoded)
        metrics.PROJECTION_RECORDS.labels("decoded").inc(decoded)
        with gc_paused():  # not across the wait above: the store stage runs meanwhile
            return await self._project(records, handed + handed_late, left + left_late)

    async def _project(
        self,
        records: Sequence[RawRecord],
        handed: list[PositionedEvent],
        left: list[RawRecord],
    ) -> ProjectionOutcome:
        """Project the ``handed`` events and what the store kept among the ``left`` records."""
        with _stage("decode"):
            raw = {record.position: record for record in records}
            decoded: list[PositionedEvent] = []
            unreadable: list[RawRecord] = []
            for record, item in zip(left, map(decode_record, left), strict=True):
                if isinstance(item, PositionedEvent):
                    decoded.append(item)
                else:
                    unreadable.append(record)
        if unreadable:
            await self._refuse_if_stored(unreadable)
        with _stage("resolve"):
            kept = sorted(handed + await self._as_stored(decoded), key=lambda item: item.position)
        with _stage("apply"):
            _, refused = await isolating_poison(
                kept,
                self._apply,
                stage="projection",
                max_attempts=self._max_attempts,
                max_backoff_s=self._max_backoff_s,
            )
        left_out = {item.event.position for item in refused}
        projected = [item for item in kept if item.position not in left_out]
        observe_since_received(metrics.PROJECTED_SECONDS, projected)
        if self._gpu_gauges is not None:
            self._gpu_gauges.update(projected)
        if refused:
            with _stage("dead_letters"):
                await publish_dead_letters(
                    self._dead_letters,
                    [item.dead_letter(raw[item.event.position]) for item in refused],
                    max_backoff_s=self._max_backoff_s,
                    known_tenants=self._known_tenants,
                )
            metrics.EVENTS.labels("dead_lettered").inc(len(refused))
        log.info(
            "batch projected",
            records=len(records),
            handed_over=len(records) - len(left),
            projected=len(projected),
            refused=len(refused),
        )
        return ProjectionOutcome(len(projected), len(records) - len(kept), len(refused))

    def _handed_over(
        self, records: Sequence[RawRecord]
    ) -> tuple[list[PositionedEvent], list[RawRecord]]:
        """The events the store stage here kept among ``records``, and the records it did not
        decide here (to decode and look up)."""
        handed: list[PositionedEvent] = []
        left: list[RawRecord] = []
        for record in records:
            decided = (
                NOT_HANDED_OVER if self._handoff is None else self._handoff.take(record.position)
            )
            if decided is NOT_HANDED_OVER:
                left.append(record)
            elif isinstance(decided, PositionedEvent):
                handed.append(decided)
        return handed, left

    async def _refuse_if_stored(self, unreadable: Sequence[RawRecord]) -> None:
        """Skip records the store dead-lettered; raise for one it stored anyway.

        A record this worker cannot read but another stored is a newer schema version (a
        rolling upgrade): skipping it would leave that event unprojected for good, so the
        round fails and is tried again until a worker that reads it projects it.
        """
        stored = await until_available(
            lambda: self._store.stored_positions({record.position for record in unreadable}),
            what="read stored positions",
            max_backoff_s=self._max_backoff_s,
        )
        if stored:
            raise StoredEventUnreadableError(
                f"{len(stored)} stored event(s) this worker cannot decode, first at "
                f"{min(stored)}: upgrade this worker; the round is tried again until then"
            )

    async def _as_stored(self, events: list[PositionedEvent]) -> list[PositionedEvent]:
        """The events stored from their own position."""
        if not events:
            return []
        canonical = await until_available(
            lambda: self._store.positions({item.event_id for item in events}),
            what="read stored positions",
            max_backoff_s=self._max_backoff_s,
        )
        return [item for item in events if canonical.get(item.event_id) == item.position]

    async def _apply(self, events: Sequence[PositionedEvent]) -> None:
        await until_available(
            lambda: self._projections.apply(events),
            what="apply projections",
            max_backoff_s=self._max_backoff_s,
        )


@contextmanager
def _stage(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        metrics.PROJECTION_STAGE_SECONDS.labels(name).observe(time.perf_counter() - started)
