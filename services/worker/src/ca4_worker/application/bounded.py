"""Bounded work per database call: chunks, a limit on calls in flight, halving on a timeout.

A call that misses its deadline may still be running on the server; sending the same work
again on top of it is what deadlocked FerretDB v1's connection pool (docs/architecture.md,
"Bounded work per database call"). So a timed-out chunk is split in two and the halves run one
after the other, after a backoff; only a single item that keeps timing out is waited out as an
outage. The operation must be safe to repeat (every store and projection write is).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import structlog

from ca4_worker.application.ports import TimedOutError
from ca4_worker.application.retry import until_available

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class WriteLimits:
    """How much one database call may carry, how many run at once, how long each may take."""

    chunk: int = 100
    """Most aggregates (statements) per call."""
    concurrency: int = 2
    """Most calls in flight at once."""
    deadline_s: float | None = 10.0
    """Client-side deadline of each call; ``None`` waits for the driver's own timeouts."""
    max_backoff_s: float = 5.0
    """Ceiling of the backoff between tries while the database is unavailable."""


@asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """An :class:`asyncio.TaskGroup` that raises its first failure as itself (callers sort
    failures by type), not wrapped in an exception group."""
    try:
        async with asyncio.TaskGroup() as group:
            yield group
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None


def chunks(items: Sequence[ItemT], size: int) -> list[Sequence[ItemT]]:
    """``items`` cut into consecutive slices of at most ``size``."""
    return [items[start : start + size] for start in range(0, len(items), size)]


async def in_bounded_calls(
    items: Sequence[ItemT],
    operation: Callable[[Sequence[ItemT]], Awaitable[ResultT]],
    *,
    limits: WriteLimits,
    slots: asyncio.Semaphore,
    what: str,
) -> list[ResultT]:
    """Run ``operation`` over ``items`` in chunks of at most ``limits.chunk``, each holding
    one of ``slots`` (shared by the caller's other bounded calls).

    Results come back in chunk order (a timed-out chunk contributes one result per piece).
    Chunks run concurrently up to the free ``slots``; halves of a timed-out chunk run in order.
    """

    async def bounded(piece: Sequence[ItemT]) -> list[ResultT]:
        async with slots:
            return await _shrinking(piece, operation, what=what, max_backoff_s=limits.max_backoff_s)

    if not items:
        return []
    pieces = chunks(items, limits.chunk)
    if len(pieces) == 1:
        return await bounded(pieces[0])
    async with task_group() as group:
        tasks = [group.create_task(bounded(piece)) for piece in pieces]
    return [result for task in tasks for result in task.result()]


async def _shrinking(
    items: Sequence[ItemT],
    operation: Callable[[Sequence[ItemT]], Awaitable[ResultT]],
    *,
    what: str,
    max_backoff_s: float,
    backoff_s: float = 0.1,
) -> list[ResultT]:
    try:
        return [
            await until_available(
                lambda: operation(items),
                what=what,
                max_backoff_s=max_backoff_s,
                retry_timeouts=len(items) == 1,
            )
        ]
    except TimedOutError as error:
        half = len(items) // 2
        log.warning(
            "database call timed out, halving it",
            operation=what,
            items=len(items),
            halves=(half, len(items) - half),
            error=str(error),
        )
        await asyncio.sleep(min(backoff_s, max_backoff_s))
        pause = min(backoff_s * 2, max_backoff_s)
        first = await _shrinking(
            items[:half], operation, what=what, max_backoff_s=max_backoff_s, backoff_s=pause
        )
        second = await _shrinking(
            items[half:], operation, what=what, max_backoff_s=max_backoff_s, backoff_s=pause
        )
        return first + second
