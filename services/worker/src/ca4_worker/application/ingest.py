"""The store stage for one batch: decode, tenancy guard, dead-letter, append.

Every step finishes durably before the batch returns, and the caller commits offsets only
after that; a crash anywhere means redelivery, which the store absorbs (the event id is the
primary key). Projections are not part of it: they follow at their own pace
(:mod:`ca4_worker.application.projector`), so storing an event never waits for a projection
round. Each record's trace continues from its Kafka headers (see
:mod:`ca4_worker.core.tracing`).

Failures are handled by cause. An outage (:class:`UnavailableError`) is waited out with
backoff and commits nothing. A timeout shrinks the call (:mod:`ca4_worker.application.bounded`).
Poison is isolated and dead-lettered (:mod:`ca4_worker.application.poison`), and the rest is
stored and committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from ca4_auth import SessionOwnerCache
from ca4_schemas import EventDecodeError, decode_event
from opentelemetry.trace import Tracer
from prometheus_client import Histogram
from pydantic import ValidationError

from ca4_worker.application.bounded import WriteLimits, in_bounded_calls, task_group
from ca4_worker.application.poison import (
    MAX_ERROR_MESSAGE,
    Rejection,
    isolating_poison,
    publish_dead_letters,
)
from ca4_worker.application.ports import (
    AppendOutcome,
    DeadLetterSink,
    EventStore,
    Projections,
    SessionClaims,
)
from ca4_worker.application.retry import until_available
from ca4_worker.application.tenancy import TenantGuard
from ca4_worker.core import metrics
from ca4_worker.core.tracing import BatchSpans
from ca4_worker.domain.dead_letters import ERROR_SCHEMA_INVALID
from ca4_worker.domain.records import DeadLetter, PositionedEvent, RawRecord, header_tenant
from ca4_worker.domain.tenancy import (
    ERROR_EVENT_ID_CONFLICT,
    ERROR_FOREIGN_TENANT,
    event_id_conflict_reason,
    foreign_reason,
    is_event_id_conflict,
)

log = structlog.get_logger(__name__)
CLAIMS_REMEMBERED = 50_000
"""Sessions remembered as claimed, fairly across tenants (a claim repeated after one was
forgotten is a no-op insert)."""


@dataclass(frozen=True)
class BatchOutcome:
    """Counts of one batch, by result."""

    stored: int
    duplicate: int
    dead_lettered: int
    stored_per_partition: dict[int, int] = field(default_factory=dict)
    to_project: list[PositionedEvent] = field(default_factory=list)
    """The events stored from their own position (now or by an earlier delivery)."""


def decode_record(record: RawRecord) -> PositionedEvent | DeadLetter:
    """The event in ``record``, or the dead letter saying why there is none."""
    try:
        if record.value is None:
            raise EventDecodeError("record has no value (tombstone)")
        event = decode_event(record.value)
    except EventDecodeError as error:
        message = str(error)[:MAX_ERROR_MESSAGE]
        return DeadLetter(record, error.error_class, message, header_tenant(record))
    except (ValidationError, ValueError, RecursionError) as error:
        # ValueError too: an integer past Python's digit limit fails before validation.
        message = str(error)[:MAX_ERROR_MESSAGE]
        return DeadLetter(record, ERROR_SCHEMA_INVALID, message, header_tenant(record))
    return PositionedEvent(event=event, position=record.position, headers=record.headers)


def first_per_event_id(
    events: Sequence[PositionedEvent], seen: dict[str, str] | None = None
) -> tuple[list[PositionedEvent], list[PositionedEvent]]:
    """Split events into the first copy of each event id (by position) and later copies.

    ``seen`` maps the ids of earlier chunks of the same batch to their first copy's tenant,
    and is updated.
    """
    seen = {} if seen is None else seen
    first: list[PositionedEvent] = []
    later: list[PositionedEvent] = []
    for positioned in sorted(events, key=lambda item: item.position):
        (later if positioned.event_id in seen else first).append(positioned)
        seen.setdefault(positioned.event_id, positioned.event.tenant)
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
            item.event.tenant,
        )
        for item in foreign
    ]


def _conflict_letters(
    records: Sequence[RawRecord], conflicts: Sequence[PositionedEvent]
) -> list[DeadLetter]:
    """The dead letters of events whose id another tenant's event holds."""
    if not conflicts:
        return []
    by_position = {record.position: record for record in records}
    return [
        DeadLetter(
            by_position[item.position],
            ERROR_EVENT_ID_CONFLICT,
            event_id_conflict_reason(item),
            item.event.tenant,
        )
        for item in conflicts
    ]


