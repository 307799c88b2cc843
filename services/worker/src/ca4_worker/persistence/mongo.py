"""MongoDB adapters (FerretDB locally, DocumentDB in production) for the store and projections.

Only features FerretDB v1 and DocumentDB share are used: unordered ``insert_many``, unique
``_id``, unordered ``bulk_write`` of single-document updates with
``$set/$inc/$min/$max/$addToSet``; no upserts in bulks, no transactions and no aggregation
pipelines. Each projection update carries its own guard in the filter, so it is atomic on one
document and a repeat is a no-op.

Projections cost a few round trips per chunk of aggregates (read the aggregates' positions,
insert the new ones, one bulk of guarded updates per collection) rather than one per aggregate:
on FerretDB every write operation costs milliseconds whatever it does, so the count of
operations, not their size, bounds the worker's throughput. Every call carries at most
``WriteLimits.chunk`` statements and a deadline (see :mod:`ca4_worker.application.bounded`).

Driver errors are sorted by cause in one place (:func:`database_call`): an unreachable or slow
database is an outage (retried), a refusal that would repeat on every try is poison
(:class:`~ca4_worker.application.ports.RejectedError`, dead-lettered by the caller).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import bson
import pymongo
from beanie import init_beanie
from bson.errors import InvalidDocument
from ca4_schemas import LEGACY_TENANT, decode_event
from pymongo import AsyncMongoClient, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)

from ca4_worker.application.bounded import WriteLimits, in_bounded_calls, task_group
from ca4_worker.application.ports import (
    AppendOutcome,
    RejectedError,
    TimedOutError,
    UnavailableError,
)
from ca4_worker.application.views import GpuQuery, GpuView, Page, SessionQuery, SessionView
from ca4_worker.domain.projection import (
    GpuLatest,
    SessionDelta,
    applied_key,
    capped_gpu_models,
    fold_session,
    gpu_document_id,
    group_by_session,
    latest_gpu_samples,
    mean_utilization_pct,
)
from ca4_worker.domain.records import Position, PositionedEvent
from ca4_worker.persistence.documents import DOCUMENT_MODELS

DUPLICATE_KEY = 11000
Doc = dict[str, Any]


# Server error codes that mean "not now" rather than "never": shutdown, elections, network,
# time limits, lock and write conflicts, DocumentDB throttling. Every other server error about
# a write is taken as the data's fault (poison).
TRANSIENT_SERVER_CODES = frozenset(
    {6, 7, 24, 46, 50, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 16500}
)
DOCUMENT_TOO_LARGE_CODES = frozenset({10334, 17419, 17420})
PROJECTION_MAX_BYTES = 1024 * 1024
"""Size guard for one projection write: far below the 16 MiB document limit, far above what
the capped read models need (a session document is a few KiB, a GPU document one sample)."""


def _server_error_is_transient(code: int | None, labels: Iterable[str]) -> bool:
    return code in TRANSIENT_SERVER_CODES or bool(
        {"RetryableWriteError", "TransientTransactionError"} & set(labels)
    )


def classify_driver_error(error: Exception) -> Exception:
    """The worker's view of a driver error: timeout, outage or poison (see module docstring)."""
    if isinstance(error, InvalidDocument | OverflowError):
        # Refused by the driver before sending (too large, or an int BSON cannot hold).
        too_large = "too large" in str(error).lower()
        return RejectedError("document_too_large" if too_large else "invalid_document", str(error))
    if not isinstance(error, PyMongoError):
        return error
    if error.timeout:
        return TimedOutError(f"database call timed out: {error}")
    return _server_rejection(error) or UnavailableError(f"database unavailable: {error}")


def _server_rejection(error: PyMongoError) -> RejectedError | None:
    """The refusal in ``error`` when the server refused the data itself; None for an outage."""
    labels: list[str] = []
    if isinstance(error, BulkWriteError):
        if error.details.get("writeConcernErrors"):
            return None
        failures = error.details.get("writeErrors", [])
        codes = {item.get("code") for item in failures}
        message = str(failures[0].get("errmsg", error)) if failures else str(error)
    elif isinstance(error, OperationFailure) and not isinstance(error, WriteConcernError):
        codes = {error.code}
        message = str(error)
        labels = list((error.details or {}).get("errorLabels", []))
    else:  # connection failures, write concern errors: the database, not the data
        return None
    if not codes or all(_server_error_is_transient(code, labels) for code in codes):
        return None
    if codes & DOCUMENT_TOO_LARGE_CODES:
        return RejectedError("document_too_large", message)
    return RejectedError("database_rejected", f"codes {sorted(map(str, codes))}: {message}")


