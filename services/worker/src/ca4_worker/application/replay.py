"""Rebuild the projections from the event store or from the S3 archive.

Both sources are read in (partition, offset) order and each event id counts once, at its first
position, which is how the live worker projects it, so a rebuild equals the live projections.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from ca4_schemas import record_weight

from ca4_worker.application.ingest import decode_record, first_per_event_id
from ca4_worker.application.ports import EventStore, ObjectStore, Projections
from ca4_worker.application.tenancy import TenantGuard
from ca4_worker.domain.archive import decode_archive_object
from ca4_worker.domain.records import Position, PositionedEvent, WeighedPage

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ReplayOutcome:
    """What a replay read and applied."""

    events: int
    skipped: int


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


async def _archived_events(
    objects: ObjectStore, keys: list[str], batch_size: int, max_bytes: int | None
) -> AsyncIterator[tuple[list[PositionedEvent], int, int]]:
    """Each object's events, in pages of ``batch_size`` that end early once their records
    weigh ``max_bytes`` (an object holds thousands); with the records skipped and the objects
    done by each."""
    seen_positions: set[Position] = set()
    for key in keys:
        page = WeighedPage[PositionedEvent](batch_size, max_bytes)
        skipped = 0
        for record in decode_archive_object(await objects.get(key)):
            if record.position in seen_positions:
                continue  # an overlapping object from a re-upload; the record counts once
            seen_positions.add(record.position)
            decoded = decode_record(record)
            if not isinstance(decoded, PositionedEvent):
                skipped += 1
            elif page.add(decoded, record_weight(record.value)):
                yield page.take(), skipped, 0
                skipped = 0
        yield page.take(), skipped, 1


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
) -> ReplayOutcome:
    """Apply archived events, first copy of each event id only (per object progress), in
    pages of ``batch_size`` events that end early once their records weigh ``max_bytes``."""
    keys = await archive_keys(objects, prefix=prefix, topic=topic, since=since, until=until)
    if rebuild:
        await projections.reset()
    seen_ids: set[str] = set()
    # The archive holds the raw topic, so also the events the store dead-lettered as another
    # tenant's: the same owner check keeps them out of the rebuilt projections.
    tenants, owners = TenantGuard(projections, max_backoff_s=5.0), dict[str, str]()
    applied = skipped_total = 0
    pages = _archived_events(objects, keys, batch_size, max_bytes)
    async for events, skipped, objects_done in pages:
        first, later = first_per_event_id(
            [item for item in events if _in_window(item, since, until)]
        )
        fresh = [item for item in first if item.event_id not in seen_ids]
        seen_ids.update(item.event_id for item in fresh)
        own, foreign = await tenants.split(fresh, owners)
        if own:
            await projections.apply(own)
        applied += len(own)
        skipped_total += skipped + len(later) + len(first) - len(fresh) + len(foreign)
        if progress and objects_done:
            progress(objects_done)
    return ReplayOutcome(events=applied, skipped=skipped_total)
