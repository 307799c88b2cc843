"""The GPU usage projection: rounds over the usage records, roll-ups and prices.

The fold itself is pure (:mod:`ca4_worker.domain.usage`); this module reads the records a batch
touches, folds, and writes them back under an optimistic ``version`` guard, so two writers (or a
writer and a crash) never count an interval twice. It joins the other projections through
:class:`ProjectionsWithUsage`, so the live round and replay both keep it current.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ca4_worker.application.bounded import WriteLimits, in_bounded_calls, task_group
from ca4_worker.application.ports import Projections
from ca4_worker.application.views import GpuQuery, GpuView, Page, SessionQuery, SessionView
from ca4_worker.domain.records import PositionedEvent
from ca4_worker.domain.usage import (
    UsageDay,
    UsageMarks,
    UsageRules,
    fold_usage,
    touched_days,
)

MAX_GUARD_ROUNDS = 10
"""Rounds a chunk retries after losing a guard to another writer before it gives up."""


class LostGuardError(Exception):
    """Another writer changed a usage record between this round's read and write."""


RecordT = TypeVar("RecordT")


@dataclass
class Versioned(Generic[RecordT]):
    """A stored record and the version it was read at (0: not stored yet)."""

    record: RecordT
    version: int


class UsageRecords(Protocol):
    """Where the usage records live (database or memory)."""

    async def load(
        self, session_ids: Iterable[str], day_ids: Iterable[str]
    ) -> tuple[dict[str, Versioned[UsageMarks]], dict[str, Versioned[UsageDay]]]:
        """The stored marks of ``session_ids`` and day records among ``day_ids``."""
        ...

    async def save_days(self, days: Sequence[Versioned[UsageDay]]) -> None:
        """Insert (version 0) or update (guarded by version) day records; raise
        :class:`LostGuardError` when a guard matched nothing."""
        ...

    async def save_marks(self, marks: Sequence[Versioned[UsageMarks]]) -> None:
        """As :meth:`save_days`, for marks."""
        ...

    async def reset(self) -> None:
        """Remove every usage record (before a rebuild)."""
        ...

    def days_between(
        self, start: date, end: date, *, tenant: str | None
    ) -> AsyncIterator[UsageDay]:
        """Day records with ``start <= day < end`` of ``tenant`` (``None``: every tenant), one
        at a time."""
        ...


class UsageProjection:
    """Applies events to the usage records exactly once."""

    def __init__(
        self,
        records: UsageRecords,
        *,
        rules: UsageRules | None = None,
        limits: WriteLimits | None = None,
    ) -> None:
        self.records = records
        self.rules = rules or UsageRules()
        self._limits = limits or WriteLimits()

    async def apply(self, events: Sequence[PositionedEvent]) -> None:
        """Fold the events of each session into its records, in chunks of sessions."""
        sessions: dict[str, list[PositionedEvent]] = {}
        for positioned in sorted(events, key=lambda item: item.position):
            if positioned.gpu_readings:
                sessions.setdefault(positioned.session_id, []).append(positioned)
        await in_bounded_calls(
            list(sessions.items()),
            self._apply_chunk,
            limits=self._limits,
            slots=asyncio.Semaphore(self._limits.concurrency),
            what="project usage",
        )

    async def _apply_chunk(self, sessions: Sequence[tuple[str, list[PositionedEvent]]]) -> None:
        for _ in range(MAX_GUARD_ROUNDS):
            try:
                await self._round(sessions)
                return
            except LostGuardError:
                continue
        raise LostGuardError(f"usage records kept changing under {len(sessions)} sessions")

    async def _round(self, sessions: Sequence[tuple[str, list[PositionedEvent]]]) -> None:
        day_ids = set().union(
            *(touched_days(events, self.rules.max_gap_s) for _, events in sessions)
        )
        marks, days = await self.records.load([session_id for session_id, _ in sessions], day_ids)
        new_days: list[Versioned[UsageDay]] = []
        new_marks: list[Versioned[UsageMarks]] = []
        for session_id, events in sessions:
            stored_marks = marks.get(session_id)
            fold = fold_usage(
                session_id,
                events,
                marks=stored_marks.record if stored_marks else None,
                stored_days={key: item.record for key, item in days.items()},
                rules=self.rules,
            )
            new_days.extend(
                Versioned(record, days[key].version if key in days else 0)
                for key, record in fold.days.items()
            )
            if fold.marks_changed:
                new_marks.append(Versioned(fold.marks, stored_marks.version if stored_marks else 0))
        # Days first: a crash before the marks refolds from the old marks, and each day's
        # applied position skips what it already counted.
        await self.records.save_days(new_days)
        await self.records.save_marks(new_marks)

    async def reset(self) -> None:
        """Remove every usage record."""
        await self.records.reset()


