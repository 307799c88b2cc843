"""In-memory usage records, with the database's guard semantics, for unit tests."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import date

from ca4_worker.application.usage import LostGuardError, RecordT, Versioned
from ca4_worker.domain.usage import UsageDay, UsageMarks


class InMemoryUsageRecords:
    """Marks and day records keyed by id, each with a version."""

    def __init__(self) -> None:
        self.marks: dict[str, Versioned[UsageMarks]] = {}
        self.days: dict[str, Versioned[UsageDay]] = {}

    async def load(
        self, session_ids: Iterable[str], day_ids: Iterable[str]
    ) -> tuple[dict[str, Versioned[UsageMarks]], dict[str, Versioned[UsageDay]]]:
        """Copies of the stored records (callers must not share state with the store)."""
        return (
            {key: copy.deepcopy(self.marks[key]) for key in session_ids if key in self.marks},
            {key: copy.deepcopy(self.days[key]) for key in day_ids if key in self.days},
        )

    async def save_days(self, days: Sequence[Versioned[UsageDay]]) -> None:
        """Insert or update under the version guard."""
        _save(self.days, [(item.record.document_id, item) for item in days])

    async def save_marks(self, marks: Sequence[Versioned[UsageMarks]]) -> None:
        """Insert or update under the version guard."""
        _save(self.marks, [(item.record.session_id, item) for item in marks])

    async def reset(self) -> None:
        """Forget everything."""
        self.marks.clear()
        self.days.clear()

    async def days_between(
        self, start: date, end: date, *, tenant: str | None
    ) -> AsyncIterator[UsageDay]:
        """Day records in ``[start, end)`` of ``tenant``."""
        for item in list(self.days.values()):
            if start <= item.record.day < end and tenant in (None, item.record.tenant):
                yield copy.deepcopy(item.record)


def _save(
    stored: dict[str, Versioned[RecordT]], items: list[tuple[str, Versioned[RecordT]]]
) -> None:
    lost = False
    for key, item in items:
        current = stored.get(key)
        if (current.version if current else 0) != item.version:
            lost = True
            continue
        stored[key] = Versioned(copy.deepcopy(item.record), item.version + 1)
    if lost:
        raise LostGuardError("a usage record changed since it was read")