class IngestService:
    """Turns batches of raw records into stored events and dead letters."""

    def __init__(
        self,
        *,
        store: EventStore,
        projections: Projections,
        dead_letters: DeadLetterSink,
        max_backoff_s: float = 5.0,
        consumer_group: str | None = None,
        tracer: Tracer | None = None,
        insert_chunk: int = 2500,
        insert_concurrency: int = 2,
        max_attempts: int = 5,
        session_claims: SessionClaims | None = None,
        known_tenants: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        """``known_tenants``: the tenants dead letters are counted under (the keys' tenants);
        a letter of any other is counted under ``""``."""
        self._store = store
        self._known_tenants = known_tenants
        self._session_claims = session_claims
        self._claimed = SessionOwnerCache(CLAIMS_REMEMBERED)
        self._dead_letters = dead_letters
        self._max_backoff_s = max_backoff_s
        self._consumer_group = consumer_group
        self._tracer = tracer
        self._insert_chunk = insert_chunk
        self._insert_concurrency = insert_concurrency
        self._max_attempts = max_attempts
        self._tenants = TenantGuard(projections, store, max_backoff_s=max_backoff_s)

    async def handle_batch(self, records: Sequence[RawRecord]) -> BatchOutcome:
        """Store one batch; returns only when everything in it is durable."""
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

    async def _claim_sessions(self, stored: Sequence[PositionedEvent]) -> None:
        """Claim the sessions just stored for their owners where the processor checks them (a
        no-op for the ones it claimed: see :mod:`..persistence.claims`)."""
        claims = self._session_claims
        if claims is None:
            return
        of_stored = {item.event.session_id: item.event.tenant for item in stored}
        owners = {
            session: tenant
            for session, tenant in of_stored.items()
            if self._claimed.get(session) is None
        }
        if not owners:
            return
        await until_available(
            lambda: claims(owners),
            what="claim stored sessions",
            max_backoff_s=self._max_backoff_s,
        )
        for session_id, tenant in owners.items():
            self._claimed.put(session_id, tenant)

    async def _handle(self, records: Sequence[RawRecord], spans: BatchSpans) -> BatchOutcome:
        """Decode and append in chunks, up to ``insert_concurrency`` appends in flight, so the
        next chunk is decoded while the database stores the last; then dead-letter."""
        letters: list[DeadLetter] = []
        appended: list[AppendOutcome] = []
        refused: list[Rejection] = []
        ordered = sorted(records, key=lambda record: record.position)
        await self._decode_and_append(ordered, spans, letters, appended, refused)
        undecoded = len(letters)
        conflicts = [item for outcome in appended for item in outcome.conflicts]
        if refused or conflicts:
            raw = {record.position: record for record in ordered}
            letters.extend(item.dead_letter(raw[item.event.position]) for item in refused)
            letters.extend(_conflict_letters(ordered, conflicts))
        if letters:
            with metrics.STORE_STAGE_SECONDS.labels("dead_letters").time():
                await publish_dead_letters(
                    self._dead_letters,
                    letters,
                    max_backoff_s=self._max_backoff_s,
                    trace_id=lambda record: spans.trace_id(record.position),
                    known_tenants=self._known_tenants,
                )
        stored = [item for outcome in appended for item in outcome.stored]
        to_project = [item for outcome in appended for item in outcome.to_project]
        self._tenants.confirm(to_project)
        await self._claim_sessions(to_project)
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
        duplicate_count = len(records) - undecoded - len(refused) - len(conflicts) - len(stored)
        per_partition = Counter(positioned.position.partition for positioned in stored)
        return BatchOutcome(
            len(stored), duplicate_count, len(letters), dict(per_partition), to_project
        )

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
        seen: dict[str, str] = {}
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
                # Tenancy guard (issue 16): never store another tenant's event into a
                # session; it goes to the DLQ with the reason instead.
                events, foreign = await self._tenants.split(events, owners)
                letters.extend(_foreign_letters(chunk, foreign, owners))
                first, later = first_per_event_id(events, seen)
                # A later copy of another tenant's id in the batch: never stored, as one the
                # store holds already (sorted by the append), so a dead letter too.
                letters.extend(
                    _conflict_letters(
                        chunk,
                        [item for item in later if is_event_id_conflict(item, seen[item.event_id])],
                    )
                )
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
                appended, refused = await isolating_poison(
                    events,
                    self._append_bounded,
                    stage="store",
                    max_attempts=self._max_attempts,
                    max_backoff_s=self._max_backoff_s,
                )
        finally:
            slot.release()
        for outcome in appended:
            observe_since_received(metrics.END_TO_END_SECONDS, outcome.stored)
        outcomes.extend(appended)
        rejected.extend(refused)

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
            merged.conflicts.extend(part.conflicts)
        return merged


def observe_since_received(histogram: Histogram, events: Sequence[PositionedEvent]) -> None:
    """Observe, per event, the seconds from the processor's ``received_at`` to now."""
    now = datetime.now(UTC)
    for positioned in events:
        histogram.observe(max(0.0, (now - positioned.event.received_at).total_seconds()))
