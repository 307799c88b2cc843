"""The usage records in MongoDB (FerretDB locally, DocumentDB in production).

One collection, ``usage_days``: one record per session and UTC day (seconds per GPU), the one
of the session's newest reading also holding its marks (last report per GPU, applied
positions). Writes are unordered inserts for new records and one bulk of ``$set`` updates
guarded by ``version`` for the rest, the same operation mix as the session projection (see
:mod:`ca4_worker.persistence.projections`). Marks used to have a collection of their own,
``usage_marks``, which cost a second statement per session every round; a worker still reads
them there for a session none of whose day records holds marks yet, and moves them on its
first write.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable, Sequence
from datetime import UTC, date, datetime
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
from ca4_worker.domain.usage import (
    GpuMark,
    GpuUsage,
    UsageDay,
    UsageMarks,
    UsageRules,
    marks_home,
    usage_day_id,
)
from ca4_worker.persistence.database import (
    database_call,
    ensure_fits,
    ensure_indexes,
    insert_ignoring_duplicates,
)

Doc = dict[str, Any]
READ_BATCH = 100
"""Day records fetched per round trip by a usage report (a record of 64 GPUs with long labels
and uuids decodes to about 120 KiB)."""
YIELD_EVERY = 10
"""Day records a usage report reads and sums between turns of the event loop (a few
milliseconds of work for the largest records)."""
LEGACY_MARKS = "usage_marks"
USAGE_INDEXES = {
    "usage_days": [
        IndexModel([("day", ASCENDING)], name="day"),
        IndexModel([("tenant", ASCENDING), ("day", ASCENDING)], name="tenant_day"),
        IndexModel([("session_id", ASCENDING)], name="session"),
        # Built in the background on DocumentDB (a foreground build on a large collection
        # would block usage rounds while it runs); MongoDB 4.2+ and FerretDB ignore the flag.
        IndexModel([("marks_of", ASCENDING)], name="marks_of", background=True),
    ],
}


def marks_document(marks: UsageMarks) -> Doc:
    """The stored form of a session's marks, inside its home day record."""
    return {
        "applied": marks.applied,
        "gpus_dropped": marks.gpus_dropped,
        "readings": [
            {"gpu_uuid": mark.gpu_uuid, "at": mark.at, "idle": mark.idle}
            for mark in marks.marks.values()
        ],
    }


def marks_from_document(doc: Doc, *, session_id: str, tenant: str) -> UsageMarks:
    """A session's marks from their stored form (inside a day record, or a legacy
    ``usage_marks`` record, whose readings were called ``marks``)."""
    readings = doc["readings"] if "readings" in doc else doc["marks"]
    return UsageMarks(
        session_id=session_id,
        tenant=tenant,
        applied=dict(doc["applied"]),
        marks={
            item["gpu_uuid"]: GpuMark(item["gpu_uuid"], item["at"], item["idle"])
            for item in readings
        },
        gpus_dropped=doc.get("gpus_dropped", 0),
    )


def day_document(day: UsageDay, version: int) -> Doc:
    """The stored form of a session's day.

    ``gpus`` holds each GPU's whole day, which is all a worker from before label sets reads
    (and rewrites); ``by_label_set`` splits it by :attr:`UsageDay.label_sets`. A worker rolled
    back to before them therefore bills the day right, and time it adds shows up here as the
    part of a GPU's total the split does not hold (:func:`day_from_document`).
    """
    totals: dict[str, GpuUsage] = {}
    for usage in day.gpus.values():
        total = totals.setdefault(usage.gpu_uuid, GpuUsage(usage.gpu_uuid, usage.gpu_model))
        total.held_ms += usage.held_ms
        total.busy_ms += usage.busy_ms
        total.idle_ms += usage.idle_ms
    return {
        "_id": day.document_id,
        "session_id": day.session_id,
        "day": day.day.isoformat(),
        "tenant": day.tenant,
        "version": version,
        "labels": day.labels,
        "runtime": day.runtime,
        "applied": day.applied,
        "gpus": [_seconds(usage) | {"gpu_model": usage.gpu_model} for usage in totals.values()],
        "label_sets": day.label_sets,
        "by_label_set": [
            _seconds(usage) | {"label_set": usage.label_set} for usage in day.gpus.values()
        ],
        "marks": marks_document(day.marks) if day.marks is not None else None,
        # The session whose marks this record holds, on its own index: finding a session's
        # marks then reads its holder, not every day record the session has (one a day since
        # 2000 for a client that dates its reports back).
        "marks_of": day.session_id if day.marks is not None else None,
    }


