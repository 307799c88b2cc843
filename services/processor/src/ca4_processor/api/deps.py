"""Dependencies of the routes, as ``Annotated`` aliases (``SettingsDep``, ``ApiKeyIdDep``, ...).

All are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool, which costs
latency on every request and would lose the structlog context they bind.
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends, HTTPException, Request, status

from ca4_processor.core.config import Settings
from ca4_processor.metrics import IngestMetrics
from ca4_processor.publishing import EventPublisher
from ca4_processor.security import ApiKeyRing, RateLimiter


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


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
PublisherDep = Annotated[EventPublisher, Depends(get_publisher)]
MetricsDep = Annotated[IngestMetrics, Depends(get_metrics)]


async def authenticate(request: Request, metrics: MetricsDep) -> str:
    """The id of the caller's API key; ``401`` without a valid one, ``429`` over its rate."""
    key_ring: ApiKeyRing = request.app.state.key_ring
    limiter: RateLimiter = request.app.state.rate_limiter
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        metrics.count("rejected")
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key_id = key_ring.identify(presented.strip())
    if key_id is None:
        metrics.count("rejected")
        structlog.get_logger(__name__).warning("auth.rejected", reason="unknown or revoked key")
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked API key",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    structlog.contextvars.bind_contextvars(key_id=key_id)
    wait_s = limiter.try_acquire(key_id)
    if wait_s > 0:
        metrics.count("rejected")
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of {limiter.rate:g} requests/s for key {key_id!r} exceeded; "
            "retry after the Retry-After seconds",
            headers={"Retry-After": RateLimiter.retry_after_header(wait_s)},
        )
    return key_id


ApiKeyIdDep = Annotated[str, Depends(authenticate)]
