"""The GPU usage projection: rounds over the usage records, roll-ups and prices.

The fold itself is pure (:mod:`ca4_worker.domain.usage`); this module reads the records a batch
touches, folds, and writes them back under an optimistic ``version`` guard, so two writers (or a
writer and a crash) never count an interval twice. It joins the other projections through
:class:`ProjectionsWithUsage`, so the live round and replay both keep it current.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import date
from typing import Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ca4_worker.application.bounded import WriteLimits, in_bounded_calls, task_group
from ca4_worker.application.ports import Projections, TimedOutError, UnavailableError
from ca4_worker.application.views import GpuQuery, GpuView, Page, SessionQuery, SessionView
from ca4_worker.domain.records import PositionedEvent
from ca4_worker.domain.usage import (
    GpuUsage,
    UsageDay,
    UsageRules,
    fold_usage,
    marks_home,
    touched_days,
    usage_day_id,
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
    """Where the day records live (database or memory). A session's marks travel inside the
    day record of their newest reading (:attr:`UsageDay.marks`)."""

    async def load(
        self, session_ids: Iterable[str], day_ids: Iterable[str]
    ) -> dict[str, Versioned[UsageDay]]:
        """The stored day records among ``day_ids``, and every record holding the marks of
        one of ``session_ids`` (by id): more than one after a crash before the old home was
        cleared, and the newest wins only when all of them are seen."""
        ...

    async def save(self, days: Sequence[Versioned[UsageDay]]) -> None:
        """Insert (version 0) or update (guarded by version) day records; raise
        :class:`LostGuardError` when a guard matched nothing."""
        ...

    async def reset(self) -> None:
        """Remove every usage record (before a rebuild)."""
        ...

    def days_between(
        self, start: date, end: date, *, tenant: str | None
    ) -> AsyncGenerator[UsageDay]:
        """Day records with ``start <= day < end`` of ``tenant`` (``None``: every tenant), one
        at a time (a generator, which a report closes when its deadline stops it)."""
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
        stored = await self.records.load([session_id for session_id, _ in sessions], day_ids)
        holders = _marks_holders(stored.values())
        before: list[Versioned[UsageDay]] = []
        homes: list[Versioned[UsageDay]] = []
        cleared: list[Versioned[UsageDay]] = []
        for session_id, events in sessions:
            held = holders.get(session_id, [])
            fold = fold_usage(
                session_id,
                events,
                marks=held[0].record.marks if held else None,
                stored_days={key: item.record for key, item in stored.items()},
                rules=self.rules,
            )
            written: dict[str, Versioned[UsageDay]] = {}
            if fold.marks_changed:
                home_day = marks_home(fold.marks, events[-1].occurred_at_ms)
                home_id = usage_day_id(session_id, home_day)
                written = {
                    key: Versioned(record, stored[key].version if key in stored else 0)
                    for key, record in fold.days.items()
                }
                home = written.pop(home_id, None) or _unchanged_or_new(
                    stored.get(home_id), home_day, events[-1]
                )
                home.record.marks = fold.marks
                before.extend(written.values())
                homes.append(home)
            elif held:  # every event was applied before, so no day changed either
                home_id = held[0].record.document_id
            for holder in held:
                key = holder.record.document_id
                if key != home_id:
                    last = written.get(key, holder)
                    bumped = last.version + (1 if key in written else 0)
                    cleared.append(Versioned(replace(last.record, marks=None), bumped))
        # Other days first: a crash before the home refolds from the old marks, and each day's
        # applied position skips what it already counted. Old homes are cleared last.
        for batch in (before, homes, cleared):
            if batch:
                await self.records.save(batch)

    async def reset(self) -> None:
        """Remove every usage record."""
        await self.records.reset()


def _marks_holders(
    days: Iterable[Versioned[UsageDay]],
) -> dict[str, list[Versioned[UsageDay]]]:
    """Per session, the loaded records holding marks, newest day first (an older one holds
    marks only after a crash between a home's write and the clearing of the one before)."""
    holders: dict[str, list[Versioned[UsageDay]]] = {}
    for item in days:
        if item.record.marks is not None:
            holders.setdefault(item.record.session_id, []).append(item)
    for held in holders.values():
        held.sort(key=lambda item: item.record.day, reverse=True)
    return holders


def _unchanged_or_new(
    stored: Versioned[UsageDay] | None, day: date, newest: PositionedEvent
) -> Versioned[UsageDay]:
    """The home record to write the marks into when its seconds did not change: a copy of the
    stored one, or a new, empty one."""
    if stored is not None:
        return Versioned(replace(stored.record), stored.version)
    return Versioned(
        UsageDay(
            session_id=newest.session_id,
            day=day,
            tenant=newest.event.tenant,
            labels=dict(newest.event.labels),
            runtime=newest.event.source.runtime,
        ),
        0,
    )


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


RowKind = Literal["value", "none", "other"]
"""What a usage row sums: one value's time (``value``), the time of records without the
grouping label (``none``, shown as :data:`NO_GROUP`), or every group past the cap (``other``,
shown as :data:`OTHER_GROUP`). A tenant's value may spell either display string, so a client
tells the rows apart by this, never by ``group``."""


class UsageRow(BaseModel):
    """GPU time of one group over the requested days."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    tenant: str | None = None
    """The tenant whose time the row sums, in an operator's report (``read:all``, ``ca4
    usage``), also one of a single tenant's records (``tenant=``, ``--tenant``); ``None`` in a
    tenant key's report of its own. Group values are the tenants' own, so a report of every
    tenant never sums two tenants' time in one row."""
    group: str
    """The group's value (the label's value, GPU model, runtime or tenant), or the display
    string of a synthetic row (``(none)``, ``(other)``; see :attr:`kind`)."""
    kind: RowKind = "value"
    """``value``, or which synthetic row this is (:data:`RowKind`)."""
    held_seconds: float
    """GPU seconds held: the time between consecutive reports of a GPU at most
    ``CA4_USAGE_MAX_GAP_S`` apart, summed over the group's GPUs (longer gaps are not billed)."""
    busy_seconds: float
    """Held seconds whose closing report had utilisation above ``CA4_USAGE_BUSY_ABOVE_PCT``."""
    idle_seconds: float
    """Held seconds with memory allocated and utilisation at or under
    ``CA4_USAGE_BUSY_ABOVE_PCT`` at both ends (held, allocated and unused)."""
    held_hours: float
    """``held_seconds`` in hours."""
    busy_hours: float
    """``busy_seconds`` in hours."""
    idle_hours: float
    """``idle_seconds`` in hours."""
    gpus: int
    """Distinct GPUs counted: only each session's first 64 (``SESSION_MAX_GPUS``) are billed;
    the samples of its others show in the session's ``gpus_dropped`` (``/v1/sessions``)."""
    sessions: int
    """Distinct sessions counted."""
    cost: float | None = None
    """Held hours times each GPU model's hourly price; ``None`` without a price table.
    Hours of models missing from the table are counted in ``unpriced_hours``."""
    unpriced_hours: float = 0.0
    """Held hours of GPU models missing from the price table (``0`` without a table)."""


