"""GPU-time accounting: a pure fold from events to seconds held, busy and idle per GPU per day.

**Intervals.** A GPU is *held* between two consecutive reports of it within one session, when
they are at most ``max_gap_s`` apart: the interval ``(previous, current]`` is billed to the
current report. A longer silence is a gap and is not billed at all (the runtime may have been
gone), nor is anything before a GPU's first report. So the report cadence sets the interval,
and the max-gap knob bounds it.

**Busy and idle.** NVML's utilisation describes the period before a reading, so an interval is
*busy* when the report that closes it has utilisation above ``busy_above_pct``. It is *idle*
when the reports at both ends have utilisation at or under that threshold and memory in use
above ``idle_memory_above_mib``: the GPU was held, allocated and unused for the whole
interval. An interval can be neither (no utilisation reported, or memory freed): it is still
held. Intervals are split at UTC midnight, so each day gets exactly its share.

**Exactly once.** Per session, the marks keep the last report per GPU and the Kafka position
applied last per partition; per session and day, a day record keeps the seconds and its own
applied positions. Events are folded in (partition, offset) order, which replay reproduces, so
a refold gives the same intervals, and each record takes only contributions of events past its
own applied position: a redelivered, duplicated or replayed event changes nothing.

**Where the marks live.** In the day record of their newest reading (:func:`marks_home`), so
the usual round writes one record per session, seconds and marks in one guarded statement. Day
records other than that one are written before it, so a crash between them refolds from the
old marks and the day guards skip what was already counted; marks left behind on an older day
are cleared after it, and until then the newest day holding marks wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Final

from ca4_schemas.v1 import labels_utf8_bytes

from ca4_worker.domain.projection import SESSION_MAX_GPUS, applied_key
from ca4_worker.domain.records import GpuReading, PositionedEvent

USAGE_MAX_LABEL_SETS_PER_DAY: Final = 8
"""Most distinct label sets one day record bills apart (``run`` changed between experiments of
one session, say). Time under label sets past the cap is billed under the last one kept, so the
record's size stays bounded whatever a client sends."""
USAGE_MAX_ENTRIES_PER_DAY: Final = 128
"""Most (GPU, label set) entries one day record starts with a label set of their own: past it, a
GPU's time is billed under the newest label set it has an entry under that day (a GPU with
none gets its first entry still, so a record holds at most this plus
:data:`~ca4_worker.domain.projection.SESSION_MAX_GPUS`). Without it, 64 GPUs under 8 label
sets made 512 entries, about 620 KiB a record in Python, which a usage report reads a hundred
at a time."""
USAGE_MAX_LABEL_BYTES_PER_DAY: Final = 16_384
"""Most bytes (UTF-8) of label keys and values one day record's label sets hold: the second
bound on its size, which a usage report reads a hundred records at a time and every round
rewrites. A new report's labels weigh at most as much (``ca4_schemas.v1.MAX_LABELS_BYTES``);
usual sets (a few short labels) fit eight to a record."""


@dataclass(frozen=True)
class UsageRules:
    """The thresholds that turn reports into held, busy and idle seconds."""

    busy_above_pct: float = 10.0
    idle_memory_above_mib: float = 0.0
    max_gap_s: float = 120.0


@dataclass
class GpuMark:
    """The last report of one GPU in one session."""

    gpu_uuid: str
    at: datetime
    idle: bool
    """Whether that report alone looked idle (allocated, utilisation under the threshold)."""


@dataclass
class GpuUsage:
    """Milliseconds one GPU was held, busy and idle under one label set (integers: exact in
    any order)."""

    gpu_uuid: str
    gpu_model: str
    held_ms: int = 0
    busy_ms: int = 0
    idle_ms: int = 0
    label_set: int = 0
    """Which of its day record's :attr:`UsageDay.label_sets` the time is billed under."""

    @property
    def key(self) -> UsageKey:
        """Where its day record keeps it: one entry per GPU and label set."""
        return (self.gpu_uuid, self.label_set)


UsageKey = tuple[str, int]
"""A GPU's entry in a day record: its UUID and label set."""


@dataclass
class UsageMarks:
    """One session's accounting state: last report per GPU, applied position per partition."""

    session_id: str
    tenant: str
    applied: dict[str, int] = field(default_factory=dict)
    marks: dict[str, GpuMark] = field(default_factory=dict)
    gpus_dropped: int = 0


