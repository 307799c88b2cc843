"""The usage records in MongoDB (FerretDB locally, DocumentDB in production).

Two collections: ``usage_marks`` (one per session: last report per GPU, applied positions) and
``usage_days`` (one per session and UTC day: seconds per GPU). Writes are unordered inserts for
new records and one bulk of ``$set`` updates guarded by ``version`` for the rest, the same
operation mix as the session projection (see :mod:`ca4_worker.persistence.projections`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import date
from typing import Any

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from ca4_worker.application.ports import Projections
from ca4_worker.application.retry import until_available
from ca4_worker.application.usage import (
    LostGuardError,
    ProjectionsWithUsage,
    UsageProjection,
    Versioned,
)
from ca4_worker.core.config import Settings
from ca4_worker.domain.usage import GpuMark, GpuUsage, UsageDay, UsageMarks, UsageRules
from ca4_worker.persistence.database import database_call, ensure_fits, insert_ignoring_duplicates

Doc = dict[str, Any]
READ_BATCH = 100
"""Day records fetched per round trip by a usage report (a record of 64 GPUs with long labels
and uuids decodes to about 120 KiB)."""
USAGE_INDEXES = {
    "usage_days": [
        IndexModel([("day", ASCENDING)], name="day"),
        IndexModel([("tenant", ASCENDING), ("day", ASCENDING)], name="tenant_day"),
    ],
}


def marks_document(marks: UsageMarks, version: int) -> Doc:
    """The stored form of a session's marks."""
    return {
        "_id": marks.session_id,
        "tenant": marks.tenant,
        "version": version,
        "applied": marks.applied,
        "gpus_dropped": marks.gpus_dropped,
        "marks": [
            {"gpu_uuid": mark.gpu_uuid, "at": mark.at, "idle": mark.idle}
            for mark in marks.marks.values()
        ],
    }


def marks_from_document(doc: Doc) -> Versioned[UsageMarks]:
    """A session's marks from their stored form."""
    marks = UsageMarks(
        session_id=doc["_id"],
        tenant=doc["tenant"],
        applied=dict(doc["applied"]),
        marks={
            item["gpu_uuid"]: GpuMark(item["gpu_uuid"], item["at"], item["idle"])
            for item in doc["marks"]
        },
        gpus_dropped=doc.get("gpus_dropped", 0),
    )
    return Versioned(marks, doc["version"])


def day_document(day: UsageDay, version: int) -> Doc:
    """The stored form of a session's day."""
    return {
        "_id": day.document_id,
        "session_id": day.session_id,
        "day": day.day.isoformat(),
        "tenant": day.tenant,
        "version": version,
        "labels": day.labels,
        "runtime": day.runtime,
        "applied": day.applied,
        "gpus": [
            {
                "gpu_uuid": usage.gpu_uuid,
                "gpu_model": usage.gpu_model,
                "held_ms": usage.held_ms,
                "busy_ms": usage.busy_ms,
                "idle_ms": usage.idle_ms,
            }
            for usage in day.gpus.values()
        ],
    }


def day_from_document(doc: Doc) -> Versioned[UsageDay]:
    """A session's day from its stored form."""
    day = UsageDay(
        session_id=doc["session_id"],
        day=date.fromisoformat(doc["day"]),
        tenant=doc["tenant"],
        labels=dict(doc["labels"]),
        runtime=doc["runtime"],
        applied=dict(doc["applied"]),
        gpus={
            item["gpu_uuid"]: GpuUsage(
                item["gpu_uuid"],
                item["gpu_model"],
                item["held_ms"],
                item["busy_ms"],
                item["idle_ms"],
            )
            for item in doc["gpus"]
        },
    )
    return Versioned(day, doc["version"])