class UsageReport(BaseModel):
    """GPU time per group, days ``[from, to)`` in UTC."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, use_attribute_docstrings=True)

    from_day: date = Field(alias="from")
    """The first UTC day counted."""
    to_day: date = Field(alias="to")
    """The day after the last one counted (excluded)."""
    group_by: str
    """What the rows are grouped by: ``label:<key>``, ``gpu_model``, ``runtime`` or
    ``tenant``."""
    currency: str | None = None
    """The currency of ``cost`` (``CA4_USAGE_CURRENCY``); ``null`` without a price table."""
    rows: list[UsageRow]
    """One row per tenant and group: by tenant, then most held time first, a tenant's
    ``(other)`` row last."""
    truncated: bool = False
    """Whether the range held more groups than a report shows (``CA4_USAGE_MAX_GROUPS``): the
    groups met after the first ones are summed in a row of kind ``other`` (one per tenant that
    had more), so the rows still add up to the whole range."""


NO_GROUP = "(none)"
"""How the row of records without the grouping label shows (kind ``none``)."""
OTHER_GROUP = "(other)"
"""How the row summing a tenant's groups past a report's cap shows (kind ``other``)."""


def group_key(day: UsageDay, usage: GpuUsage, group_by: str) -> str | None:
    """The value ``group_by`` (``label:<key>``, ``gpu_model``, ``runtime`` or ``tenant``)
    takes for ``usage``'s time; ``None`` for time billed under labels without the key."""
    if group_by == "gpu_model":
        return usage.gpu_model
    if group_by == "runtime":
        return day.runtime
    if group_by == "tenant":
        return day.tenant
    return day.labels_of(usage).get(group_by.removeprefix("label:"))