class ProjectionsWithUsage:
    """The session and GPU projections with the usage projection beside them: one ``apply``
    and one ``reset`` for the live round and replay, reads delegated unchanged."""

    def __init__(self, projections: Projections, usage: UsageProjection) -> None:
        self.projections = projections
        self.usage = usage

    async def apply(self, events: Sequence[PositionedEvent]) -> None:
        """Apply events to both, concurrently."""
        async with task_group() as group:
            group.create_task(self.projections.apply(events))
            group.create_task(self.usage.apply(events))

    async def reset(self) -> None:
        """Empty both."""
        await self.projections.reset()
        await self.usage.reset()

    async def applied_offset(self, session_id: str, partition: int) -> int | None:
        """Delegated."""
        return await self.projections.applied_offset(session_id, partition)

    async def session_owners(self, session_ids: Iterable[str]) -> dict[str, str]:
        """Delegated."""
        return await self.projections.session_owners(session_ids)

    async def session(self, session_id: str, *, tenant: str | None) -> SessionView | None:
        """Delegated."""
        return await self.projections.session(session_id, tenant=tenant)

    async def sessions(self, query: SessionQuery) -> Page[SessionView]:
        """Delegated."""
        return await self.projections.sessions(query)

    async def gpu(self, gpu_uuid: str, *, tenant: str | None) -> GpuView | None:
        """Delegated."""
        return await self.projections.gpu(gpu_uuid, tenant=tenant)

    async def gpus(self, query: GpuQuery) -> Page[GpuView]:
        """Delegated."""
        return await self.projections.gpus(query)


class UsageRow(BaseModel):
    """GPU time of one group over the requested days."""

    model_config = ConfigDict(frozen=True)

    group: str
    """The group's value (the label's value, GPU model or runtime; ``(none)`` without one)."""
    held_seconds: float
    busy_seconds: float
    idle_seconds: float
    held_hours: float
    busy_hours: float
    idle_hours: float
    gpus: int
    """Distinct GPUs counted."""
    sessions: int
    """Distinct sessions counted."""
    cost: float | None = None
    """Held hours times each GPU model's hourly price; ``None`` without a price table.
    Hours of models missing from the table are counted in ``unpriced_hours``."""
    unpriced_hours: float = 0.0


class UsageReport(BaseModel):
    """GPU time per group, days ``[from, to)`` in UTC."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    from_day: date = Field(alias="from")
    to_day: date = Field(alias="to")
    group_by: str
    currency: str | None = None
    rows: list[UsageRow]


NO_GROUP = "(none)"


def group_key(day: UsageDay, model: str, group_by: str) -> str:
    """The value ``group_by`` (``label:<key>``, ``gpu_model`` or ``runtime``) takes."""
    if group_by == "gpu_model":
        return model
    if group_by == "runtime":
        return day.runtime
    return day.labels.get(group_by.removeprefix("label:"), NO_GROUP)


class UsageRollUp:
    """Day records summed per group as they come, so a report holds its groups, never its
    records (a tenant's year of day records of 64 GPUs with long labels held gigabytes)."""

    def __init__(self, *, group_by: str, prices: dict[str, float] | None = None) -> None:
        self._group_by = group_by
        self._prices = prices
        self._totals: dict[str, list[int]] = {}
        # Distinct GPUs and sessions are counted by their strings' hashes: the strings
        # themselves can be hundreds of bytes each.
        self._gpus: dict[str, set[int]] = {}
        self._sessions: dict[str, set[int]] = {}
        self._costs: dict[str, float] = {}
        self._unpriced: dict[str, int] = {}

    def add(self, day: UsageDay) -> None:
        """Count one day record."""
        for usage in day.gpus.values():
            key = group_key(day, usage.gpu_model, self._group_by)
            sums = self._totals.setdefault(key, [0, 0, 0])
            sums[0] += usage.held_ms
            sums[1] += usage.busy_ms
            sums[2] += usage.idle_ms
            self._gpus.setdefault(key, set()).add(hash(usage.gpu_uuid))
            self._sessions.setdefault(key, set()).add(hash(day.session_id))
            price = (self._prices or {}).get(usage.gpu_model)
            if price is None:
                self._unpriced[key] = self._unpriced.get(key, 0) + usage.held_ms
            else:
                self._costs[key] = self._costs.get(key, 0.0) + usage.held_ms / 3_600_000 * price

    def rows(self) -> list[UsageRow]:
        """One row per group, largest held time first (ties by name)."""
        prices = self._prices
        rows = [
            UsageRow(
                group=key,
                held_seconds=held / 1000,
                busy_seconds=busy / 1000,
                idle_seconds=idle / 1000,
                held_hours=held / 3_600_000,
                busy_hours=busy / 3_600_000,
                idle_hours=idle / 3_600_000,
                gpus=len(self._gpus[key]),
                sessions=len(self._sessions[key]),
                cost=round(self._costs.get(key, 0.0), 6) if prices else None,
                unpriced_hours=self._unpriced.get(key, 0) / 3_600_000 if prices else 0.0,
            )
            for key, (held, busy, idle) in self._totals.items()
        ]
        return sorted(rows, key=lambda row: (-row.held_seconds, row.group))


def roll_up(
    days: Iterable[UsageDay],
    *,
    group_by: str,
    prices: dict[str, float] | None = None,
) -> list[UsageRow]:
    """Sum day records per group, largest held time first (ties by name)."""
    summed = UsageRollUp(group_by=group_by, prices=prices)
    for day in days:
        summed.add(day)
    return summed.rows()


async def usage_report(
    records: UsageRecords,
    start: date,
    end: date,
    *,
    tenant: str | None,
    group_by: str,
    prices: dict[str, float],
    currency: str,
) -> UsageReport:
    """The roll-up ``GET /v1/usage`` and ``ca4 usage`` answer: ``tenant``'s days in
    ``[start, end)`` per group, with cost when ``prices`` is not empty."""
    summed = UsageRollUp(group_by=group_by, prices=prices or None)
    async for day in records.days_between(start, end, tenant=tenant):
        summed.add(day)
    return UsageReport(
        from_day=start,
        to_day=end,
        group_by=group_by,
        currency=currency if prices else None,
        rows=summed.rows(),
    )
