"""Rebuild the projections from the event store or from the S3 archive, and the event store
from the archive.

Both sources are read in (partition, offset) order and each event id counts once, at its first
position, which is how the live worker projects it, so a rebuild equals the live projections.
Storing archived events again goes through the store stage itself
(:class:`~ca4_worker.application.ingest.IngestService`): the same tenancy guard, event-id rules
and session claims as when they were first stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from ca4_schemas import record_weight

from ca4_worker.application.ingest import (
    BatchOutcome,
    IngestService,
    decode_record,
    first_per_event_id,
)
from ca4_worker.application.ports import EventStore, ObjectStore, Projections
from ca4_worker.application.tenancy import TenantGuard
from ca4_worker.domain.archive import decode_archive_object
from ca4_worker.domain.records import DeadLetter, PositionedEvent, RawRecord, WeighedPage

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ReplayOutcome:
    """What a replay read and applied."""

    events: int
    skipped: int
    stored: int = 0
    """Archived events stored again because the event store lacked them."""


class AlreadyDeadLettered:
    """The dead-letter sink of a restore: the archived records it refuses were dead-lettered
    when they were first stored, and publishing them again would show every one twice."""

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        """Publish nothing."""


def _in_window(event: PositionedEvent, since: datetime | None, until: datetime | None) -> bool:
    received = event.event.received_at
    return (since is None or received >= since) and (until is None or received < until)


async def replay_from_store(
    store: EventStore,
    projections: Projections,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    rebuild: bool = False,
    batch_size: int = 1000,
    max_bytes: int | None = None,
    progress: Progress | None = None,
) -> ReplayOutcome:
    """Apply stored events (optionally to emptied projections), in pages of ``batch_size``
    events that end early once they weigh ``max_bytes``."""
    if rebuild:
        await projections.reset()
    applied = 0
    pages = store.scan(since=since, until=until, batch_size=batch_size, max_bytes=max_bytes)
    async for page in pages:
        await projections.apply(page)
        applied += len(page)
        if progress:
            progress(len(page))
    return ReplayOutcome(events=applied, skipped=0)


def _object_day(key: str) -> date | None:
    for part in key.split("/"):
        if part.startswith("dt="):
            return date.fromisoformat(part.removeprefix("dt="))
    return None


def _object_partition(key: str) -> int:
    for part in key.split("/"):
        if part.startswith("partition="):
            return int(part.removeprefix("partition="))
    return -1


async def archive_keys(
    objects: ObjectStore,
    *,
    prefix: str,
    topic: str,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[str]:
    """Archive keys that may hold events of the window, in (partition, offset) order.

    The ``dt=`` of a key is the Kafka timestamp of its first record, which is never later than
    the records' ``received_at`` by more than the flush age, so a day of slack is enough.
    """
    keys = await objects.list_keys(f"{prefix}/{topic}/")
    selected = []
    for key in keys:
        day = _object_day(key)
        if day is None:
            continue
        if since is not None and day < since.date() - timedelta(days=1):
            continue
        if until is not None and day > until.date():
            continue
        selected.append(key)
    return sorted(selected, key=lambda key: (_object_partition(key), key.rsplit("/", 1)[-1]))


async def _archived_records(
    objects: ObjectStore, keys: list[str], batch_size: int, max_bytes: int | None
) -> AsyncIterator[tuple[list[RawRecord], int]]:
    """Each object's records, in pages of ``batch_size`` that end early once they weigh
    ``max_bytes`` (an object holds thousands); with the objects done by each.

    A record counts once: the keys come in (partition, offset) order, so a record at or below
    the last offset read from its partition is in an overlapping object (a re-upload).
    """
    read_up_to: dict[int, int] = {}
    for key in keys:
        page = WeighedPage[RawRecord](batch_size, max_bytes)
        for record in decode_archive_object(await objects.get(key)):
            if record.offset <= read_up_to.get(record.partition, -1):
                continue
            read_up_to[record.partition] = record.offset
            if page.add(record, record_weight(record.value)):
                yield page.take(), 0
        yield page.take(), 1


def _received_within(since: datetime | None, until: datetime | None) -> Callable[[RawRecord], bool]:
    """Whether a record's event was received in the window (a record with no event is kept,
    to be counted as skipped)."""

    def within(record: RawRecord) -> bool:
        if since is None and until is None:
            return True
        decoded = decode_record(record)
        return not isinstance(decoded, PositionedEvent) or _in_window(decoded, since, until)

    return within


async def replay_from_archive(
    objects: ObjectStore,
    projections: Projections,
    *,
    prefix: str,
    topic: str,
    since: datetime | None = None,
    until: datetime | None = None,
    rebuild: bool = False,
    batch_size: int = 1000,
    max_bytes: int | None = None,
    progress: Progress | None = None,
    store_again: IngestService | None = None,
) -> ReplayOutcome:
    """Apply archived events, first copy of each event id only (per object progress), in
    pages of ``batch_size`` records that end early once they weigh ``max_bytes``.

    With ``store_again`` (the store stage, over :class:`AlreadyDeadLettered`) each page is
    stored first, and what it kept is applied, as the live worker does.
    """
    keys = await archive_keys(objects, prefix=prefix, topic=topic, since=since, until=until)
    if rebuild:
        await projections.reset()
    seen_ids: set[str] = set()
    # The archive holds the raw topic, so also the events the store dead-lettered as another
    # tenant's: the same owner check keeps them out of the rebuilt projections.
    tenants, owners = TenantGuard(projections, max_backoff_s=5.0), dict[str, str]()
    within = _received_within(since, until)
    applied = skipped_total = stored = 0
    async for page, objects_done in _archived_records(objects, keys, batch_size, max_bytes):
        if store_again is not None:
            records = [record for record in page if within(record)]
            outcome = await store_again.handle_batch(records) if records else BatchOutcome(0, 0, 0)
            own, considered = outcome.to_project, len(records)
            stored += outcome.stored
        else:
            decoded = [decode_record(record) for record in page]
            events = [item for item in decoded if isinstance(item, PositionedEvent)]
            window = [item for item in events if _in_window(item, since, until)]
            first, _ = first_per_event_id(window)
            fresh = [item for item in first if item.event_id not in seen_ids]
            seen_ids.update(item.event_id for item in fresh)
            own, _ = await tenants.split(fresh, owners)
            considered = len(page) - (len(events) - len(window))
        if own:
            await projections.apply(own)
        applied += len(own)
        skipped_total += considered - len(own)
        if progress and objects_done:
            progress(objects_done)
    return ReplayOutcome(events=applied, skipped=skipped_total, stored=stored)
