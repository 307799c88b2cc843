"""The read API's reads of the ``sessions`` and ``gpus`` collections, every one confined to a
tenant in the query itself (``None``: a ``read:all`` key, every tenant)."""

from __future__ import annotations

from collections.abc import Iterable

import bson
from bson.raw_bson import RawBSONDocument
from ca4_schemas import LEGACY_TENANT
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from ca4_worker.application.views import (
    GpuQuery,
    GpuView,
    Page,
    SessionQuery,
    SessionView,
    UnknownCursorError,
    page_of,
    read_page,
)
from ca4_worker.domain.projection import applied_key, gpu_document_id, is_tenancy_gpu_document
from ca4_worker.persistence.database import database_call
from ca4_worker.persistence.documents import (
    GPUS,
    SESSION_NOT_READ,
    SESSIONS,
    Doc,
    gpu_state,
    session_state,
)

PAGE_FETCH_BATCH = 16
"""Documents a page fetches per round trip: the driver decodes a whole reply before the first
document is read, fetched past a full page too, so it is a bound in memory. 50 let one read of
crafted GPU documents (about 163 KB of BSON each) decode 8 MB for a page the byte bound cut at
about 6; 16 is 2.6 MB. A find cursor's batch size is fixed once it runs (pymongo refuses to
change it), so later round trips cannot grow: a page of 500 light documents takes 32 round
trips (ceil(501 / 16)), the default 50 takes 4."""


def page_fetch_batch(limit: int) -> int:
    """Documents each round trip of a page of ``limit`` asks for (the one past it included:
    it says whether a next page follows)."""
    return min(limit + 1, PAGE_FETCH_BATCH)


def session_view(doc: Doc) -> SessionView:
    """The API view of a stored session."""
    return session_state(doc).to_view(doc["_id"])


def gpu_view(doc: Doc) -> GpuView:
    """The API view of a stored GPU."""
    return gpu_state(doc).to_view()


def document_id(doc: Doc) -> str:
    """A document's id, the cursor of the pages that end with it."""
    return str(doc["_id"])


def _tenant_filter(tenant: str | None) -> Doc:
    """The query condition that keeps a read inside ``tenant`` (``None``: every tenant)."""
    return {} if tenant is None else {"tenant": tenant}


_SESSION_READ: Doc = dict.fromkeys(SESSION_NOT_READ, 0)


def _session_conditions(query: SessionQuery) -> Doc:
    """The filter of a page of sessions."""
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
    return conditions


class MongoReadModels:
    """Reads of the ``sessions`` and ``gpus`` collections."""

    def __init__(
        self, database: AsyncDatabase[Doc], *, read_deadline_s: float | None = None
    ) -> None:
        self._sessions: AsyncCollection[Doc] = database[SESSIONS]
        self._gpus: AsyncCollection[Doc] = database[GPUS]
        self._read_deadline_s = read_deadline_s
        """Deadline of each read the read API makes (``None``: the driver's socket timeout)."""

    async def _page(
        self,
        collection: AsyncCollection[Doc],
        conditions: Doc,
        limit: int,
        max_bytes: int | None,
        *,
        projection: Doc | None = None,
    ) -> tuple[list[Doc], bool]:
        """One page of documents in id order and whether more follow (:func:`read_page`).

        Fetched as raw BSON, weighed by their bytes and decoded only once on the page: the
        documents fetched past a full page cost their bytes, never their decoding.
        """
        raw: AsyncCollection[RawBSONDocument] = collection.with_options(
            codec_options=collection.codec_options.with_options(document_class=RawBSONDocument)
        )
        with database_call(self._read_deadline_s):
            cursor = raw.find(conditions, projection).sort("_id", 1).limit(limit + 1)
            # Small batches: the driver decodes a whole one, also past where the byte bound cuts.
            async with cursor.batch_size(page_fetch_batch(limit)):
                rows, more = await read_page(
                    cursor, limit=limit, max_bytes=max_bytes, weight=lambda row: len(row.raw)
                )
        return [bson.decode(row.raw, collection.codec_options) for row in rows], more

    async def applied_offset(self, session_id: str, partition: int) -> int | None:
        """The offset of the last event of the session applied from ``partition``."""
        with database_call(self._read_deadline_s):
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
        with database_call(self._read_deadline_s):
            doc = await self._sessions.find_one(
                {"_id": session_id, **_tenant_filter(tenant)}, _SESSION_READ
            )
        return session_view(doc) if doc else None

    async def sessions(self, query: SessionQuery) -> Page[SessionView]:
        """A page of sessions ordered by id."""
        docs, more = await self._page(
            self._sessions,
            _session_conditions(query),
            query.limit,
            query.max_bytes,
            projection=_SESSION_READ,
        )
        return page_of(docs, more=more, view=session_view, cursor=document_id)

    async def gpu(self, gpu_uuid: str, *, tenant: str | None) -> GpuView | None:
        """``tenant``'s view of one GPU (its own document), or (``None``) the document of that
        id, else the newest of any tenant's with that UUID.

        The id is looked up first and alone: UUIDs may hold ``/`` (MIG devices), so another
        tenant's newer GPU whose UUID spells a document id must never answer for it. A document
        projected before tenancy (the bare UUID for id) does not win that way: the newest of
        it and the tenants' GPUs of that UUID does, as before.
        """
        with database_call(self._read_deadline_s):
            if tenant is not None:
                doc = await self._gpus.find_one(
                    {"_id": gpu_document_id(tenant, gpu_uuid), "tenant": tenant}
                )
            else:
                doc = await self._gpus.find_one({"_id": gpu_uuid})
                if doc is None or not is_tenancy_gpu_document(doc):
                    cursor = (
                        self._gpus.find({"$or": [{"gpu_uuid": gpu_uuid}, {"_id": gpu_uuid}]})
                        .sort([("last_seen", -1), ("event_id", -1)])
                        .limit(1)
                    )
                    newest = [doc async for doc in cursor]
                    doc = newest[0] if newest else None
        return gpu_view(doc) if doc else None

    async def gpus(self, query: GpuQuery) -> Page[GpuView]:
        """A page of GPUs ordered by document id (tenant, then UUID); the cursor is opaque."""
        if query.after_names_no_tenant:
            with database_call(self._read_deadline_s):
                known = await self._gpus.find_one({"_id": query.after}, {"_id": 1})
            if known is None:
                raise UnknownCursorError(query.after)
        conditions: Doc = _tenant_filter(query.tenant)
        if query.after is not None:
            conditions["_id"] = {"$gt": query.after}
        if query.session_id is not None:
            conditions["session_id"] = query.session_id
        if query.gpu_name is not None:
            conditions["gpu_name"] = query.gpu_name
        docs, more = await self._page(self._gpus, conditions, query.limit, query.max_bytes)
        return page_of(docs, more=more, view=gpu_view, cursor=document_id)