@contextmanager
def database_call(deadline_s: float | None = None) -> Iterator[None]:
    """One call to the database: under ``deadline_s`` (client-side), errors sorted by cause.

    Callers retry :class:`UnavailableError` (an outage), split the work on
    :class:`TimedOutError` and dead-letter on :class:`RejectedError`.
    """
    try:
        if deadline_s is None:
            yield
        else:
            with pymongo.timeout(deadline_s):
                yield
    except (PyMongoError, InvalidDocument, OverflowError) as error:
        raise classify_driver_error(error) from error


def ensure_fits(document: Doc, *, what: str) -> Doc:
    """``document`` unchanged, or :class:`RejectedError` when it is past the size guard."""
    size = len(bson.encode(document))
    if size > PROJECTION_MAX_BYTES:
        raise RejectedError(
            "document_too_large",
            f"{what} would be {size} bytes, over the {PROJECTION_MAX_BYTES}-byte guard",
        )
    return document


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
    with database_call():
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

    def __init__(
        self, database: AsyncDatabase[Doc], *, topic: str, deadline_s: float | None = None
    ) -> None:
        self._events: AsyncCollection[Doc] = database["events"]
        self._topic = topic
        self._deadline_s = deadline_s

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
            canonical = await self._positions([item.event_id for item in duplicates])
            for item in duplicates:
                if canonical.get(item.event_id) == item.position:
                    outcome.redelivered.append(item)
                else:
                    outcome.duplicates.append(item)
        return outcome

    async def _positions(self, event_ids: list[str]) -> dict[str, Position]:
        with database_call():
            cursor = self._events.find({"_id": {"$in": event_ids}}, {"partition": 1, "offset": 1})
            return {doc["_id"]: Position(doc["partition"], doc["offset"]) async for doc in cursor}

    async def get(self, event_id: str, *, tenant: str | None) -> PositionedEvent | None:
        """The stored event, if any and of ``tenant``.

        Version-1 events have no ``event.tenant`` and so match only ``tenant=None``: they
        belong to :data:`LEGACY_TENANT`, which no key holds.
        """
        conditions: Doc = {"_id": event_id}
        if tenant is not None:
            conditions["event.tenant"] = tenant
        with database_call():
            doc = await self._events.find_one(conditions)
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
        with database_call():
            partitions = sorted(await self._events.distinct("partition", base))
        for partition in partitions:
            last_offset = -1
            while True:
                with database_call():
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
        with database_call():
            return await self._events.count_documents({})


def _position_guard(session_id: str, partition: int, offset: int) -> Doc:
    field = f"applied.{applied_key(partition)}"
    return {"_id": session_id, "$or": [{field: {"$lt": offset}}, {field: {"$exists": False}}]}


def _session_update(delta: SessionDelta, stored_models: list[str]) -> Doc:
    models, dropped = capped_gpu_models(stored_models, delta)
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
            "gpu_models_dropped": dropped,
        },
    }
    if models:
        update["$addToSet"] = {"gpu_models": {"$each": models}}
    if delta.peak_memory_used_mib is not None:
        update["$max"]["peak_memory_used_mib"] = delta.peak_memory_used_mib
    else:
        update["$setOnInsert"] = {"peak_memory_used_mib": None}
    return ensure_fits(update, what=f"update of session {delta.session_id}")


def _gpu_guard(latest: GpuLatest) -> Doc:
    return {
        "_id": latest.document_id,
        "$or": [
            {"last_seen": {"$lt": latest.occurred_at}},
            {"last_seen": latest.occurred_at, "event_id": {"$lt": latest.event_id}},
        ],
    }


def _gpu_update(latest: GpuLatest) -> Doc:
    return {
        "$set": {
            "gpu_uuid": latest.gpu_uuid,
            "tenant": latest.tenant,
            "gpu_name": latest.gpu_name,
            "session_id": latest.session_id,
            "last_seen": latest.occurred_at,
            "event_id": latest.event_id,
            "partition": latest.partition,
            "offset": latest.offset,
            "sample": latest.sample,
        }
    }