def _seconds(usage: GpuUsage) -> Doc:
    return {
        "gpu_uuid": usage.gpu_uuid,
        "held_ms": usage.held_ms,
        "busy_ms": usage.busy_ms,
        "idle_ms": usage.idle_ms,
    }


def day_from_document(doc: Doc) -> Versioned[UsageDay]:
    """A session's day from its stored form (also one written before label sets, or rewritten
    by a worker from before them: see :func:`day_document`)."""
    marks = doc.get("marks")
    day = UsageDay(
        session_id=doc["session_id"],
        day=date.fromisoformat(doc["day"]),
        tenant=doc["tenant"],
        labels=dict(doc["labels"]),
        runtime=doc["runtime"],
        applied=dict(doc["applied"]),
        label_sets=[dict(labels) for labels in doc.get("label_sets", ())],
        marks=(
            marks_from_document(marks, session_id=doc["session_id"], tenant=doc["tenant"])
            if marks is not None
            else None
        ),
    )
    totals: dict[str, Doc] = {}
    for item in doc["gpus"]:  # one per GPU, but a worker of the first label-set version
        total = totals.setdefault(item["gpu_uuid"], dict.fromkeys(_UNITS, 0))  # wrote one a set
        total["gpu_model"] = item["gpu_model"]
        for unit in _UNITS:
            total[unit] += item[unit]
    split: dict[str, list[Doc]] = {}
    if day.label_sets:
        # That version's entries each named their set, and it wrote no by_label_set.
        first_version = any("label_set" in item for item in doc["gpus"])
        parts: list[Doc] = doc.get("by_label_set") or (doc["gpus"] if first_version else [])
        for item in parts:
            split.setdefault(item["gpu_uuid"], []).append(item)
    for uuid, total in totals.items():
        parts = split.get(uuid, [])
        rest = [total[unit] - sum(part[unit] for part in parts) for unit in _UNITS]
        if min(rest) < 0:  # a split that is not this total's: bill it whole, as before
            parts, rest = [], [total[unit] for unit in _UNITS]
        for part in parts:
            usage = GpuUsage(uuid, total["gpu_model"], *(part[unit] for unit in _UNITS))
            usage.label_set = part["label_set"]
            day.gpus[usage.key] = usage
        if any(rest) or not parts:
            # Time no split holds: all of a record from before label sets, or what a worker
            # from before them added since (billed under the labels it wrote).
            label_set = day.label_set_of(day.labels) if day.label_sets else 0
            unsplit = day.gpus.get((uuid, label_set))
            if unsplit is None:
                unsplit = GpuUsage(uuid, total["gpu_model"], label_set=label_set)
                day.gpus[unsplit.key] = unsplit
            unsplit.held_ms += rest[0]
            unsplit.busy_ms += rest[1]
            unsplit.idle_ms += rest[2]
    return Versioned(day, doc["version"])


_UNITS = ("held_ms", "busy_ms", "idle_ms")