class MongoUsageRecords:
    """The ``usage_marks`` and ``usage_days`` collections."""

    def __init__(
        self,
        database: AsyncDatabase[Doc],
        *,
        deadline_s: float | None = None,
    ) -> None:
        self._database = database
        self._marks: AsyncCollection[Doc] = database["usage_marks"]
        self._days: AsyncCollection[Doc] = database["usage_days"]
        self._deadline_s = deadline_s

    async def create_indexes(self) -> None:
        """Create the day indexes (one call per index, as :func:`init_database` does)."""
        with database_call():
            for name, indexes in USAGE_INDEXES.items():
                for index in indexes:
                    await self._database[name].create_indexes([index])

    async def load(
        self, session_ids: Iterable[str], day_ids: Iterable[str]
    ) -> tuple[dict[str, Versioned[UsageMarks]], dict[str, Versioned[UsageDay]]]:
        """The stored marks and days among the ids."""
        with database_call(self._deadline_s):
            marks = {
                doc["_id"]: marks_from_document(doc)
                async for doc in self._marks.find({"_id": {"$in": sorted(session_ids)}})
            }
            days = {
                doc["_id"]: day_from_document(doc)
                async for doc in self._days.find({"_id": {"$in": sorted(day_ids)}})
            }
        return marks, days

    async def save_days(self, days: Sequence[Versioned[UsageDay]]) -> None:
        """Insert new days, update the others under their version."""
        await self._save(
            self._days,
            [(day_document(item.record, item.version + 1), item.version) for item in days],
        )

    async def save_marks(self, marks: Sequence[Versioned[UsageMarks]]) -> None:
        """Insert new marks, update the others under their version."""
        await self._save(
            self._marks,
            [(marks_document(item.record, item.version + 1), item.version) for item in marks],
        )

    async def _save(self, collection: AsyncCollection[Doc], items: list[tuple[Doc, int]]) -> None:
        new = [ensure_fits(doc, what="usage record") for doc, version in items if version == 0]
        updates = [
            UpdateOne(
                {"_id": doc["_id"], "version": version},
                {"$set": ensure_fits({k: v for k, v in doc.items() if k != "_id"}, what="usage")},
            )
            for doc, version in items
            if version > 0
        ]
        with database_call(self._deadline_s):
            refused = await insert_ignoring_duplicates(collection, new)
            matched = (
                (await collection.bulk_write(updates, ordered=False)).matched_count
                if updates
                else 0
            )
        if refused or matched < len(updates):
            raise LostGuardError(f"{collection.name}: a record changed since it was read")

    async def reset(self) -> None:
        """Remove every usage record."""
        with database_call():
            await self._marks.delete_many({})
            await self._days.delete_many({})

    async def days_between(
        self, start: date, end: date, *, tenant: str | None
    ) -> AsyncIterator[UsageDay]:
        """Day records in ``[start, end)`` of ``tenant`` (``None``: every tenant), read
        :data:`READ_BATCH` at a time, so a long range never sits in memory whole."""
        conditions: Doc = {"day": {"$gte": start.isoformat(), "$lt": end.isoformat()}}
        if tenant is not None:
            conditions["tenant"] = tenant
        with database_call():
            async for doc in self._days.find(conditions, batch_size=READ_BATCH):
                yield day_from_document(doc).record


async def with_usage(
    projections: Projections,
    database: AsyncDatabase[Doc],
    settings: Settings,
) -> tuple[Projections, UsageProjection | None]:
    """``projections`` with the usage projection beside them (and it, for the read route), or
    unchanged when ``usage_enabled`` is off."""
    if not settings.usage_enabled:
        return projections, None
    records = MongoUsageRecords(
        database,
        deadline_s=settings.mongo_operation_timeout_ms / 1000,
    )
    await until_available(
        records.create_indexes,
        what="create usage indexes",
        max_backoff_s=settings.retry_max_backoff_s,
    )
    usage = UsageProjection(
        records, rules=usage_rules(settings), limits=settings.projection_limits()
    )
    return ProjectionsWithUsage(projections, usage), usage


def usage_rules(settings: Settings) -> UsageRules:
    """The accounting thresholds from ``settings``."""
    return UsageRules(
        busy_above_pct=settings.usage_busy_above_pct,
        idle_memory_above_mib=settings.usage_idle_memory_above_mib,
        max_gap_s=settings.usage_max_gap_s,
    )