def _groups_per_session(
    events: Iterable[PositionedEvent],
) -> dict[str, dict[int, list[PositionedEvent]]]:
    """Events per session, then per partition: a chunk of sessions keeps all of a session's
    partitions together, so no two calls in flight write the same document."""
    sessions: dict[str, dict[int, list[PositionedEvent]]] = {}
    for (session_id, partition), group in group_by_session(events).items():
        sessions.setdefault(session_id, {})[partition] = group
    return sessions


def _past_applied(
    group: list[PositionedEvent], applied: dict[str, int] | None, partition: int
) -> list[PositionedEvent]:
    """The events of ``group`` (one session and partition) after the session's applied offset."""
    offset = (applied or {}).get(applied_key(partition))
    return [item for item in group if offset is None or item.position.offset > offset]


def _new_session_document(delta: SessionDelta) -> Doc:
    """A session document holding exactly ``delta`` (what the guarded update would build)."""
    models, dropped = capped_gpu_models((), delta)
    document = {
        "_id": delta.session_id,
        "tenant": delta.tenant,
        "applied": {applied_key(delta.partition): delta.last_offset},
        "first_seen": delta.first_seen,
        "last_seen": delta.last_seen,
        "sample_count": delta.sample_count,
        "gpu_models": models,
        "gpu_models_dropped": dropped,
        "peak_memory_used_mib": delta.peak_memory_used_mib,
        "utilization_sum_millipct": delta.utilization_sum_millipct,
        "utilization_samples": delta.utilization_samples,
        "labels": delta.labels,
        "runtime": delta.runtime,
        "hostname": delta.hostname,
    }
    return ensure_fits(document, what=f"session {delta.session_id}")


def _new_gpu_document(latest: GpuLatest) -> Doc:
    return ensure_fits({"_id": latest.document_id, **_gpu_update(latest)["$set"]}, what="GPU")


async def insert_ignoring_duplicates(
    collection: AsyncCollection[Doc], documents: list[Doc]
) -> set[int]:
    """Insert ``documents`` unordered; the indexes refused as duplicates (already stored).

    Any other refusal is raised (and classified by :func:`database_call`).
    """
    if not documents:
        return set()
    try:
        await collection.insert_many(documents, ordered=False)
    except BulkWriteError as error:
        write_errors = error.details.get("writeErrors", [])
        if error.details.get("writeConcernErrors") or any(
            item.get("code") != DUPLICATE_KEY for item in write_errors
        ):
            raise
        return {int(item["index"]) for item in write_errors}
    return set()


async def _insert_missing(collection: AsyncCollection[Doc], documents: list[Doc]) -> set[str]:
    """Insert ``documents`` unordered; the ids inserted (a duplicate means another writer won).

    Creating documents by insert rather than by upsert keeps every later write a plain
    guarded update: FerretDB v1 answers an unordered bulk whose upsert hits a duplicate key
    without ``nModified``, which the driver cannot parse.
    """
    rejected = await insert_ignoring_duplicates(collection, documents)
    return {doc["_id"] for index, doc in enumerate(documents) if index not in rejected}


def _session_view(doc: Doc) -> SessionView:
    return SessionView(
        session_id=doc["_id"],
        tenant=doc.get("tenant", LEGACY_TENANT),
        first_seen=doc["first_seen"],
        last_seen=doc["last_seen"],
        sample_count=doc["sample_count"],
        gpu_models=sorted(doc.get("gpu_models", [])),
        gpu_models_dropped=doc.get("gpu_models_dropped", 0),
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
        # Documents written before tenancy have the bare UUID as their id and no tenant.
        gpu_uuid=doc.get("gpu_uuid", doc["_id"]),
        tenant=doc.get("tenant", LEGACY_TENANT),
        gpu_name=doc["gpu_name"],
        session_id=doc["session_id"],
        last_seen=doc["last_seen"],
        event_id=doc["event_id"],
        sample=doc["sample"],
    )


def _tenant_filter(tenant: str | None) -> Doc:
    """The query condition that keeps a read inside ``tenant`` (``None``: every tenant)."""
    return {} if tenant is None else {"tenant": tenant}


async def guards_belong_in_filters(database: AsyncDatabase[Doc]) -> bool:
    """Whether projection guards should travel in the update filter (MongoDB, DocumentDB).

    Not on FerretDB v1: it reads and decodes the whole collection for every update whose filter
    is more than ``{_id: ...}`` (SQLite backend), which made each guarded write cost O(sessions),
    and it does not make an update's read and write atomic anyway (``handler/msg_update.go``).
    There the guard is checked against the state read at the start of each round and the write
    filters on ``_id`` alone: redelivery and replay stay exactly-once; only two workers writing
    the same session at the same instant (FerretDB's own lost update) are not covered.
    """
    with database_call():
        info = await database.client.admin.command("buildInfo")
    return "ferretdbVersion" not in info


