"""In-memory usage records, with the database's guard semantics, for unit tests."""

from __future__ import annotations

import copy
from collections.abc import AsyncGenerator, Iterable, Sequence
from datetime import date

from ca4_worker.application.usage import LostGuardError, Versioned
from ca4_worker.domain.usage import UsageDay


class InMemoryUsageRecords:
    """Day records keyed by id, each with a version (the marks travel inside them)."""

    def __init__(self) -> None:
        self.days: dict[str, Versioned[UsageDay]] = {}

    async def load(
        self, session_ids: Iterable[str], day_ids: Iterable[str]
    ) -> dict[str, Versioned[UsageDay]]:
        """Copies of the stored records (callers must not share state with the store)."""
        wanted = set(session_ids)
        found = {key: copy.deepcopy(self.days[key]) for key in day_ids if key in self.days}
        for key, item in self.days.items():
            if item.record.marks is not None and item.record.session_id in wanted:
                found[key] = copy.deepcopy(item)
        return found

    async def save(self, days: Sequence[Versioned[UsageDay]]) -> None:
        """Insert or update under the version guard."""
        lost = False
        for item in days:
            key = item.record.document_id
            current = self.days.get(key)
            if (current.version if current else 0) != item.version:
                lost = True
                continue
            self.days[key] = Versioned(copy.deepcopy(item.record), item.version + 1)
        if lost:
            raise LostGuardError("a usage record changed since it was read")

    async def reset(self) -> None:
        """Forget everything."""
        self.days.clear()

    async def days_between(
        self, start: date, end: date, *, tenant: str | None
    ) -> AsyncGenerator[UsageDay]:
        """Day records in ``[start, end)`` of ``tenant``."""
        for item in list(self.days.values()):
            if start <= item.record.day < end and tenant in (None, item.record.tenant):
                yield copy.deepcopy(item.record)
