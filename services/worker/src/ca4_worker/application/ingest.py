"""The store pipeline for one batch: decode, dead-letter, append, project.

Every step finishes durably before the batch returns, and the caller commits offsets only
after that; a crash anywhere means redelivery, which the store and the projection guard absorb.
Each record's trace continues from its Kafka headers (see :mod:`ca4_worker.core.tracing`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from ca4_schemas import EventDecodeError, decode_event
from opentelemetry.trace import Tracer
from pydantic import ValidationError

from ca4_worker.application.ports import DeadLetterSink, EventStore, Projections
from ca4_worker.application.retry import until_available
from ca4_worker.core import metrics
from ca4_worker.core.tracing import BatchSpans
from ca4_worker.domain.projection import latest_gpu_samples
from ca4_worker.domain.records import DeadLetter, PositionedEvent, RawRecord

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
    events: Sequence[PositionedEvent],
) -> tuple[list[PositionedEvent], list[PositionedEvent]]:
    """Split a batch into the first copy of each event id (by position) and later copies."""
    seen: set[str] = set()
    first: list[PositionedEvent] = []
    later: list[PositionedEvent] = []
    for positioned in sorted(events, key=lambda item: item.position):
        (later if positioned.event_id in seen else first).append(positioned)
        seen.add(positioned.event_id)
    return first, later


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
    ) -> None:
        self._store = store
        self._projections = projections
        self._dead_letters = dead_letters
        self._gpu_gauges = gpu_gauges
        self._max_backoff_s = max_backoff_s
        self._consumer_group = consumer_group
        self._tracer = tracer

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
        decoded = [decode_record(record) for record in records]
        letters = [item for item in decoded if isinstance(item, DeadLetter)]
        events = [item for item in decoded if isinstance(item, PositionedEvent)]

        if letters:
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

        first, in_batch_duplicates = first_per_event_id(events)
        stored_count = duplicate_count = 0
        if first:
            with spans.database_write(
                "insert events", (item.position for item in first), collection="events"
            ):
                outcome = await until_available(
                    lambda: self._store.append(first),
                    what="append events",
                    max_backoff_s=self._max_backoff_s,
                )
            stored_at = datetime.now(UTC)
            for positioned in outcome.stored:
                metrics.END_TO_END_SECONDS.observe(
                    max(0.0, (stored_at - positioned.event.received_at).total_seconds())
                )
            to_project = outcome.to_project
            if to_project:
                await until_available(
                    lambda: self._projections.apply(to_project),
                    what="apply projections",
                    max_backoff_s=self._max_backoff_s,
                )
                if self._gpu_gauges is not None:
                    self._gpu_gauges.update(latest_gpu_samples(to_project))
            if log.is_enabled_for(logging.DEBUG):
                for positioned in outcome.stored:
                    log.debug(
                        "event stored",
                        event_id=positioned.event_id,
                        session_id=positioned.event.session_id,
                        partition=positioned.position.partition,
                        offset=positioned.position.offset,
                        trace_id=spans.trace_id(positioned.position),
                    )
            stored_count = len(outcome.stored)
            duplicate_count = len(outcome.redelivered) + len(outcome.duplicates)
        duplicate_count += len(in_batch_duplicates)
        return BatchOutcome(stored_count, duplicate_count, len(letters))