class MongoProjections:
    """The ``sessions`` and ``gpus`` collections."""

    def __init__(
        self,
        database: AsyncDatabase[Doc],
        *,
        guards_in_filters: bool = True,
        limits: WriteLimits | None = None,
    ) -> None:
        self._sessions: AsyncCollection[Doc] = database["sessions"]
        self._gpus: AsyncCollection[Doc] = database["gpus"]
        self._guards_in_filters = guards_in_filters
        self._limits = limits or WriteLimits()

    def _filter(self, guarded: Doc) -> Doc:
        """The update filter for a guarded write: whole, or ``_id`` alone (see
        :func:`guards_belong_in_filters`; the guard was then checked on the round's read)."""
        return guarded if self._guards_in_filters else {"_id": guarded["_id"]}

    async def apply(self, events: Sequence[PositionedEvent]) -> None:
        """Sessions and GPUs in chunks of aggregates, at most ``limits.concurrency`` calls in
        flight between them, each call at most ``limits.chunk`` statements."""
        slots = asyncio.Semaphore(self._limits.concurrency)
        async with task_group() as group:
            group.create_task(
                in_bounded_calls(
                    list(_groups_per_session(events).items()),
                    self._apply_sessions,
                    limits=self._limits,
                    slots=slots,
                    what="project sessions",
                )
            )
            group.create_task(
                in_bounded_calls(
                    latest_gpu_samples(events),
                    self._apply_gpus,
                    limits=self._limits,
                    slots=slots,
                    what="project GPUs",
                )
            )

    async def _apply_sessions(
        self, sessions: Sequence[tuple[str, dict[int, list[PositionedEvent]]]]
    ) -> None:
        """Fold each (session, partition) group past its applied offset into one guarded write.

        Reads the applied offsets first, so a redelivered batch costs one read and no write;
        creates unknown sessions with one unordered insert; updates the rest in one bulk.
        A guard that matches nothing means another writer moved the position since the read:
        read again and apply whatever is still fresh.
        """
        deadline = self._limits.deadline_s
        pending = {
            (session_id, partition): group
            for session_id, groups in sessions
            for partition, group in groups.items()
        }
        while pending:
            with database_call(deadline):
                stored = await self._stored_sessions({session_id for session_id, _ in pending})
            pending = {
                key: fresh
                for key, group in pending.items()
                if (fresh := _past_applied(group, stored.get(key[0], {}).get("applied"), key[1]))
            }
            # One write per document per round: FerretDB v1 stalls on an unordered bulk that
            # updates one document twice (a session seen on several partitions, rare).
            this_round: dict[str, tuple[str, int]] = {}
            for key in pending:
                this_round.setdefault(key[0], key)
            new_documents = [
                _new_session_document(fold_session(pending[key]))
                for session_id, key in this_round.items()
                if session_id not in stored
            ]
            with database_call(deadline):
                created = await _insert_missing(self._sessions, new_documents)
            for session_id in created:
                del pending[this_round.pop(session_id)]
            if not this_round:
                continue
            updates = [
                UpdateOne(
                    self._filter(_position_guard(*key, pending[key][0].position.offset)),
                    _session_update(
                        fold_session(pending[key]), stored.get(key[0], {}).get("gpu_models", [])
                    ),
                )
                for key in this_round.values()
            ]
            with database_call(deadline):
                result = await self._sessions.bulk_write(updates, ordered=False)
            if result.matched_count == len(this_round):
                for key in this_round.values():
                    del pending[key]

    async def _stored_sessions(self, session_ids: Iterable[str]) -> dict[str, Doc]:
        """``applied`` and ``gpu_models`` of each existing session among ``session_ids``."""
        cursor = self._sessions.find(
            {"_id": {"$in": sorted(session_ids)}}, {"applied": 1, "gpu_models": 1}
        )
        return {doc["_id"]: doc async for doc in cursor}

    async def _apply_gpus(self, candidates: Sequence[GpuLatest]) -> None:
        """Write each GPU's newest sample where it is newer than the stored one.

        A guard that matches nothing means a newer sample landed meanwhile: nothing to do.
        """
        deadline = self._limits.deadline_s
        with database_call(deadline):
            cursor = self._gpus.find(
                {"_id": {"$in": [latest.document_id for latest in candidates]}},
                {"last_seen": 1, "event_id": 1},
            )
            stored = {doc["_id"]: (doc["last_seen"], doc["event_id"]) async for doc in cursor}
        newer = [
            latest
            for latest in candidates
            if latest.document_id not in stored or latest.order_key > stored[latest.document_id]
        ]
        new_documents = [
            _new_gpu_document(latest) for latest in newer if latest.document_id not in stored
        ]
        with database_call(deadline):
            created = await _insert_missing(self._gpus, new_documents)
        updates = [
            UpdateOne(
                self._filter(_gpu_guard(latest)),
                ensure_fits(_gpu_update(latest), what=f"update of GPU {latest.gpu_uuid}"),
            )
            for latest in newer
            if latest.document_id not in created
        ]
        if updates:
            with database_call(deadline):
                await self._gpus.bulk_write(updates, ordered=False)

    async def reset(self) -> None:
        """Remove every projected document."""
        with database_call():
            await self._sessions.delete_many({})
            await self._gpus.delete_many({})

    async def applied_offset(self, session_id: str, partition: int) -> int | None:
        """The offset of the last event of the session applied from ``partition``."""
        with database_call():
            doc = await self._sessions.find_one({"_id": session_id}, {"applied": 1})
        if doc is None:
            return None
        value = doc.get("applied", {}).get(applied_key(partition))
        return int(value) if value is not None else None

    async def session_owners(self, session_ids: Iterable[str]) -> dict[str, str]:
        """The owner of each session with a document (pre-tenancy ones: the legacy tenant)."""
        with database_call():
            cursor = self._sessions.find({"_id": {"$in": sorted(session_ids)}}, {"tenant": 1})
            return {doc["_id"]: doc.get("tenant", LEGACY_TENANT) async for doc in cursor}

    async def session(self, session_id: str, *, tenant: str | None) -> SessionView | None:
        """One session, if of ``tenant`` (filtered in the query)."""
        with database_call():
            doc = await self._sessions.find_one({"_id": session_id, **_tenant_filter(tenant)})
        return _session_view(doc) if doc else None

    async def sessions(self, query: SessionQuery) -> Page[SessionView]:
        """A page of sessions ordered by id."""
        conditions: Doc = _tenant_filter(query.tenant)
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
        with database_call():
            cursor = self._sessions.find(conditions).sort("_id", 1).limit(query.limit + 1)
            docs = [doc async for doc in cursor]
        items = [_session_view(doc) for doc in docs[: query.limit]]
        more = len(docs) > query.limit
        return Page(items=items, next_cursor=items[-1].session_id if more else None)

    async def gpu(self, gpu_uuid: str, *, tenant: str | None) -> GpuView | None:
        """``tenant``'s view of one GPU (its own document), or the newest of any tenant's."""
        with database_call():
            if tenant is not None:
                doc = await self._gpus.find_one(
                    {"_id": gpu_document_id(tenant, gpu_uuid), "tenant": tenant}
                )
            else:
                cursor = (
                    self._gpus.find({"$or": [{"gpu_uuid": gpu_uuid}, {"_id": gpu_uuid}]})
                    .sort([("last_seen", -1), ("event_id", -1)])
                    .limit(1)
                )
                newest = [doc async for doc in cursor]
                doc = newest[0] if newest else None
        return _gpu_view(doc) if doc else None

    async def gpus(self, query: GpuQuery) -> Page[GpuView]:
        """A page of GPUs ordered by document id (tenant, then UUID); the cursor is opaque."""
        conditions: Doc = _tenant_filter(query.tenant)
        if query.after is not None:
            conditions["_id"] = {"$gt": query.after}
        if query.session_id is not None:
            conditions["session_id"] = query.session_id
        if query.gpu_name is not None:
            conditions["gpu_name"] = query.gpu_name
        with database_call():
            cursor = self._gpus.find(conditions).sort("_id", 1).limit(query.limit + 1)
            docs = [doc async for doc in cursor]
        page = docs[: query.limit]
        more = len(docs) > query.limit
        return Page(
            items=[_gpu_view(doc) for doc in page], next_cursor=page[-1]["_id"] if more else None
        )
