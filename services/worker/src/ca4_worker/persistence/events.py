"""The ``events`` collection: the append-only event store, unique on event id."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime

from ca4_schemas import LEGACY_TENANT
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from ca4_worker.application.ports import AppendOutcome
from ca4_worker.domain.records import Position, PositionedEvent, WeighedPage, event_weight
from ca4_worker.persistence.database import database_call, insert_ignoring_duplicates
from ca4_worker.persistence.documents import (
    EVENTS,
    Doc,
    event_document,
    positioned_from_document,
)

OWNER_DOCUMENTS_PER_SESSION = 4
"""Documents an owner read asks for per session: a session with more can crowd others out."""
OWNER_READ_SPLIT = 8
"""Pieces the unanswered rest of an owner read that hit its limit is cut into."""
SCAN_FIRST_FETCH = 16
"""Documents the first query of a scan asks for per round trip; later queries ask for as many
as the last page held. The driver decodes a whole reply before the first document is read (up
to 16 MiB of BSON, which crafted reports make 160 MiB of dicts), so its reply stays about one
page of documents, and a page that ends early by weight leaves few decoded for nothing."""


def _tenant_of(doc: Doc) -> str:
    return str(doc.get("event", {}).get("tenant", LEGACY_TENANT))


OwnerRead = Callable[[list[str]], Awaitable[tuple[dict[str, str], bool]]]
"""One bounded read of the owners of a group of sessions: those found, and whether the read
answered for the whole group (a session it did not find has no stored event)."""


async def owners_in_bounded_reads(session_ids: Collection[str], read: OwnerRead) -> dict[str, str]:
    """The owner of each session among ``session_ids`` with a stored event, in bounded reads.

    A read asks for a few documents per session of its group. One cut short by its limit has
    found at least one session (the limit is at least one document) and says nothing of the
    rest, so the rest is read again without the sessions found, cut into
    :data:`OWNER_READ_SPLIT` pieces: a session with many events is found once and never read
    again, and a piece without one is answered whole. Only a group holding a session with more
    than :data:`OWNER_DOCUMENTS_PER_SESSION` events is cut short, so the number of reads follows
    how many such sessions there are, never their sizes (one such session among many: 1 + 8
    reads), and is never more than the number of sessions (each read answers for one at least).
    """
    owners: dict[str, str] = {}
    groups = [sorted(set(session_ids))] if session_ids else []
    while groups:
        group = groups.pop()
        found, whole = await read(group)
        owners.update(found)
        if whole:
            continue
        rest = [session_id for session_id in group if session_id not in found]
        size = -(-len(rest) // OWNER_READ_SPLIT)
        groups.extend(rest[start : start + size] for start in reversed(range(0, len(rest), size)))
    return owners


class MongoEventStore:
    """The ``events`` collection."""

    def __init__(
        self,
        database: AsyncDatabase[Doc],
        *,
        topic: str,
        deadline_s: float | None = None,
        read_deadline_s: float | None = None,
    ) -> None:
        self._events: AsyncCollection[Doc] = database[EVENTS]
        self._topic = topic
        self._deadline_s = deadline_s
        self._read_deadline_s = read_deadline_s
        """Deadline of :meth:`get`, the read API's lookup."""

    async def append(self, events: Sequence[PositionedEvent]) -> AppendOutcome:
        """Bulk unordered insert; duplicate keys are sorted into redelivered or duplicate."""
        stored_at = datetime.now(UTC)
        documents = [
            event_document(item, topic=self._topic, stored_at=stored_at) for item in events
        ]
        with database_call(self._deadline_s):
            duplicate_indexes = await insert_ignoring_duplicates(self._events, documents)
        outcome = AppendOutcome()
        duplicates = [events[index] for index in sorted(duplicate_indexes)]
        outcome.stored = [item for i, item in enumerate(events) if i not in duplicate_indexes]
        if duplicates:
            with database_call(self._deadline_s):
                cursor = self._events.find(
                    {"_id": {"$in": [item.event_id for item in duplicates]}},
                    {"partition": 1, "offset": 1, "event.tenant": 1},
                )
                copies = {doc["_id"]: doc async for doc in cursor}
            for item in duplicates:
                copy = copies.get(item.event_id)
                if copy is None:  # gone since the insert refused it: nothing to tell apart
                    outcome.duplicates.append(item)
                    continue
                position = Position(copy["partition"], copy["offset"])
                outcome.add_copy(item, position, _tenant_of(copy))
        return outcome

    async def positions(self, event_ids: Collection[str]) -> dict[str, Position]:
        """Canonical positions of the stored events among ``event_ids``."""
        if not event_ids:
            return {}
        with database_call(self._deadline_s):
            cursor = self._events.find(
                {"_id": {"$in": list(event_ids)}}, {"partition": 1, "offset": 1}
            )
            return {doc["_id"]: Position(doc["partition"], doc["offset"]) async for doc in cursor}

    async def session_owners(self, session_ids: Collection[str]) -> dict[str, str]:
        """The tenant of the stored events of each session (only its owner's are stored).

        Bounded reads of a few documents per session on the ``session_id`` index (see
        :func:`owners_in_bounded_reads`), all under one deadline: callers hand it a bounded
        number of sessions and split them when it times out. Version-1 documents have no
        ``event.tenant``: they are the legacy tenant's.
        """
        with database_call(self._deadline_s):
            return await owners_in_bounded_reads(session_ids, self._owners_read)

    async def _owners_read(self, group: list[str]) -> tuple[dict[str, str], bool]:
        """One round trip: up to a few documents per session of ``group``."""
        limit = OWNER_DOCUMENTS_PER_SESSION * len(group)
        cursor = (
            self._events.find({"session_id": {"$in": group}}, {"session_id": 1, "event.tenant": 1})
            .limit(limit)
            .batch_size(limit)  # a few small documents each: all in the first reply
        )
        found = [doc async for doc in cursor]
        owners = {doc["session_id"]: _tenant_of(doc) for doc in found}
        return owners, len(found) < limit or len(owners) == len(group)

    async def stored_positions(self, positions: Collection[Position]) -> set[Position]:
        """Which of ``positions`` an event was stored from (the ``position`` index)."""
        by_partition: dict[int, list[int]] = {}
        for position in positions:
            by_partition.setdefault(position.partition, []).append(position.offset)
        found: set[Position] = set()
        with database_call(self._deadline_s):
            for partition, offsets in by_partition.items():
                cursor = self._events.find(
                    {"partition": partition, "offset": {"$in": offsets}}, {"offset": 1}
                )
                found.update({Position(partition, doc["offset"]) async for doc in cursor})
        return found

    async def get(self, event_id: str, *, tenant: str | None) -> PositionedEvent | None:
        """The stored event, if any and of ``tenant``.

        Version-1 events have no ``event.tenant`` and so match only ``tenant=None``: they
        belong to :data:`LEGACY_TENANT`, which no key holds.
        """
        conditions: Doc = {"_id": event_id}
        if tenant is not None:
            conditions["event.tenant"] = tenant
        with database_call(self._read_deadline_s):
            doc = await self._events.find_one(conditions)
        return positioned_from_document(doc) if doc else None

    async def scan(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        batch_size: int = 1000,
        max_bytes: int | None = None,
    ) -> AsyncIterator[list[PositionedEvent]]:
        """Stored events in (partition, offset) order, paged by offset per partition (see
        ``SCAN_FIRST_FETCH`` for how many documents each round trip brings); the partitions
        from :meth:`partitions`, whatever the window (a partition without an event in it
        yields no page)."""
        window: Doc = {}
        if since is not None:
            window["$gte"] = since
        if until is not None:
            window["$lt"] = until
        base: Doc = {"received_at": window} if window else {}
        fetch = SCAN_FIRST_FETCH
        async for partition in self.partitions():
            last_offset = -1
            while True:
                page = WeighedPage[PositionedEvent](batch_size, max_bytes)
                with database_call():
                    cursor = (
                        self._events.find(
                            {**base, "partition": partition, "offset": {"$gt": last_offset}}
                        )
                        .sort("offset", 1)
                        .limit(batch_size)
                        .batch_size(min(batch_size, fetch))
                    )
                    try:
                        async for doc in cursor:
                            item = positioned_from_document(doc)
                            weight = 0 if max_bytes is None else event_weight(item.event)
                            if page.add(item, weight):
                                break
                    finally:
                        await cursor.close()
                if not page.items:
                    break
                page_items = page.take()
                fetch = len(page_items)
                last_offset = page_items[-1].position.offset
                yield page_items

    async def partitions(self) -> AsyncIterator[int]:
        """Each partition holding a stored event, in order: one seek on the ``position`` index
        per partition (the first event past the last partition found), each under the store's
        deadline.

        Not ``distinct``: DocumentDB answers it without an index, reading every event, which on
        a large store outlasts any deadline.
        """
        after: Doc = {}
        while True:
            with database_call(self._deadline_s):
                first = await self._events.find_one(
                    after,
                    {"_id": 0, "partition": 1},
                    sort=[("partition", 1), ("offset", 1)],
                    hint="position",  # not a planner's choice: a scan here reads every event
                )
            if first is None:
                return
            yield first["partition"]
            after = {"partition": {"$gt": first["partition"]}}

    async def count(self) -> int:
        """How many events are stored."""
        with database_call():
            return await self._events.count_documents({})
