"""The store pipeline for one batch: decode, dead-letter, append, project.

Every step finishes durably before the batch returns, and the caller commits offsets only
after that; a crash anywhere means redelivery, which the store and the projection guard absorb.
Each record's trace continues from its Kafka headers (see :mod:`ca4_worker.core.tracing`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from ca4_schemas import EventDecodeError, decode_event
from opentelemetry.trace import Tracer
from pydantic import ValidationError

from ca4_worker.application.ports import AppendOutcome, DeadLetterSink, EventStore, Projections
from ca4_worker.application.retry import until_available
from ca4_worker.application.tenancy import TenantGuard
from ca4_worker.core import metrics
from ca4_worker.core.tracing import BatchSpans
from ca4_worker.domain.projection import latest_gpu_samples
from ca4_worker.domain.records import DeadLetter, PositionedEvent, RawRecord
from ca4_worker.domain.tenancy import ERROR_FOREIGN_TENANT, foreign_reason

log = structlog.get_logger(__name__)

ERROR_SCHEMA_INVALID = "schema_invalid"
MAX_ERROR_MESSAGE = 1000


@dataclass(frozen=True)
class BatchOutcome:
    """Counts of one batch, by result."""

    stored: int
    duplicate: int
    dead_lettered: int


def decode_record(record: RawRecord) -> PositionedEvent | DeadLetter:
    """The event in ``record``, or the dead letter saying why there is none."""
    try:
        if record.value is None:
            raise EventDecodeError("record has no value (tombstone)")
        event = decode_event(record.value)
    except EventDecodeError as error:
        return DeadLetter(record, error.error_class, str(error)[:MAX_ERROR_MESSAGE])
    except ValidationError as error:
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
        ordered = sorted(records, key=lambda record: record.position)
        try:
            await self._decode_and_append(ordered, spans, letters, appended)
        except BaseExceptionGroup as group:
            raise (group.exceptions[0] if len(group.exceptions) == 1 else group) from None
        if letters:
            await self._dead_letter(letters, spans)

        to_project = [item for outcome in appended for item in outcome.to_project]
        if to_project:
            await until_available(
                lambda: self._projections.apply(to_project),
                what="apply projections",
                max_backoff_s=self._max_backoff_s,
            )
            if self._gpu_gauges is not None:
                self._gpu_gauges.update(latest_gpu_samples(to_project))
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
        duplicate_count = len(records) - len(letters) - len(stored)
        return BatchOutcome(len(stored), duplicate_count, len(letters))

    async def _decode_and_append(
        self,
        ordered: Sequence[RawRecord],
        spans: BatchSpans,
        letters: list[DeadLetter],
        appended: list[AppendOutcome],
    ) -> None:
        """Decode chunk by chunk; append each chunk's first copies of event ids in a task."""
        seen: set[str] = set()
        owners: dict[str, str] = {}
        slots = asyncio.Semaphore(self._insert_concurrency)
        async with asyncio.TaskGroup() as appends:
            for start in range(0, len(ordered), self._insert_chunk):
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
                if first:
                    await slots.acquire()
                    appends.create_task(self._append(first, spans, slots, appended))
                await asyncio.sleep(0)  # let the append start, and the API answer, between chunks

    async def _append(
        self,
        events: list[PositionedEvent],
        spans: BatchSpans,
        slot: asyncio.Semaphore,
        outcomes: list[AppendOutcome],
    ) -> None:
        """Append one chunk (retrying while the database is down) and free its slot."""
        try:
            with spans.database_write(
                "insert events", (item.position for item in events), collection="events"
            ):
                outcome = await until_available(
                    lambda: self._store.append(events),
                    what="append events",
                    max_backoff_s=self._max_backoff_s,
                )
        finally:
            slot.release()
        stored_at = datetime.now(UTC)
        for positioned in outcome.stored:
            metrics.END_TO_END_SECONDS.observe(
                max(0.0, (stored_at - positioned.event.received_at).total_seconds())
            )
        outcomes.append(outcome)

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
