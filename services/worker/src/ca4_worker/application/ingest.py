"""The store pipeline for one batch: decode, dead-letter, append, project.

Every step finishes durably before the batch returns, and the caller commits offsets only
after that; a crash anywhere means redelivery, which the store and the projection guard absorb.
Each record's trace continues from its Kafka headers (see :mod:`ca4_worker.core.tracing`).

Failures are handled by cause. An outage (:class:`UnavailableError`) is waited out with
backoff and commits nothing. A timeout shrinks the call (:mod:`ca4_worker.application.bounded`).
A refusal that would repeat on every try (:class:`RejectedError`), or any other error that
outlasts ``max_attempts`` tries, is poison: the work is split in halves until the offending
events are alone, those are dead-lettered with the error, and the rest is stored, projected
and committed. So no batch is retried in a hot loop, and one bad event never stops a partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import structlog
from ca4_schemas import EventDecodeError, decode_event
from opentelemetry.trace import Tracer
from prometheus_client import Histogram
from pydantic import ValidationError

from ca4_worker.application.bounded import WriteLimits, in_bounded_calls, task_group
from ca4_worker.application.ports import (
    AppendOutcome,
    DeadLetterSink,
    EventStore,
    Projections,
    RejectedError,
)
from ca4_worker.application.retry import until_available
from ca4_worker.application.tenancy import TenantGuard
from ca4_worker.core import metrics
from ca4_worker.core.tracing import BatchSpans
from ca4_worker.domain.records import DeadLetter, PositionedEvent, RawRecord
from ca4_worker.domain.tenancy import ERROR_FOREIGN_TENANT, foreign_reason

log = structlog.get_logger(__name__)
ResultT = TypeVar("ResultT")

ERROR_SCHEMA_INVALID = "schema_invalid"
ERROR_UNEXPECTED = "unexpected_error"
MAX_ERROR_MESSAGE = 1000


@dataclass(frozen=True)
class Rejection:
    """An event the store or the projections refused for good, and why."""

    event: PositionedEvent
    error_class: str
    message: str


@dataclass(frozen=True)
class BatchOutcome:
    """Counts of one batch, by result."""

    stored: int
    duplicate: int
    dead_lettered: int
    stored_per_partition: dict[int, int] = field(default_factory=dict)


def decode_record(record: RawRecord) -> PositionedEvent | DeadLetter:
    """The event in ``record``, or the dead letter saying why there is none."""
    try:
        if record.value is None:
            raise EventDecodeError("record has no value (tombstone)")
        event = decode_event(record.value)
    except EventDecodeError as error:
        return DeadLetter(record, error.error_class, str(error)[:MAX_ERROR_MESSAGE])
    except (ValidationError, ValueError, RecursionError) as error:
        # ValueError too: an integer past Python's digit limit fails before validation.
        return DeadLetter(record, ERROR_SCHEMA_INVALID, str(error)[:MAX_ERROR_MESSAGE])
    return PositionedEvent(event=event, position=record.position, headers=record.headers)


def first_per_event_id(
    events: Sequence[PositionedEvent], seen: set[str] | None = None
) -> tuple[list[PositionedEvent], list[PositionedEvent]]:
    """Split events into the first copy of each event id (by position) and later copies.

    ``seen`` carries the ids of earlier chunks of the same batch, and is updated.
    """
    seen = set() if seen is None else seen
    first: list[PositionedEvent] = []
    later: list[PositionedEvent] = []
    for positioned in sorted(events, key=lambda item: item.position):
        (later if positioned.event_id in seen else first).append(positioned)
        seen.add(positioned.event_id)
    return first, later


def _foreign_letters(
    records: Sequence[RawRecord], foreign: Sequence[PositionedEvent], owners: dict[str, str]
) -> list[DeadLetter]:
    by_position = {record.position: record for record in records}
    return [
        DeadLetter(
            by_position[item.position],
            ERROR_FOREIGN_TENANT,
            foreign_reason(item, owners[item.event.session_id]),
        )
        for item in foreign
    ]


class IngestService:
    """Turns batches of raw records into stored, projected events and dead letters."""

    def __init__(
        self,
        *,
        store: EventStore,
        projections: Projections,
        dead_letters: DeadLetterSink,
        gpu_gauges: metrics.GpuGauges | None = None,
        max_backoff_s: float = 5.0,
        consumer_group: str | None = None,
        tracer: Tracer | None = None,
        insert_chunk: int = 2500,
        insert_concurrency: int = 2,
        max_attempts: int = 5,
    ) -> None:
        self._store = store
        self._projections = projections
        self._dead_letters = dead_letters
        self._gpu_gauges = gpu_gauges
        self._max_backoff_s = max_backoff_s
        self._consumer_group = consumer_group
        self._tracer = tracer
        self._insert_chunk = insert_chunk
        self._insert_concurrency = insert_concurrency
        self._max_attempts = max_attempts
        self._tenants = TenantGuard(projections, max_backoff_s=max_backoff_s)

    async def handle_batch(self, records: Sequence[RawRecord]) -> BatchOutcome:
        """Process one batch; returns only when everything in it is durable."""
        started = time.perf_counter()
        spans = BatchSpans(records, consumer_group=self._consumer_group, span_tracer=self._tracer)
        try:
            outcome = await self._handle(records, spans)
        except BaseException as error:
            spans.end(error)
            raise
        spans.end()
        metrics.EVENTS.labels("stored").inc(outcome.stored)
        for partition, count in outcome.stored_per_partition.items():
            metrics.PARTITION_STORED.labels(str(partition)).inc(count)
        metrics.EVENTS.labels("duplicate").inc(outcome.duplicate)
        metrics.EVENTS.labels("dead_lettered").inc(outcome.dead_lettered)
        metrics.PROCESSING_SECONDS.observe(time.perf_counter() - started)
        log.info(
            "batch stored",
            records=len(records),
            stored=outcome.stored,
            duplicate=outcome.duplicate,
            dead_lettered=outcome.dead_lettered,
        )
        return outcome

    async def _handle(self, records: Sequence[RawRecord], spans: BatchSpans) -> BatchOutcome:
        """Decode and append in chunks, up to ``insert_concurrency`` appends in flight, so the
        next chunk is decoded while the database stores the last; then project the batch."""
        letters: list[DeadLetter] = []
        appended: list[AppendOutcome] = []
        refused_by_store: list[Rejection] = []
        ordered = sorted(records, key=lambda record: record.position)
        await self._decode_and_append(ordered, spans, letters, appended, refused_by_store)
        undecoded = len(letters)

        to_project = sorted(
            (item for outcome in appended for item in outcome.to_project),
            key=lambda item: item.position,
        )
        rejected = list(refused_by_store)
        if to_project:
            with metrics.STORE_STAGE_SECONDS.labels("projection").time():
                _, refused = await self._isolating_poison(
                    to_project, self._project, stage="projection"
                )
            rejected.extend(refused)
            left_out = {item.event.position for item in refused}
            projected = [item for item in to_project if item.position not in left_out]
            _observe_since_received(metrics.PROJECTED_SECONDS, projected)
            if self._gpu_gauges is not None:
                self._gpu_gauges.update(projected)
        if rejected:
            raw = {record.position: record for record in ordered}
            letters.extend(_dead_letter_of(item, raw[item.event.position]) for item in rejected)
        if letters:
            with metrics.STORE_STAGE_SECONDS.labels("dead_letters").time():
                await self._dead_letter(letters, spans)
        stored = [item for outcome in appended for item in outcome.stored]
        if log.is_enabled_for(logging.DEBUG):
            for positioned in stored:
                log.debug(
                    "event stored",
                    event_id=positioned.event_id,
                    session_id=positioned.event.session_id,
                    partition=positioned.position.partition,
                    offset=positioned.position.offset,
                    trace_id=spans.trace_id(positioned.position),
                )
        # Every other record repeats an event id: within the batch, or one already stored.
        # A stored event whose projection was refused counts as stored and as dead-lettered.
        duplicate_count = len(records) - undecoded - len(refused_by_store) - len(stored)
        per_partition = Counter(positioned.position.partition for positioned in stored)
        return BatchOutcome(len(stored), duplicate_count, len(letters), dict(per_partition))

    async def _isolating_poison(
        self,
        events: Sequence[PositionedEvent],
        operation: Callable[[Sequence[PositionedEvent]], Awaitable[ResultT]],
        *,
        stage: str,
    ) -> tuple[list[ResultT], list[Rejection]]:
        """``operation(events)``; on poison, the same on each half until the poison is alone.

        Returns the results of the parts that went through (in position order) and the events
        refused for good. Halves run in order, so a session's events still apply in order.
        """
        attempts = 0
        while True:
            try:
                return [await operation(events)], []
            except RejectedError as error:
                cause = (f"{stage}_{error.error_class}", str(error))
                break
            except Exception as error:  # an unknown failure gets a budget of tries, then is poison
                attempts += 1
                if attempts >= self._max_attempts:
                    cause = (f"{stage}_{ERROR_UNEXPECTED}", f"{type(error).__name__}: {error}")
                    break
                log.warning(
                    "unexpected error, retrying",
                    stage=stage,
                    attempt=attempts,
                    of=self._max_attempts,
                    events=len(events),
                    error=f"{type(error).__name__}: {error}",
                )
                await asyncio.sleep(min(0.1 * 2**attempts, self._max_backoff_s))
        if len(events) == 1:
            error_class, message = cause
            return [], [Rejection(events[0], error_class, message[:MAX_ERROR_MESSAGE])]
        log.warning(
            "refused, isolating the poison", stage=stage, events=len(events), error=cause[1]
        )
        half = len(events) // 2
        first, first_refused = await self._isolating_poison(events[:half], operation, stage=stage)
        second, second_refused = await self._isolating_poison(events[half:], operation, stage=stage)
        return first + second, first_refused + second_refused

    async def _decode_and_append(
        self,
        ordered: Sequence[RawRecord],
        spans: BatchSpans,
        letters: list[DeadLetter],
        appended: list[AppendOutcome],
        rejected: list[Rejection],
    ) -> None:
        """Decode chunk by chunk; append each chunk's first copies of event ids in a task.

        Times the decoding (tenancy guard included) as ``decode`` and the rest of the wall time,
        spent waiting for the appends, as ``append``.
        """
        seen: set[str] = set()
        owners: dict[str, str] = {}
        slots = asyncio.Semaphore(self._insert_concurrency)
        started = time.perf_counter()
        decoding_s = 0.0
        async with task_group() as appends:
            for start in range(0, len(ordered), self._insert_chunk):
                chunk_started = time.perf_counter()
                chunk = ordered[start : start + self._insert_chunk]
                events: list[PositionedEvent] = []
                for item in map(decode_record, chunk):
                    if isinstance(item, DeadLetter):
                        letters.append(item)
                    else:
                        events.append(item)
                # Tenancy guard (issue 16): never store or project another tenant's event
                # into a session; it goes to the DLQ with the reason instead.
                events, foreign = await self._tenants.split(events, owners)
                letters.extend(_foreign_letters(chunk, foreign, owners))
                first, _ = first_per_event_id(events, seen)
                decoding_s += time.perf_counter() - chunk_started
                if first:
                    await slots.acquire()
                    appends.create_task(self._append(first, spans, slots, appended, rejected))
                await asyncio.sleep(0)  # let the append start, and the API answer, between chunks
        metrics.STORE_STAGE_SECONDS.labels("decode").observe(decoding_s)
        metrics.STORE_STAGE_SECONDS.labels("append").observe(
            time.perf_counter() - started - decoding_s
        )

    async def _append(
        self,
        events: list[PositionedEvent],
        spans: BatchSpans,
        slot: asyncio.Semaphore,
        outcomes: list[AppendOutcome],
        rejected: list[Rejection],
    ) -> None:
        """Append one chunk (waiting out outages, halving on timeouts, isolating poison) and
        free its slot."""
        try:
            with spans.database_write(
                "insert events", (item.position for item in events), collection="events"
            ):
                appended, refused = await self._isolating_poison(
                    events, self._append_bounded, stage="store"
                )
        finally:
            slot.release()
        for outcome in appended:
            _observe_since_received(metrics.END_TO_END_SECONDS, outcome.stored)
        outcomes.extend(appended)
        rejected.extend(refused)

    async def _project(self, events: Sequence[PositionedEvent]) -> None:
        await until_available(
            lambda: self._projections.apply(events),
            what="apply projections",
            max_backoff_s=self._max_backoff_s,
        )

    async def _append_bounded(self, events: Sequence[PositionedEvent]) -> AppendOutcome:
        """One append; halves of it after a timeout, merged into one outcome."""
        parts = await in_bounded_calls(
            events,
            self._store.append,
            limits=WriteLimits(chunk=len(events), max_backoff_s=self._max_backoff_s),
            slots=asyncio.Semaphore(1),
            what="append events",
        )
        merged = AppendOutcome()
        for part in parts:
            merged.stored.extend(part.stored)
            merged.redelivered.extend(part.redelivered)
            merged.duplicates.extend(part.duplicates)
        return merged

    async def _dead_letter(self, letters: list[DeadLetter], spans: BatchSpans) -> None:
        await until_available(
            lambda: self._dead_letters.publish(letters),
            what="publish dead letters",
            max_backoff_s=self._max_backoff_s,
        )
        for letter in letters:
            metrics.DEAD_LETTERS.labels(letter.error_class).inc()
            log.warning(
                "dead-lettered",
                error_class=letter.error_class,
                partition=letter.record.partition,
                offset=letter.record.offset,
                trace_id=spans.trace_id(letter.record.position),
            )


def _observe_since_received(histogram: Histogram, events: Sequence[PositionedEvent]) -> None:
    """Observe, per event, the seconds from the processor's ``received_at`` to now."""
    now = datetime.now(UTC)
    for positioned in events:
        histogram.observe(max(0.0, (now - positioned.event.received_at).total_seconds()))


def _dead_letter_of(rejection: Rejection, record: RawRecord) -> DeadLetter:
    return DeadLetter(record, rejection.error_class, rejection.message)