_RowKey = tuple[str | None, RowKind, str]
"""A row's key: (tenant or ``None``, kind, value). A synthetic row's value is empty and its
kind is not ``value``, so no tenant's value can ever be summed in it."""


class UsageRollUp:
    """Day records summed per group as they come, so a report holds its groups, never its
    records (a tenant's year of day records of 64 GPUs with long labels held gigabytes).

    ``per_tenant`` (the default: a report of every tenant's records) keys each row by its
    tenant too: group values are the tenants' own, and one tenant's time must never land in
    another's row. A report of one tenant's records turns it off, and its rows' ``tenant`` is
    ``None``.

    At most ``max_groups`` groups (``None``: every one) get a row of their own, the first met
    of each tenant; the rest of a tenant's time goes to its one :data:`OTHER_GROUP` row and
    :attr:`truncated` is set. The values are the tenants' own (label values, GPU model names),
    so without the cap one report of many distinct values held every one of them. Across
    tenants the cap is shared fairly: once it is full, a group of a tenant with fewer rows than
    its share (the cap over the tenants met so far) takes the row of the last-met group of the
    tenant with the most, whose time moves to that tenant's ``(other)``. A tenant's kept rows
    are so always its first met, and one tenant sending many values cannot push another's
    few into ``(other)``. First met, not largest: a group's size is known only at the end, and
    keeping the largest exactly means holding every group until then (what the cap bounds) or
    reading the range twice. A group moved to ``(other)`` moves whole, so every row is exact.
    """

    def __init__(
        self,
        *,
        group_by: str,
        prices: dict[str, float] | None = None,
        max_groups: int | None = None,
        per_tenant: bool = True,
    ) -> None:
        self._group_by = group_by
        self._prices = prices
        self._max_groups = max_groups
        self._per_tenant = per_tenant
        self._kept: dict[str | None, dict[_RowKey, None]] = {}
        """Per tenant, its groups with a row of their own, first met first (synthetic rows
        aside)."""
        self._groups = 0
        """Groups with a row of their own, every tenant's."""
        self.truncated = False
        """Whether a group was summed in :data:`OTHER_GROUP` for want of room."""
        self._totals: dict[_RowKey, list[int]] = {}
        # Distinct GPUs and sessions are counted by their strings' hashes: the strings
        # themselves can be hundreds of bytes each.
        self._gpus: dict[_RowKey, set[int]] = {}
        self._sessions: dict[_RowKey, set[int]] = {}
        self._costs: dict[_RowKey, float] = {}
        self._unpriced: dict[_RowKey, int] = {}

    def add(self, day: UsageDay) -> None:
        """Count one day record."""
        tenant = day.tenant if self._per_tenant else None
        for usage in day.gpus.values():
            value = group_key(day, usage, self._group_by)
            key = self._row((tenant, "none", "") if value is None else (tenant, "value", value))
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

    def _row(self, key: _RowKey) -> _RowKey:
        """The row ``key``'s time goes to: its own, or its tenant's ``(other)`` once the
        cap's groups are counted and its tenant has its share."""
        if self._max_groups is None:
            return key
        tenant = key[0]
        kept = self._kept.setdefault(tenant, {})
        if key in kept:
            return key
        if self._groups < self._max_groups:
            kept[key] = None
            self._groups += 1
            return key
        share = self._max_groups // len(self._kept)
        if len(kept) < share:
            # Some tenant holds more than its share (the rows are full and this one holds
            # less): its last-met group gives up its row.
            most = max(self._kept, key=lambda other: len(self._kept[other]))
            self._fold(most, next(reversed(self._kept[most])))
            kept[key] = None
            return key
        self.truncated = True
        return (tenant, "other", "")

    def _fold(self, tenant: str | None, key: _RowKey) -> None:
        """Move kept group ``key`` of ``tenant`` whole into the tenant's ``(other)``."""
        del self._kept[tenant][key]
        self.truncated = True
        other: _RowKey = (tenant, "other", "")
        sums = self._totals.setdefault(other, [0, 0, 0])
        for index, value in enumerate(self._totals.pop(key)):
            sums[index] += value
        self._gpus.setdefault(other, set()).update(self._gpus.pop(key))
        self._sessions.setdefault(other, set()).update(self._sessions.pop(key))
        if key in self._costs:
            self._costs[other] = self._costs.get(other, 0.0) + self._costs.pop(key)
        if key in self._unpriced:
            self._unpriced[other] = self._unpriced.get(other, 0) + self._unpriced.pop(key)

    def rows(self) -> list[UsageRow]:
        """One row per group: by tenant (in a report of every tenant's), each tenant's
        ``(other)`` last among its rows, the others largest held time first (ties by
        ``group``, then kind)."""
        rows = [self._built(key) for key in self._totals]
        return sorted(
            rows,
            key=lambda row: (
                row.tenant or "",
                row.kind == "other",
                -row.held_seconds,
                row.group,
                row.kind,
            ),
        )

    def _built(self, key: _RowKey) -> UsageRow:
        """The row of ``key``, its synthetic rows shown by their display strings."""
        tenant, kind, value = key
        held, busy, idle = self._totals[key]
        priced = bool(self._prices)
        return UsageRow(
            tenant=tenant,
            group={"value": value, "none": NO_GROUP, "other": OTHER_GROUP}[kind],
            kind=kind,
            held_seconds=held / 1000,
            busy_seconds=busy / 1000,
            idle_seconds=idle / 1000,
            held_hours=held / 3_600_000,
            busy_hours=busy / 3_600_000,
            idle_hours=idle / 3_600_000,
            gpus=len(self._gpus[key]),
            sessions=len(self._sessions[key]),
            cost=round(self._costs.get(key, 0.0), 6) if priced else None,
            unpriced_hours=self._unpriced.get(key, 0) / 3_600_000 if priced else 0.0,
        )


