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
    wait_s = limiter.try_acquire(key.key_id)
    if wait_s > 0:
        metrics.count("rejected")
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of {limiter.rate:g} requests/s for key {key.key_id!r} exceeded; "
            "retry after the Retry-After seconds",
            headers={"Retry-After": RateLimiter.retry_after_header(wait_s)},
        )
    return key


ApiKeyDep = Annotated[ApiKey, Depends(authenticate_writer)]
"""The authenticated key of a report; its id and tenant are stamped on every event."""
