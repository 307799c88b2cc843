"""The owner check before events are stored: see :mod:`ca4_worker.domain.tenancy`.

A session's owner is the tenant of its first stored event, and only the owner's events are
stored, so any stored event names it. Owners come, in this order, from a bounded cache shared
fairly between tenants (:class:`ca4_auth.SessionOwnerCache`; confirmed owners never change),
the ``sessions`` projection (one read by id), and the event store for the sessions the
projection has not reached yet (projections follow the store at their own pace); a session
none of them knows belongs to the tenant of its first event in the batch.

The event store is asked in chunks of :data:`OWNER_LOOKUP_CHUNK` sessions, one call each. How
long a call takes follows its sessions (how many have many events), not only the database, so
a call that times out is split in halves rather than sent again whole
(:func:`~ca4_worker.application.bounded.in_bounded_calls`); only a single session that keeps
timing out is waited out as an outage, as is every unavailable database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from ca4_auth import SessionOwnerCache

from ca4_worker.application.bounded import WriteLimits, in_bounded_calls
from ca4_worker.application.ports import EventStore, Projections
from ca4_worker.application.retry import until_available
from ca4_worker.domain.records import PositionedEvent
from ca4_worker.domain.tenancy import split_by_owner

OWNER_CACHE_SIZE = 50_000
"""Session owners remembered between batches (about 200 bytes each)."""
OWNER_LOOKUP_CHUNK = 500
"""Sessions per call of the event store's owner lookup (its reads ask for a few documents per
session, so this bounds what one call reads as well as what a timeout wastes)."""


class TenantGuard:
    """Splits events into their session owner's and foreign ones."""

    def __init__(
        self,
        projections: Projections,
        store: EventStore | None = None,
        *,
        max_backoff_s: float,
        cache_size: int = OWNER_CACHE_SIZE,
    ) -> None:
        self._projections = projections
        self._store = store
        self._max_backoff_s = max_backoff_s
        self._confirmed = SessionOwnerCache(cache_size)

    async def split(
        self, events: Sequence[PositionedEvent], owners: dict[str, str]
    ) -> tuple[list[PositionedEvent], list[PositionedEvent]]:
        """``(own, foreign)``; ``owners`` carries the batch's owners from chunk to chunk."""
        unknown = {item.event.session_id for item in events} - owners.keys()
        for session_id in list(unknown):
            owner = self._confirmed.get(session_id)
            if owner is not None:
                owners[session_id] = owner
                unknown.discard(session_id)
        if unknown:
            stored = await until_available(
                lambda: self._projections.session_owners(unknown),
                what="read session owners",
                max_backoff_s=self._max_backoff_s,
            )
            unprojected = unknown - stored.keys()
            store = self._store
            if unprojected and store is not None:
                for found in await in_bounded_calls(
                    sorted(unprojected),
                    store.session_owners,
                    limits=WriteLimits(chunk=OWNER_LOOKUP_CHUNK, max_backoff_s=self._max_backoff_s),
                    slots=asyncio.Semaphore(1),
                    what="read session owners from the event store",
                ):
                    stored |= found
            for session_id, owner in stored.items():
                self._confirmed.put(session_id, owner)
            owners.update(stored)
        return split_by_owner(events, owners)

    def confirm(self, stored: Iterable[PositionedEvent]) -> None:
        """Remember the owners of sessions whose events were just stored (they passed the
        guard, so their tenant owns the session)."""
        for positioned in stored:
            self._confirmed.put(positioned.event.session_id, positioned.event.tenant)