def roll_up(
    days: Iterable[UsageDay],
    *,
    group_by: str,
    prices: dict[str, float] | None = None,
    per_tenant: bool = True,
) -> list[UsageRow]:
    """Sum day records per group (and tenant, when ``per_tenant``), in the order of
    :meth:`UsageRollUp.rows`."""
    summed = UsageRollUp(group_by=group_by, prices=prices, per_tenant=per_tenant)
    for day in days:
        summed.add(day)
    return summed.rows()


class ReportTimedOutError(TimedOutError):
    """A usage report missed its own deadline (a database call that timed out is a plain
    :class:`TimedOutError`: the database did not answer)."""


async def usage_report(
    records: UsageRecords,
    start: date,
    end: date,
    *,
    tenant: str | None,
    group_by: str,
    prices: dict[str, float],
    currency: str,
    deadline_s: float | None = None,
    max_groups: int | None = None,
    per_tenant: bool | None = None,
) -> UsageReport:
    """The roll-up ``GET /v1/usage`` and ``ca4 usage`` answer: ``tenant``'s days in
    ``[start, end)`` per group (``tenant`` ``None``: every tenant's, per tenant and group),
    with cost when ``prices`` is not empty, and at most ``max_groups`` groups with a row of
    their own (``None``: every one; see :class:`UsageRollUp`). ``per_tenant`` says whether
    the rows name their tenant (``None``: when the report is every tenant's); an operator's
    report of one tenant's records names it too.

    Reading, summing and building the rows together finish within ``deadline_s`` (``None``:
    no deadline) or raise :class:`ReportTimedOutError`: a long range of a large tenant's
    records is seconds of decoding, and without a deadline a read route could run for minutes.
    """
    summed = UsageRollUp(
        group_by=group_by,
        prices=prices or None,
        max_groups=max_groups,
        per_tenant=tenant is None if per_tenant is None else per_tenant,
    )
    deadline = asyncio.timeout(deadline_s)
    late = f"the usage report did not finish within {deadline_s or 0:g} s"
    try:
        # The scan is closed here, in this task, also when the deadline cancels it midway.
        async with deadline, aclosing(records.days_between(start, end, tenant=tenant)) as days:
            async for day in days:
                summed.add(day)
            report = UsageReport(
                from_day=start,
                to_day=end,
                group_by=group_by,
                currency=currency if prices else None,
                rows=summed.rows(),
                truncated=summed.truncated,
            )
    except TimeoutError as error:
        raise ReportTimedOutError(late) from error
    except UnavailableError as error:
        # The driver may turn the cancellation into an error of its own.
        if deadline.expired():
            raise ReportTimedOutError(late) from error
        raise
    if deadline.expired() or _past(deadline):
        # ... or swallow it and go on reading: the report is still late. The rows are built
        # without an await, so a deadline that passed meanwhile has not fired: check the clock.
        raise ReportTimedOutError(late)
    return report


def _past(deadline: asyncio.Timeout) -> bool:
    """Whether ``deadline``'s time has come (it fires only at an await)."""
    when = deadline.when()
    return when is not None and asyncio.get_running_loop().time() >= when
