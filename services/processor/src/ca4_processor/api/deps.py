"""Dependencies of the routes, as ``Annotated`` aliases (``SettingsDep``, ``ApiKeyDep``, ...).

All are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool, which costs
latency on every request and would lose the structlog context they bind.
"""

from __future__ import annotations

from typing import Annotated

from ca4_auth import ApiKey, ApiKeyRing, Scope
from ca4_auth.http import BearerCredentials, authorize
from fastapi import Depends, HTTPException, Request, status

from ca4_processor.core.config import Settings
from ca4_processor.metrics import IngestMetrics
from ca4_processor.ownership import SessionOwners
from ca4_processor.publishing import EventPublisher
from ca4_processor.security import RateLimiter


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was built with (tests build apps with their own)."""
    settings: Settings = request.app.state.settings
    return settings


async def get_publisher(request: Request) -> EventPublisher:
    """The event publisher port (Kafka in production, a fake in unit tests)."""
    publisher: EventPublisher = request.app.state.publisher
    return publisher


async def get_metrics(request: Request) -> IngestMetrics:
    """The app's ingest metrics."""
    metrics: IngestMetrics = request.app.state.metrics
    return metrics


async def get_session_owners(request: Request) -> SessionOwners:
    """Who owns each session (claims in the database; in-memory claims in unit tests)."""
    owners: SessionOwners = request.app.state.session_owners
    return owners


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
PublisherDep = Annotated[EventPublisher, Depends(get_publisher)]
MetricsDep = Annotated[IngestMetrics, Depends(get_metrics)]
SessionOwnersDep = Annotated[SessionOwners, Depends(get_session_owners)]


async def authenticate_writer(
    request: Request, metrics: MetricsDep, credentials: BearerCredentials
) -> ApiKey:
    """The caller's API key: ``401`` without a valid one, ``403`` without the ``write`` scope,
    ``429`` over its rate."""
    key_ring: ApiKeyRing = request.app.state.key_ring
    limiter: RateLimiter = request.app.state.rate_limiter
    try:
        key = authorize(key_ring, credentials, Scope.WRITE)
    except HTTPException:
        metrics.count("rejected")
        raise
    # Every request costs at least one token, taken before its body is read, so an exhausted
    # key is refused cheaply; charge_reports takes the rest once the reports are counted.
    wait_s = limiter.try_acquire(key.key_id)
    if wait_s > 0:
        metrics.count("rejected")
        raise _rate_limited(limiter, key.key_id, wait_s, reports=1)
    return key


ApiKeyDep = Annotated[ApiKey, Depends(authenticate_writer)]
"""The authenticated key of a report; its id and tenant are stamped on every event."""


def charge_reports(request: Request, key_id: str, reports: int, metrics: IngestMetrics) -> None:
    """Take the tokens of a request's other ``reports - 1`` reports: one token per report.

    ``413`` when the request holds more reports than the key's bucket can ever hold (retrying
    could never help; the SDK halves a batch on ``413``), ``429`` while the bucket is short.
    """
    limiter: RateLimiter = request.app.state.rate_limiter
    if reports <= 1 or limiter.rate <= 0:
        return
    if reports > limiter.burst:
        metrics.count("rejected", reports)
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{reports} reports in one request are more than the rate-limit burst of "
            f"{limiter.burst} reports for key {key_id!r}; send at most {limiter.burst} per request",
        )
    wait_s = limiter.try_acquire(key_id, tokens=reports - 1)
    if wait_s > 0:
        metrics.count("rejected", reports)
        # The retry pays its first token in authenticate again, hence one token's time more.
        raise _rate_limited(limiter, key_id, wait_s + 1 / limiter.rate, reports=reports)


def _rate_limited(limiter: RateLimiter, key_id: str, wait_s: float, *, reports: int) -> Exception:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        f"rate limit of {limiter.rate:g} reports/s for key {key_id!r} exceeded "
        f"(this request carries {reports}, one token each); retry after the Retry-After seconds",
        headers={"Retry-After": RateLimiter.retry_after_header(wait_s)},
    )
