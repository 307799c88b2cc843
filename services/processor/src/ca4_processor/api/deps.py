"""Dependencies of the routes, as ``Annotated`` aliases (``SettingsDep``, ``ApiKeyIdDep``, ...).

All are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool, which costs
latency on every request and would lose the structlog context they bind.
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

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


bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An API key: `Authorization: Bearer <key>` (the dev stack accepts `ca4-dev-key`)",
)
"""Declares the Bearer scheme in OpenAPI, so ``/docs`` sends the key; errors stay ours."""
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


async def authenticate(request: Request, metrics: MetricsDep, bearer: BearerDep) -> str:
    """The id of the caller's API key; ``401`` without a valid one, ``429`` over its rate."""
    key_ring: ApiKeyRing = request.app.state.key_ring
    limiter: RateLimiter = request.app.state.rate_limiter
    if bearer is None:
        metrics.count("rejected")
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key_id = key_ring.identify(bearer.credentials)
    if key_id is None:
        metrics.count("rejected")
        structlog.get_logger(__name__).warning("auth.rejected", reason="unknown or revoked key")
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked API key",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    structlog.contextvars.bind_contextvars(key_id=key_id)
    # Every request costs at least one token, taken before its body is read, so an exhausted
    # key is refused cheaply; charge_reports takes the rest once the reports are counted.
    wait_s = limiter.try_acquire(key_id)
    if wait_s > 0:
        metrics.count("rejected")
        raise _rate_limited(limiter, key_id, wait_s, reports=1)
    return key_id


ApiKeyIdDep = Annotated[str, Depends(authenticate)]


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