@dataclass
class UsageDay:
    """One session's GPU time on one UTC day."""

    session_id: str
    day: date
    tenant: str
    labels: dict[str, str]
    """The labels of the newest event counted on this day (project and friends)."""
    runtime: str
    applied: dict[str, int] = field(default_factory=dict)
    gpus: dict[UsageKey, GpuUsage] = field(default_factory=dict)
    marks: UsageMarks | None = None
    """The session's marks, when this is the day of their newest reading."""
    label_sets: list[dict[str, str]] = field(default_factory=list)
    """The label sets the day's time is billed under, first met first (at most
    :data:`USAGE_MAX_LABEL_SETS_PER_DAY`): an interval counts under the labels of the report
    that closes it, so a session whose labels change mid-day bills each set its own time.
    Empty in a record written before label sets were kept: all of it is under ``labels``."""
    # What the fold asks per reading, remembered (never stored; a copy starts without them).
    _asked: tuple[dict[str, str], int] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _label_bytes: int | None = field(default=None, init=False, repr=False, compare=False)
    _newest: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def document_id(self) -> str:
        """The id of this record: session and day."""
        return usage_day_id(self.session_id, self.day)

    def labels_of(self, usage: GpuUsage) -> dict[str, str]:
        """The labels ``usage``'s time is billed under."""
        return self.label_sets[usage.label_set] if self.label_sets else self.labels

    def usage_of(self, sample: GpuReading, labels: dict[str, str]) -> GpuUsage:
        """The entry that bills ``sample``'s GPU under ``labels`` (made when new), or past
        :data:`USAGE_MAX_ENTRIES_PER_DAY` the GPU's entry under the newest label set it has
        one under."""
        asked = self._asked
        label_set = (
            asked[1] if asked is not None and asked[0] is labels else self.label_set_of(labels)
        )
        usage = self.gpus.get((sample.uuid, label_set))
        if usage is not None:
            return usage
        newest = self._newest_sets()
        if len(self.gpus) >= USAGE_MAX_ENTRIES_PER_DAY and sample.uuid in newest:
            return self.gpus[sample.uuid, newest[sample.uuid]]
        usage = GpuUsage(sample.uuid, sample.name, label_set=label_set)
        self.gpus[usage.key] = usage
        newest[sample.uuid] = max(label_set, newest.get(sample.uuid, 0))
        return usage

    def label_set_of(self, labels: dict[str, str]) -> int:
        """The index of ``labels`` among the label sets, added when new and there is room;
        past the caps, the last set kept."""
        if self._asked is not None and self._asked[0] is labels:
            return self._asked[1]  # every reading of one event asks with its one dict
        if not self.label_sets and self.gpus:
            self.label_sets.append(dict(self.labels))  # the time of a record before label sets
        index = next((i for i, known in enumerate(self.label_sets) if known == labels), None)
        if index is None:
            size = (
                self._label_bytes
                if self._label_bytes is not None
                else sum(map(labels_utf8_bytes, self.label_sets))
            )
            # The first set is always kept: an event accepted before the edge bounded labels
            # in bytes (``ca4_schemas.v1.MAX_LABELS_BYTES``) may carry more than this bound.
            if not self.label_sets or (
                len(self.label_sets) < USAGE_MAX_LABEL_SETS_PER_DAY
                and size + labels_utf8_bytes(labels) <= USAGE_MAX_LABEL_BYTES_PER_DAY
            ):
                self.label_sets.append(dict(labels))
                size += labels_utf8_bytes(labels)
            self._label_bytes = size
            index = len(self.label_sets) - 1
        self._asked = (labels, index)
        return index

    def _newest_sets(self) -> dict[str, int]:
        if self._newest is None:
            self._newest = {}
            for uuid, label_set in self.gpus:
                self._newest[uuid] = max(label_set, self._newest.get(uuid, 0))
        return self._newest


def usage_day_id(session_id: str, day: date) -> str:
    """A day record's id: the session, then the day."""
    return f"{session_id}/{day.isoformat()}"


def marks_home(marks: UsageMarks, fallback: datetime) -> date:
    """The UTC day whose record keeps ``marks``: that of their newest reading (of ``fallback``
    when they hold none). Readings only move forward, so a session's home never moves back."""
    newest = max((mark.at for mark in marks.marks.values()), default=fallback)
    return _in_utc(newest).date()


def _is_idle(utilization: float | None, memory_used: float | None, rules: UsageRules) -> bool:
    return (
        utilization is not None
        and utilization <= rules.busy_above_pct
        and memory_used is not None
        and memory_used > rules.idle_memory_above_mib
    )


def split_by_day(start: datetime, end: datetime) -> list[tuple[date, int]]:
    """``(start, end]`` as milliseconds per UTC day."""
    cursor = _in_utc(start)
    end = _in_utc(end)
    if cursor.date() == end.date():  # nearly always: reports are seconds apart
        return [(cursor.date(), _millis(end - cursor))] if cursor < end else []
    pieces: list[tuple[date, int]] = []
    while cursor < end:
        midnight = datetime.combine(cursor.date() + timedelta(days=1), time(), tzinfo=UTC)
        stop = min(midnight, end)
        pieces.append((cursor.date(), _millis(stop - cursor)))
        cursor = stop
    return pieces


def _in_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def _millis(span: timedelta) -> int:
    return span.days * 86_400_000 + span.seconds * 1000 + span.microseconds // 1000


@dataclass
class UsageFold:
    """The outcome of folding one session's events: the marks and day records to write."""

    marks: UsageMarks
    marks_changed: bool
    days: dict[str, UsageDay]
    """Day records that gained seconds, by id."""


