"""MongoDB adapters (FerretDB locally, DocumentDB in production) for the store and projections.

Only features FerretDB v1 and DocumentDB share are used: unordered ``insert_many``, unique
``_id``, single-document updates with ``$set/$inc/$min/$max/$addToSet`` and upserts; no
transactions and no aggregation pipelines. Each projection update carries its own guard in the
filter, so it is atomic on one document and a repeat is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from beanie import init_beanie
from ca4_schemas import decode_event
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from ca4_worker.application.ports import AppendOutcome, UnavailableError
from ca4_worker.application.views import GpuQuery, GpuView, Page, SessionQuery, SessionView
from ca4_worker.domain.projection import (
    GpuLatest,
    SessionDelta,
    applied_key,
    fold_session,
    group_by_session,
    latest_gpu_samples,
    mean_utilization_pct,
)
from ca4_worker.domain.records import Position, PositionedEvent
from ca4_worker.persistence.documents import DOCUMENT_MODELS

DUPLICATE_KEY = 11000
MAX_CONCURRENT_UPDATES = 32
Doc = dict[str, Any]


@contextmanager
def unavailable_on_driver_errors() -> Iterator[None]:
    """Turn driver errors into :class:`UnavailableError`, so callers retry instead of losing."""
    try:
        yield
    except PyMongoError as error:
        raise UnavailableError(f"database error: {error}") from error


def connect(url: str, *, timeout_ms: int = 5000) -> AsyncMongoClient[Doc]:
    """A client whose operations fail fast (then get retried) while the database is down."""
    return AsyncMongoClient(
        url,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 6, 30_000),
    )


async def init_database(database: AsyncDatabase[Doc]) -> None:
    """Initialise Beanie and create each document's indexes.

    Indexes are created one ``createIndexes`` call per index: FerretDB v1.24 drops the
    connection when one call lists several indexes that already exist, which is what
    ``init_beanie`` sends on every restart.
    """
    with unavailable_on_driver_errors():
        await init_beanie(database=database, document_models=DOCUMENT_MODELS, skip_indexes=True)
        for model in DOCUMENT_MODELS:
            collection = database[model.get_collection_name()]
            for index in model.Settings.indexes:
                await collection.create_indexes([index])


def event_document(positioned: PositionedEvent, *, topic: str, stored_at: datetime) -> Doc:
    """The stored form of an event."""
    return {
        "_id": positioned.event_id,
        "session_id": positioned.event.session_id,
        "topic": topic,
        "partition": positioned.position.partition,
        "offset": positioned.position.offset,
        "received_at": positioned.event.received_at,
        "stored_at": stored_at,
        "event": positioned.event.model_dump(mode="json"),
    }


def positioned_from_document(doc: Doc) -> PositionedEvent:
    """The event (upcast to the latest version) and its position from a stored document."""
    return PositionedEvent(
        event=decode_event(doc["event"]),
        position=Position(doc["partition"], doc["offset"]),
    )


class MongoEventStore:
    """The ``events`` collection."""

    def __init__(self, database: AsyncDatabase[Doc], *, topic: str) -> None:
        self._events: AsyncCollection[Doc] = database["events"]
        self._topic = topic

    async def append(self, events: Sequence[PositionedEvent]) -> AppendOutcome:
        """Bulk unordered insert; duplicate keys are sorted into redelivered or duplicate."""
        stored_at = datetime.now(UTC)
        documents = [
            event_document(item, topic=self._topic, stored_at=stored_at) for item in events
        ]
        duplicate_indexes: set[int] = set()
        with unavailable_on_driver_errors():
            try:
                await self._events.insert_many(documents, ordered=False)
            except BulkWriteError as error:
                write_errors = error.details.get("writeErrors", [])
                if any(item.get("code") != DUPLICATE_KEY for item in write_errors):
                    raise
                if error.details.get("writeConcernErrors"):
                    raise
                duplicate_indexes = {int(item["index"]) for item in write_errors}
        outcome = AppendOutcome()
        duplicates = [events[index] for index in sorted(duplicate_indexes)]
        outcome.stored = [item for i, item in enumerate(events) if i not in duplicate_indexes]
        if duplicates:
            canonical = await self._positions([item.event_id for item in duplicates])
            for item in duplicates:
                if canonical.get(item.event_id) == item.position:
                    outcome.redelivered.append(item)
                else:
                    outcome.duplicates.append(item)
        return outcome

    async def _positions(self, event_ids: list[str]) -> dict[str, Position]:
        with unavailable_on_driver_errors():
            cursor = self._events.find({"_id": {"$in": event_ids}}, {"partition": 1, "offset": 1})
            return {doc["_id"]: Position(doc["partition"], doc["offset"]) async for doc in cursor}

    async def get(self, event_id: str) -> PositionedEvent | None:
        """The stored event, if any."""
        with unavailable_on_driver_errors():
            doc = await self._events.find_one({"_id": event_id})
        return positioned_from_document(doc) if doc else None

    async def scan(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[list[PositionedEvent]]:
        """Stored events in (partition, offset) order, paged by offset per partition."""
        window: Doc = {}
        if since is not None:
            window["$gte"] = since
        if until is not None:
            window["$lt"] = until
        base: Doc = {"received_at": window} if window else {}
        with unavailable_on_driver_errors():
            partitions = sorted(await self._events.distinct("partition", base))
        for partition in partitions:
            last_offset = -1
            while True:
                with unavailable_on_driver_errors():
                    cursor = (
                        self._events.find(
                            {**base, "partition": partition, "offset": {"$gt": last_offset}}
                        )
                        .sort("offset", 1)
                        .limit(batch_size)
                    )
                    page = [positioned_from_document(doc) async for doc in cursor]
                if not page:
                    break
                last_offset = page[-1].position.offset
                yield page

    async def count(self) -> int:
        """How many events are stored."""
        with unavailable_on_driver_errors():
            return await self._events.count_documents({})


def _position_guard(session_id: str, partition: int, offset: int) -> Doc:
    field = f"applied.{applied_key(partition)}"
    return {"_id": session_id, "$or": [{field: {"$lt": offset}}, {field: {"$exists": False}}]}


def _session_update(delta: SessionDelta) -> Doc:
    update: Doc = {
        "$set": {
            f"applied.{applied_key(delta.partition)}": delta.last_offset,
            "labels": delta.labels,
            "runtime": delta.runtime,
            "hostname": delta.hostname,
        },
        "$min": {"first_seen": delta.first_seen},
        "$max": {"last_seen": delta.last_seen},
        "$inc": {
            "sample_count": delta.sample_count,
            "utilization_sum_millipct": delta.utilization_sum_millipct,
            "utilization_samples": delta.utilization_samples,
        },
        "$addToSet": {"gpu_models": {"$each": sorted(delta.gpu_models)}},
    }
    if delta.peak_memory_used_mib is not None:
        update["$max"]["peak_memory_used_mib"] = delta.peak_memory_used_mib
    else:
        update["$setOnInsert"] = {"peak_memory_used_mib": None}
    return update


def _gpu_guard(latest: GpuLatest) -> Doc:
    return {
        "_id": latest.gpu_uuid,
        "$or": [
            {"last_seen": {"$lt": latest.occurred_at}},
            {"last_seen": latest.occurred_at, "event_id": {"$lt": latest.event_id}},
        ],
    }


def _gpu_update(latest: GpuLatest) -> Doc:
    return {
        "$set": {
            "gpu_name": latest.gpu_name,
            "session_id": latest.session_id,
            "last_seen": latest.occurred_at,
            "event_id": latest.event_id,
            "partition": latest.partition,
            "offset": latest.offset,
            "sample": latest.sample,
        }
    }


def _session_view(doc: Doc) -> SessionView:
    return SessionView(
        session_id=doc["_id"],
        first_seen=doc["first_seen"],
        last_seen=doc["last_seen"],
        sample_count=doc["sample_count"],
        gpu_models=sorted(doc.get("gpu_models", [])),
        peak_memory_used_mib=doc.get("peak_memory_used_mib"),
        mean_utilization_pct=mean_utilization_pct(
            doc["utilization_sum_millipct"], doc["utilization_samples"]
        ),
        labels=doc.get("labels", {}),
        runtime=doc["runtime"],
        hostname=doc["hostname"],
    )


def _gpu_view(doc: Doc) -> GpuView:
    return GpuView(
        gpu_uuid=doc["_id"],
        gpu_name=doc["gpu_name"],
        session_id=doc["session_id"],
        last_seen=doc["last_seen"],
        event_id=doc["event_id"],
        sample=doc["sample"],
    )


class MongoProjections:
    """The ``sessions`` and ``gpus`` collections."""

    def __init__(self, database: AsyncDatabase[Doc]) -> None:
        self._sessions: AsyncCollection[Doc] = database["sessions"]
        self._gpus: AsyncCollection[Doc] = database["gpus"]

    async def apply(self, events: Sequence[PositionedEvent]) -> None:
        """One guarded upsert per session and per GPU; a rejected guard takes the slow path."""
        with unavailable_on_driver_errors():
            await self._apply_sessions(events)
            await self._apply_gpus(events)

    async def _apply_sessions(self, events: Sequence[PositionedEvent]) -> None:
        groups = group_by_session(events)
        await self._bounded_gather(
            self._apply_session_group(session_id, partition, group)
            for (session_id, partition), group in groups.items()
        )

    async def _apply_session_group(
        self, session_id: str, partition: int, group: list[PositionedEvent]
    ) -> None:
        """Fold the group into one guarded upsert; if the guard rejects it, apply the rest."""
        try:
            await self._sessions.update_one(
                _position_guard(session_id, partition, group[0].position.offset),
                _session_update(fold_session(group)),
                upsert=True,
            )
        except DuplicateKeyError:
            await self._apply_session_events_after_applied(session_id, partition, group)

    async def _apply_session_events_after_applied(
        self, session_id: str, partition: int, group: list[PositionedEvent]
    ) -> None:
        """Apply only the events past the session's applied offset (after a partial apply)."""
        while True:
            applied = await self.applied_offset(session_id, partition)
            fresh = [item for item in group if applied is None or item.position.offset > applied]
            if not fresh:
                return
            try:
                await self._sessions.update_one(
                    _position_guard(session_id, partition, fresh[0].position.offset),
                    _session_update(fold_session(fresh)),
                    upsert=True,
                )
            except DuplicateKeyError:
                continue  # another writer moved the position meanwhile; look again
            return

    async def _apply_gpus(self, events: Sequence[PositionedEvent]) -> None:
        await self._bounded_gather(self._apply_gpu(latest) for latest in latest_gpu_samples(events))

    async def _apply_gpu(self, latest: GpuLatest) -> None:
        # A duplicate key means the stored sample is newer: nothing to do.
        with contextlib.suppress(DuplicateKeyError):
            await self._gpus.update_one(_gpu_guard(latest), _gpu_update(latest), upsert=True)

    async def _bounded_gather(self, updates: Iterable[Awaitable[None]]) -> None:
        """Run single-document updates concurrently, at most ``MAX_CONCURRENT_UPDATES`` at once.

        One ``update_one`` per document rather than ``bulk_write``: FerretDB v1 answers an
        unordered bulk update containing a duplicate-key upsert without ``nModified``, which
        the driver cannot parse.
        """
        semaphore = asyncio.Semaphore(MAX_CONCURRENT_UPDATES)

        async def bounded(update: Awaitable[None]) -> None:
            async with semaphore:
                await update

        await asyncio.gather(*(bounded(update) for update in updates))

    async def reset(self) -> None:
        """Remove every projected document."""
        with unavailable_on_driver_errors():
            await self._sessions.delete_many({})
            await self._gpus.delete_many({})

    async def applied_offset(self, session_id: str, partition: int) -> int | None:
        """The offset of the last event of the session applied from ``partition``."""
        with unavailable_on_driver_errors():
            doc = await self._sessions.find_one({"_id": session_id}, {"applied": 1})
        if doc is None:
            return None
        value = doc.get("applied", {}).get(applied_key(partition))
        return int(value) if value is not None else None

    async def session(self, session_id: str) -> SessionView | None:
        """One session."""
        with unavailable_on_driver_errors():
            doc = await self._sessions.find_one({"_id": session_id})
        return _session_view(doc) if doc else None

    async def sessions(self, query: SessionQuery) -> Page[SessionView]:
        """A page of sessions ordered by id."""
        conditions: Doc = {}
        if query.after is not None:
            conditions["_id"] = {"$gt": query.after}
        if query.label is not None:
            conditions[f"labels.{query.label[0]}"] = query.label[1]
        if query.gpu_model is not None:
            conditions["gpu_models"] = query.gpu_model
        if query.runtime is not None:
            conditions["runtime"] = query.runtime
        if query.seen_since is not None:
            conditions["last_seen"] = {"$gte": query.seen_since}
        if query.seen_until is not None:
            conditions["first_seen"] = {"$lt": query.seen_until}
        with unavailable_on_driver_errors():
            cursor = self._sessions.find(conditions).sort("_id", 1).limit(query.limit + 1)
            docs = [doc async for doc in cursor]
        items = [_session_view(doc) for doc in docs[: query.limit]]
        more = len(docs) > query.limit
        return Page(items=items, next_cursor=items[-1].session_id if more else None)

    async def gpu(self, gpu_uuid: str) -> GpuView | None:
        """One GPU."""
        with unavailable_on_driver_errors():
            doc = await self._gpus.find_one({"_id": gpu_uuid})
        return _gpu_view(doc) if doc else None

    async def gpus(self, query: GpuQuery) -> Page[GpuView]:
        """A page of GPUs ordered by UUID."""
        conditions: Doc = {}
        if query.after is not None:
            conditions["_id"] = {"$gt": query.after}
        if query.session_id is not None:
            conditions["session_id"] = query.session_id
        if query.gpu_name is not None:
            conditions["gpu_name"] = query.gpu_name
        with unavailable_on_driver_errors():
            cursor = self._gpus.find(conditions).sort("_id", 1).limit(query.limit + 1)
            docs = [doc async for doc in cursor]
        items = [_gpu_view(doc) for doc in docs[: query.limit]]
        more = len(docs) > query.limit
        return Page(items=items, next_cursor=items[-1].gpu_uuid if more else None)