class MongoUsageRecords:
    """The ``usage_days`` collection (and, read only, the legacy ``usage_marks``)."""

    def __init__(
        self,
        database: AsyncDatabase[Doc],
        *,
        deadline_s: float | None = None,
    ) -> None:
        self._database = database
        self._days: AsyncCollection[Doc] = database["usage_days"]
        self._legacy: AsyncCollection[Doc] = database[LEGACY_MARKS]
        self._deadline_s = deadline_s
        self._legacy_present = False

    async def create_indexes(self, *, build_deadline_s: float) -> None:
        """Create the missing day indexes (as :func:`init_database` does: see
        :func:`ensure_indexes`), and note whether legacy marks are left to read."""
        await ensure_indexes(self._database, USAGE_INDEXES, build_deadline_s=build_deadline_s)
        with database_call():
            self._legacy_present = await self._legacy.find_one({}, {"_id": 1}) is not None

    async def load(
        self, session_ids: Iterable[str], day_ids: Iterable[str]
    ) -> dict[str, Versioned[UsageDay]]:
        """The stored days among ``day_ids`` and every day holding the sessions' marks (or,
        before any holds them, the legacy marks inside their home day).

        Queries each on an index of its own (``_id``; ``marks_of``), rather than one ``$or``
        whose plan a backend may not split. Sessions no record names (new ones, and those whose
        records were all written before ``marks_of``) are looked up among all their days: the
        newest holder must be found even where a touched day holds older marks (a crash
        between writing the new home and clearing the old one)."""
        sessions = sorted(set(session_ids))
        named: set[str] = set()
        with database_call(self._deadline_s):
            found = await self._find({"_id": {"$in": sorted(day_ids)}}, named)
            found |= await self._find(
                {"marks_of": {"$in": sessions}, "_id": {"$nin": sorted(found)}}, named
            )
            unnamed = sorted(set(sessions) - named)
            if unnamed:
                found |= await self._find(
                    {
                        "session_id": {"$in": unnamed},
                        "marks": {"$ne": None},
                        "_id": {"$nin": sorted(found)},
                    }
                )
            wanted = set(sessions) - _holding(found)
            if wanted and self._legacy_present:
                await self._add_legacy_marks(found, wanted)
        return found

    async def _find(
        self, conditions: Doc, named: set[str] | None = None
    ) -> dict[str, Versioned[UsageDay]]:
        """The records matching ``conditions``; the sessions whose marks they name are added
        to ``named``."""
        found: dict[str, Versioned[UsageDay]] = {}
        async for doc in self._days.find(conditions):
            found[doc["_id"]] = day_from_document(doc)
            # Only a record that holds marks names its session: a worker from before
            # ``marks_of`` clears a home's marks without clearing the name.
            holder = doc.get("marks_of") if doc.get("marks") is not None else None
            if named is not None and holder is not None:
                named.add(holder)
        return found

    async def _add_legacy_marks(
        self, found: dict[str, Versioned[UsageDay]], session_ids: set[str]
    ) -> None:
        """Legacy marks, each put into its home day record (loaded, or new)."""
        legacy = [
            marks_from_document(doc, session_id=doc["_id"], tenant=doc["tenant"])
            async for doc in self._legacy.find({"_id": {"$in": sorted(session_ids)}})
        ]
        homes = {
            usage_day_id(marks.session_id, marks_home(marks, datetime.now(UTC))): marks
            for marks in legacy
        }
        found.update(await self._find({"_id": {"$in": sorted(set(homes) - set(found))}}))
        for home_id, marks in homes.items():
            home = found.get(home_id)
            if home is None:
                day = date.fromisoformat(home_id.rsplit("/", 1)[1])
                empty = UsageDay(marks.session_id, day, marks.tenant, labels={}, runtime="")
                home = found[home_id] = Versioned(empty, 0)
            home.record.marks = marks

    async def save(self, days: Sequence[Versioned[UsageDay]]) -> None:
        """Insert new days, update the others under their version."""
        items = [(day_document(item.record, item.version + 1), item.version) for item in days]
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
            refused = await insert_ignoring_duplicates(self._days, new)
            matched = (
                (await self._days.bulk_write(updates, ordered=False)).matched_count
                if updates
                else 0
            )
        if refused or matched < len(updates):
            raise LostGuardError("usage_days: a record changed since it was read")

    async def reset(self) -> None:
        """Remove every usage record (legacy marks too)."""
        with database_call():
            await self._legacy.delete_many({})
            await self._days.delete_many({})
        self._legacy_present = False

    async def days_between(
        self, start: date, end: date, *, tenant: str | None
    ) -> AsyncGenerator[UsageDay]:
        """Day records in ``[start, end)`` of ``tenant`` (``None``: every tenant), read
        :data:`READ_BATCH` at a time, so a long range never sits in memory whole.

        Every :data:`YIELD_EVERY` records the event loop runs other work: the stages share
        it, and a batch of large records is tens of milliseconds of decoding and summing. The
        caller bounds the whole scan (:func:`~ca4_worker.application.usage.usage_report`); the
        cursor is closed however the scan ends.
        """
        conditions: Doc = {"day": {"$gte": start.isoformat(), "$lt": end.isoformat()}}
        if tenant is not None:
            conditions["tenant"] = tenant
        with database_call():
            cursor = self._days.find(conditions, {"marks": False}, batch_size=READ_BATCH)
            async with cursor:
                read = 0
                async for doc in cursor:
                    yield day_from_document(doc).record
                    read += 1
                    if read % YIELD_EVERY == 0:
                        await asyncio.sleep(0)


def _holding(days: dict[str, Versioned[UsageDay]]) -> set[str]:
    """The sessions whose marks one of ``days`` holds."""
    return {item.record.session_id for item in days.values() if item.record.marks is not None}


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
        lambda: records.create_indexes(build_deadline_s=settings.index_build_timeout_s),
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