def fold_usage(
    session_id: str,
    events: Sequence[PositionedEvent],
    *,
    marks: UsageMarks | None,
    stored_days: dict[str, UsageDay],
    rules: UsageRules,
) -> UsageFold:
    """Fold ``events`` (one session, in position order) into its marks and day records.

    ``stored_days`` holds the session's stored day records the events may touch (by id; a
    missing one is new). Events at or before the marks' applied position are skipped; an
    interval counts on a day only when its event is past that day's applied position.
    """
    current = (
        replace(marks, applied=dict(marks.applied), marks=dict(marks.marks))
        if marks is not None
        else UsageMarks(session_id=session_id, tenant=events[0].event.tenant)
    )
    changed_days: dict[str, UsageDay] = {}
    baselines: dict[str, dict[str, int]] = {}
    by_day: dict[date, tuple[UsageDay, dict[str, int]]] = {}  # the ids, built once per day
    counted: dict[str, PositionedEvent] = {}  # the newest event counted, per day record
    marks_changed = False
    for positioned in events:
        key = applied_key(positioned.position.partition)
        offset = positioned.position.offset
        if offset <= current.applied.get(key, -1):
            continue
        at = positioned.occurred_at_ms
        for sample in positioned.gpu_readings:
            previous = current.marks.get(sample.uuid)
            if previous is None and len(current.marks) >= SESSION_MAX_GPUS:
                current.gpus_dropped += 1
                continue
            idle_now = _is_idle(sample.utilization_gpu_pct, sample.memory_used_mib, rules)
            if previous is not None and previous.at >= at:
                continue  # an older or repeated reading: no interval, the mark stays
            if previous is not None and (at - previous.at).total_seconds() <= rules.max_gap_s:
                busy = (
                    sample.utilization_gpu_pct is not None
                    and sample.utilization_gpu_pct > rules.busy_above_pct
                )
                idle = previous.idle and idle_now
                for day, millis in split_by_day(previous.at, at):
                    found = by_day.get(day)
                    if found is None:
                        record = _day_record(day, positioned, stored_days, changed_days, baselines)
                        found = by_day[day] = (record, baselines[record.document_id])
                    record, baseline = found
                    if offset <= baseline.get(key, -1):
                        continue  # counted on this day before (redelivery, replay)
                    usage = record.usage_of(sample, positioned.event.labels)
                    usage.held_ms += millis
                    usage.busy_ms += millis if busy else 0
                    usage.idle_ms += millis if idle else 0
                    record.applied[key] = offset
                    counted[record.document_id] = positioned
            current.marks[sample.uuid] = GpuMark(sample.uuid, at, idle_now)
        current.applied[key] = offset
        marks_changed = True
    for document_id, newest in counted.items():
        changed_days[document_id].labels = dict(newest.event.labels)
        changed_days[document_id].runtime = newest.event.source.runtime
    return UsageFold(
        marks=current,
        marks_changed=marks_changed,
        days={document_id: changed_days[document_id] for document_id in sorted(counted)},
    )


def _day_record(
    day: date,
    positioned: PositionedEvent,
    stored: dict[str, UsageDay],
    changed: dict[str, UsageDay],
    baselines: dict[str, dict[str, int]],
) -> UsageDay:
    """The day record to add to (a copy of the stored one, or a new one); notes its applied
    positions as stored, which the guard compares against."""
    document_id = usage_day_id(positioned.session_id, day)
    record = changed.get(document_id)
    if record is not None:
        return record
    found = stored.get(document_id)
    if found is None:
        record = UsageDay(
            session_id=positioned.event.session_id,
            day=day,
            tenant=positioned.event.tenant,
            labels=dict(positioned.event.labels),
            runtime=positioned.event.source.runtime,
        )
    else:
        record = replace(
            found,
            applied=dict(found.applied),
            gpus={entry: replace(usage) for entry, usage in found.gpus.items()},
            label_sets=[dict(labels) for labels in found.label_sets],
        )
    baselines[document_id] = dict(record.applied)
    changed[document_id] = record
    return record


_EARLIEST = datetime.min.replace(tzinfo=UTC)
"""Stored events may predate the edge's floor on ``occurred_at`` (year 1 itself)."""


def touched_days(events: Iterable[PositionedEvent], max_gap_s: float) -> set[str]:
    """Ids of the day records ``events`` may add to (their days and, for an interval that
    starts before midnight, the days before it within the max gap)."""
    gap = timedelta(seconds=max_gap_s)
    spans: set[tuple[str, date, date]] = set()
    for positioned in events:
        at = _in_utc(positioned.occurred_at_ms)
        first = (at - gap).date() if at - _EARLIEST > gap else _EARLIEST.date()
        spans.add((positioned.session_id, first, at.date()))
    ids: set[str] = set()
    for session_id, first, last in spans:
        day = first
        while day <= last:
            ids.add(usage_day_id(session_id, day))
            day += timedelta(days=1)
    return ids
