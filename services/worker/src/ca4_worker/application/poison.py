"""Poison handling shared by the store and the projection stages.

A refusal that would repeat on every try (:class:`RejectedError` or one of
:data:`DATA_ERRORS`), or any other error that outlasts ``max_attempts`` tries, is poison: the
work is split in halves until the offending events are alone, and those are dead-lettered with
the error. So no batch is retried in a hot loop, and one bad event never stops a partition.
Outages are not poison: the callers wait them out
(:func:`~ca4_worker.application.retry.until_available`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TypeVar

import structlog

from ca4_worker.application.ports import DeadLetterSink, RejectedError
from ca4_worker.application.retry import until_available
from ca4_worker.core import metrics
from ca4_worker.domain.dead_letters import ERROR_UNEXPECTED, PoisonStage, staged
from ca4_worker.domain.records import DeadLetter, PositionedEvent, RawRecord, record_ids

log = structlog.get_logger(__name__)
ResultT = TypeVar("ResultT")

DATA_ERRORS: tuple[type[Exception], ...] = (
    ArithmeticError,
    LookupError,
    RecursionError,
    TypeError,
    ValueError,
)
"""Errors that the same events raise again on every try: no I/O raises them (the driver's own
failures are its own classes, outages are waited out inside the operation), so retrying them
with backoff at every halving level only stalls every other event of the round."""
MAX_ERROR_MESSAGE = 1000


@dataclass(frozen=True)
class Rejection:
    """An event the store or the projections refused for good, and why."""

    event: PositionedEvent
    error_class: str
    message: str

    def dead_letter(self, record: RawRecord) -> DeadLetter:
        """The dead letter of ``record``, the raw record this event was decoded from."""
        return DeadLetter(record, self.error_class, self.message, self.event.tenant)


async def isolating_poison(
    events: Sequence[PositionedEvent],
    operation: Callable[[Sequence[PositionedEvent]], Awaitable[ResultT]],
    *,
    stage: PoisonStage,
    max_attempts: int,
    max_backoff_s: float,
) -> tuple[list[ResultT], list[Rejection]]:
    """``operation(events)``; on poison, the same on each half until the poison is alone.

    Returns the results of the parts that went through (in position order) and the events
    refused for good. Halves run in order, so a session's events still apply in order.
    """
    attempts = 0
    while True:
        try:
            return [await operation(events)], []
        except RejectedError as error:
            cause = (staged(stage, error.error_class), str(error))
            break
        except DATA_ERRORS as error:  # the data's own arithmetic or values: would fail again
            cause = (staged(stage, ERROR_UNEXPECTED), f"{type(error).__name__}: {error}")
            break
        except Exception as error:  # an unknown failure gets a budget of tries, then is poison
            attempts += 1
            if attempts >= max_attempts:
                cause = (staged(stage, ERROR_UNEXPECTED), f"{type(error).__name__}: {error}")
                break
            log.warning(
                "unexpected error, retrying",
                stage=stage,
                attempt=attempts,
                of=max_attempts,
                events=len(events),
                error=f"{type(error).__name__}: {error}",
            )
            await asyncio.sleep(min(0.1 * 2**attempts, max_backoff_s))
    if len(events) == 1:
        error_class, message = cause
        return [], [Rejection(events[0], error_class, message[:MAX_ERROR_MESSAGE])]
    log.warning("refused, isolating the poison", stage=stage, events=len(events), error=cause[1])
    half = len(events) // 2
    parts = [
        await isolating_poison(
            part, operation, stage=stage, max_attempts=max_attempts, max_backoff_s=max_backoff_s
        )
        for part in (events[:half], events[half:])
    ]
    return [done for part in parts for done in part[0]], [bad for part in parts for bad in part[1]]


async def publish_dead_letters(
    sink: DeadLetterSink,
    letters: Sequence[DeadLetter],
    *,
    max_backoff_s: float,
    trace_id: Callable[[RawRecord], str | None] = lambda record: None,
    known_tenants: Callable[[], Collection[str]] = frozenset,
) -> None:
    """Publish ``letters`` (waiting out a Kafka outage), count and log each.

    A letter is counted under its tenant when that is one of ``known_tenants()`` (the keys'
    tenants: a bounded label whoever writes to the topic), else under ``""``.
    """
    await until_available(
        lambda: sink.publish(letters), what="publish dead letters", max_backoff_s=max_backoff_s
    )
    known = known_tenants()
    for letter in letters:
        label = letter.tenant if letter.tenant in known else metrics.UNATTRIBUTED
        metrics.count_dead_letter(letter.error_class, label)
        log.warning(
            "dead-lettered",
            error_class=letter.error_class,
            tenant=letter.tenant,
            partition=letter.record.partition,
            offset=letter.record.offset,
            trace_id=trace_id(letter.record),
            **record_ids(letter.record),
        )
