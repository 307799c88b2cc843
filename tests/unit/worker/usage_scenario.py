"""Synthetic sessions with known busy and idle stretches, a reporting gap and a midnight, and
the GPU seconds they must give (shared by the unit and the real-stack tests)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ca4_schemas import GpuMetadataReported
from ca4_worker.application.usage import Versioned
from ca4_worker.domain.records import Position, PositionedEvent
from ca4_worker.domain.usage import GpuUsage, UsageDay, UsageRules
from ca4_worker.persistence.usage_memory import InMemoryUsageRecords

from tests.unit.worker.factories import event_body, gpu_sample

START = datetime(2026, 1, 5, 23, 50, tzinfo=UTC)
"""Ten minutes before midnight: the vision session's idle stretch ends exactly at midnight."""


def _report(session: str, project: str, offset_s: int, gpu: dict[str, Any]) -> dict[str, Any]:
    return event_body(
        session_id=session,
        occurred_at=START + timedelta(seconds=offset_s),
        gpus=[gpu],
        labels={"project": project, "notebook": "usage.ipynb"},
    )


def vision_reports() -> list[dict[str, Any]]:
    """One T4 every 60 s: 5 busy intervals (300 s), 1 interval leaving busy (60 s held only),
    4 idle (240 s, up to midnight), a 300 s gap (not billed), then 2 idle intervals (120 s)."""

    def t4(utilization: float) -> dict[str, Any]:
        return gpu_sample(0, uuid_="GPU-usage-t4", utilization=utilization, memory_used=1000.0)

    busy = [_report("usage-vision", "vision", 60 * step, t4(90.0)) for step in range(6)]
    idle = [_report("usage-vision", "vision", 60 * step, t4(0.0)) for step in range(6, 11)]
    after_gap = [_report("usage-vision", "vision", s, t4(0.0)) for s in (900, 960, 1020)]
    return [*busy, *idle, *after_gap]


def nlp_reports() -> list[dict[str, Any]]:
    """One A100 every 30 s: 3 busy intervals (90 s), then 2 with no memory in use (60 s held,
    neither busy nor idle)."""

    def a100(utilization: float, memory: float) -> dict[str, Any]:
        return gpu_sample(
            0, uuid_="GPU-usage-a100", name="NVIDIA A100-SXM4-40GB", utilization=utilization,
            memory_used=memory,
        )  # fmt: skip

    busy = [_report("usage-nlp", "nlp", 30 * step, a100(50.0, 2000.0)) for step in range(4)]
    freed = [_report("usage-nlp", "nlp", 30 * step, a100(0.0, 0.0)) for step in range(4, 6)]
    return [*busy, *freed]


EXPECTED_BY_PROJECT = {
    "vision": {"held_seconds": 720.0, "busy_seconds": 300.0, "idle_seconds": 360.0},
    "nlp": {"held_seconds": 150.0, "busy_seconds": 90.0, "idle_seconds": 0.0},
}
EXPECTED_VISION_BY_DAY = {
    "2026-01-05": {"held_seconds": 600.0, "busy_seconds": 300.0, "idle_seconds": 240.0},
    "2026-01-06": {"held_seconds": 120.0, "busy_seconds": 0.0, "idle_seconds": 120.0},
}


def seconds(row: dict[str, Any]) -> dict[str, float]:
    """The three second counts of a usage row."""
    return {key: row[key] for key in ("held_seconds", "busy_seconds", "idle_seconds")}


RULES = UsageRules(busy_above_pct=10.0, idle_memory_above_mib=0.0, max_gap_s=120.0)


def scenario_events() -> list[PositionedEvent]:
    """Both sessions as Kafka would position them (one partition each, in report order)."""
    return [
        PositionedEvent(
            event=GpuMetadataReported.model_validate_json(json.dumps(body)),
            position=Position(partition, offset),
        )
        for partition, reports in ((0, vision_reports()), (1, nlp_reports()))
        for offset, body in enumerate(reports)
    ]


TENANT_EVIL = "evil"
"""A tenant whose day records keep coming (:class:`RecordingRecords` with ``stalling``)."""


def day_record(
    tenant: str, session: str, project: str, held_s: int, model: str = "H100"
) -> UsageDay:
    """One day record of one GPU of ``model`` held ``held_s`` seconds, labelled ``project``."""
    return UsageDay(
        session_id=session,
        day=START.date(),
        tenant=tenant,
        labels={"project": project},
        runtime="colab",
        gpus={(f"GPU-{session}", 0): GpuUsage(f"GPU-{session}", model, held_ms=held_s * 1000)},
    )


class RecordingRecords(InMemoryUsageRecords):
    """In-memory day records that note the tenant of each scan; with ``stalling``, a scan that
    includes :data:`TENANT_EVIL`'s (every tenant's, or its own) keeps yielding its records until
    the report's deadline (or 5 s, so a report without one ends too)."""

    def __init__(self, *days: UsageDay, stalling: bool = False) -> None:
        super().__init__()
        self.asked: list[str | None] = []
        """The tenant of each scan, in order (``None``: every tenant's)."""
        self.stalling = stalling
        self.add(*days)

    def add(self, *days: UsageDay) -> None:
        """Store ``days``."""
        for day in days:
            self.days[day.document_id] = Versioned(day, 1)

    async def days_between(
        self, start: date, end: date, *, tenant: str | None
    ) -> AsyncGenerator[UsageDay]:
        self.asked.append(tenant)
        async for day in super().days_between(start, end, tenant=tenant):
            yield day
        if not self.stalling or tenant not in {None, TENANT_EVIL}:
            return
        loop = asyncio.get_running_loop()
        until = loop.time() + 5
        while loop.time() < until:
            await asyncio.sleep(0.01)
            yield day_record(TENANT_EVIL, "e", "junk", 1)
