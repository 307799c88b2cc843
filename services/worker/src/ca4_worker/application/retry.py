"""Retry while a dependency is unavailable: exponential backoff, no attempt limit.

Giving up would mean committing offsets of unprocessed messages or dropping them, so the
worker waits for the dependency instead; the consumer lag metric shows the delay.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    wait_exponential,
)

from ca4_worker.application.ports import TimedOutError, UnavailableError

ResultT = TypeVar("ResultT")
log = structlog.get_logger(__name__)


async def until_available(
    operation: Callable[[], Awaitable[ResultT]],
    *,
    what: str,
    max_backoff_s: float,
    retry_timeouts: bool = True,
) -> ResultT:
    """Run ``operation`` until it stops raising :class:`UnavailableError`.

    With ``retry_timeouts=False`` a :class:`TimedOutError` is raised to the caller, which
    retries with less work (see :mod:`ca4_worker.application.bounded`).
    """

    def _retryable(error: BaseException) -> bool:
        if isinstance(error, TimedOutError):
            return retry_timeouts
        return isinstance(error, UnavailableError)

    def _log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "dependency unavailable, retrying",
            operation=what,
            attempt=state.attempt_number,
            error=str(error),
        )

    async for attempt in AsyncRetrying(
        retry=retry_if_exception(_retryable),
        wait=wait_exponential(multiplier=0.1, max=max_backoff_s),
        before_sleep=_log_retry,
        reraise=True,
    ):
        with attempt:
            return await operation()
    raise AssertionError("unreachable: tenacity retries forever")  # pragma: no cover
