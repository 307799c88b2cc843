"""Writes to the ``sessions`` and ``gpus`` read models: exactly once, however often a batch is
delivered.

Each update carries its guard in the filter (:func:`~.documents.session_guard`,
:func:`~.documents.gpu_guard`), atomic on one document, so a repeat matches nothing.
Projections cost a few round trips per chunk of aggregates (read the aggregates' positions,
insert the new ones, one bulk of guarded updates per collection) rather than one per aggregate:
on FerretDB every write operation costs milliseconds whatever it does, so the count of
operations, not their size, bounds the worker's throughput. Every call carries at most
``WriteLimits.chunk`` statements and a deadline (see :mod:`ca4_worker.application.bounded`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from ca4_worker.application.bounded import WriteLimits, in_bounded_calls, task_group
from ca4_worker.domain.projection import (
    GpuLatest,
    fold_session,
    gpus_kept,
    group_by_session,
    latest_gpu_samples,
    past_applied,
)
from ca4_worker.domain.records import PositionedEvent
from ca4_worker.persistence.database import (
    database_call,
    ensure_fits,
    insert_ignoring_duplicates,
)
from ca4_worker.persistence.documents import (
    GPUS,
    SESSIONS,
    Doc,
    gpu_document,
    gpu_guard,
    gpu_update,
    new_session_document,
    session_guard,
    session_update,
)
from ca4_worker.persistence.queries import MongoReadModels


def _groups_per_session(
    events: Iterable[PositionedEvent],
) -> dict[str, dict[int, list[PositionedEvent]]]:
    """Events per session, then per partition: a chunk of sessions keeps all of a session's
    partitions together, so no two calls in flight write the same document."""
    sessions: dict[str, dict[int, list[PositionedEvent]]] = {}
    for (session_id, partition), group in group_by_session(events).items():
        sessions.setdefault(session_id, {})[partition] = group
    return sessions


async def _insert_missing(collection: AsyncCollection[Doc], documents: list[Doc]) -> set[str]:
    """Insert ``documents`` unordered; the ids inserted (a duplicate means another writer won).

    Creating documents by insert rather than by upsert keeps every later write a plain
    guarded update.
    """
    rejected = await insert_ignoring_duplicates(collection, documents)
    return {doc["_id"] for index, doc in enumerate(documents) if index not in rejected}


class MongoProjections(MongoReadModels):
    """The ``sessions`` and ``gpus`` collections: guarded writes, and the reads they inherit."""

    def __init__(
        self,
        database: AsyncDatabase[Doc],
        *,
        limits: WriteLimits | None = None,
        read_deadline_s: float | None = None,
    ) -> None:
        super().__init__(database, read_deadline_s=read_deadline_s)
        self._sessions: AsyncCollection[Doc] = database[SESSIONS]
        self._gpus: AsyncCollection[Doc] = database[GPUS]
        self._limits = limits or WriteLimits()

    async def apply(self, events: Sequence[PositionedEvent]) -> None:
        """Sessions and GPUs in chunks of aggregates, at most ``limits.concurrency`` calls in
        flight between them, each call at most ``limits.chunk`` statements.

        The sessions are read first: their stored GPUs say which samples may reach GPU
        documents (:func:`~ca4_worker.domain.projection.gpus_kept`), and the sessions' own
        writes start from the same read."""
        slots = asyncio.Semaphore(self._limits.concurrency)
        sessions = _groups_per_session(events)
        stored: dict[str, Doc] = {}
        for found in await in_bounded_calls(
            sorted(sessions),
            self._stored_sessions,
            limits=self._limits,
            slots=slots,
            what="read sessions",
        ):
            stored.update(found)
        kept = gpus_kept(
            {
                (session_id, partition): group
                for session_id, groups in sessions.items()
                for partition, group in groups.items()
            },
            stored,
        )
        tried: set[str] = set()

        async def apply_sessions(
            chunk: Sequence[tuple[str, dict[int, list[PositionedEvent]]]],
        ) -> None:
            # A chunk tried again (an outage, or halved after a timeout) reads afresh: its
            # first try may have written.
            session_ids = [session_id for session_id, _ in chunk]
            first_try = tried.isdisjoint(session_ids)
            tried.update(session_ids)
            await self._apply_sessions(chunk, stored if first_try else None)

        async with task_group() as group:
            group.create_task(
                in_bounded_calls(
                    list(sessions.items()),
                    apply_sessions,
                    limits=self._limits,
                    slots=slots,
                    what="project sessions",
                )
            )
            group.create_task(
                in_bounded_calls(
                    latest_gpu_samples(events, kept),
                    self._apply_gpus,
                    limits=self._limits,
                    slots=slots,
                    what="project GPUs",
                )
            )

    async def _apply_sessions(
        self,
        sessions: Sequence[tuple[str, dict[int, list[PositionedEvent]]]],
        read_before: dict[str, Doc] | None,
    ) -> None:
        """Fold each (session, partition) group past its applied offset into one guarded write.

        Starts from ``read_before``, the sessions as read before the round, or reads them
        (``None``); a redelivered batch costs that read and no write. Creates unknown sessions
        with one unordered insert and updates the rest in one bulk. A guard that matches
        nothing means another writer moved the position since the read: read again and apply
        whatever is still fresh.
        """
        deadline = self._limits.deadline_s
        pending = {
            (session_id, partition): group
            for session_id, groups in sessions
            for partition, group in groups.items()
        }
        stored = (
            await self._stored_sessions(session_id for session_id, _ in sessions)
            if read_before is None
            else {
                session_id: read_before[session_id]
                for session_id, _ in sessions
                if session_id in read_before
            }
        )
        while pending:
            pending = {
                key: fresh
                for key, group in pending.items()
                if (fresh := past_applied(group, stored.get(key[0], {}).get("applied"), key[1]))
            }
            # One write per document per round (a session seen on several partitions, rare),
            # so each update knows the models and GPUs stored before it.
            this_round: dict[str, tuple[str, int]] = {}
            for key in pending:
                this_round.setdefault(key[0], key)
            new_documents = [
                ensure_fits(new_session_document(fold_session(pending[key])), what="session")
                for session_id, key in this_round.items()
                if session_id not in stored
            ]
            with database_call(deadline):
                created = await _insert_missing(self._sessions, new_documents)
            for session_id in created:
                del pending[this_round.pop(session_id)]
            if this_round:
                updates = [
                    UpdateOne(
                        session_guard(*key, pending[key][0].position.offset),
                        ensure_fits(
                            session_update(fold_session(pending[key]), stored.get(key[0], {})),
                            what=f"update of session {key[0]}",
                        ),
                    )
                    for key in this_round.values()
                ]
                with database_call(deadline):
                    result = await self._sessions.bulk_write(updates, ordered=False)
                if result.matched_count == len(this_round):
                    for key in this_round.values():
                        del pending[key]
            if pending:
                stored = await self._stored_sessions({session_id for session_id, _ in pending})

    async def _stored_sessions(self, session_ids: Iterable[str]) -> dict[str, Doc]:
        """``applied``, ``gpu_models`` and ``gpu_uuids`` of each existing session among
        ``session_ids``."""
        with database_call(self._limits.deadline_s):
            cursor = self._sessions.find(
                {"_id": {"$in": sorted(session_ids)}},
                {"applied": 1, "gpu_models": 1, "gpu_uuids": 1},
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
            ensure_fits(gpu_document(latest), what="GPU")
            for latest in newer
            if latest.document_id not in stored
        ]
        with database_call(deadline):
            created = await _insert_missing(self._gpus, new_documents)
        updates = [
            UpdateOne(
                gpu_guard(latest),
                ensure_fits(gpu_update(latest), what=f"update of GPU {latest.gpu_uuid}"),
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
