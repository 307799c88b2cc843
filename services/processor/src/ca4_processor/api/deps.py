"""Dependencies of the routes, as ``Annotated`` aliases (``SettingsDep``, ``WriterDep``, ...).

All are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool, which costs
latency on every request and would lose the structlog context they bind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

from ca4_auth import ApiKey, ApiKeyRing, InFlight, Scope
from ca4_auth.http import BearerCredentials, authorize, retry_after_header
from fastapi import Depends, HTTPException, Request, status

from ca4_processor.core.config import Settings
from ca4_processor.metrics import IngestMetrics
from ca4_processor.ownership import SessionOwners
from ca4_processor.publishing import EventPublisher
from ca4_processor.security import RateLimits, RateRefusal


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


@dataclass(eq=False)
class Writer:
    """An authenticated writer: its key, and the in-flight slot it holds while its body is
    read and validated."""

    key: ApiKey
    """The key of the report; its id and tenant are stamped on every event."""
    _in_flight: InFlight
    _holding: bool = True

    def release_slot(self) -> None:
        """Give the key's in-flight slot back once the body is validated (idempotent).

        The slot bounds what one tenant makes the process hold and do (bodies in memory,
        validation on the event loop); the ownership check and Kafka's acknowledgement that
        follow are waits, bounded by their deadlines and by the weight the key and the process
        may have waiting instead (:func:`waiting_for_kafka`).
        """
        if self._holding:
            self._holding = False
            self._in_flight.leave(self.key.tenant)


async def authenticate_writer(
    request: Request, settings: SettingsDep, metrics: MetricsDep, credentials: BearerCredentials
) -> AsyncIterator[Writer]:
    """The caller's key: ``401`` without a valid one, ``403`` without the ``write`` scope,
    ``429`` over its or its tenant's rate, or over ``MAX_REQUESTS_IN_FLIGHT_PER_TENANT`` bodies
    of its tenant being read or validated at once.

    The route releases the slot once the body is validated; whatever way the request ends
    before that (an error, a disconnect), it is released here.
    """
    key_ring: ApiKeyRing = request.app.state.key_ring
    limits: RateLimits = request.app.state.rate_limits
    in_flight: InFlight = request.app.state.in_flight
    try:
        key = authorize(key_ring, credentials, Scope.WRITE)
    except HTTPException:
        metrics.count("rejected")
        raise
    if not in_flight.enter(key.tenant, settings.MAX_REQUESTS_IN_FLIGHT_PER_TENANT):
        metrics.count("rejected")
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"tenant {key.tenant!r} already has {settings.MAX_REQUESTS_IN_FLIGHT_PER_TENANT} "
            "requests in flight here (MAX_REQUESTS_IN_FLIGHT_PER_TENANT, all its keys "
            "together); retry after the Retry-After seconds",
            headers={"Retry-After": "1"},
        )
    writer = Writer(key, in_flight)
    try:
        # Every request costs at least one token, taken before its body is read, so an
        # exhausted key is refused cheaply; charge takes the rest once the body is weighed and
        # its reports counted.
        if (refusal := limits.try_acquire(key)) is not None:
            metrics.count("rejected")
            raise _rate_limited(refusal, refusal.wait_s, tokens=1, settings=settings)
        yield writer
    finally:
        writer.release_slot()


WriterDep = Annotated[Writer, Depends(authenticate_writer)]
"""The authenticated writer of a report (its key, and its in-flight slot)."""


@contextmanager
def waiting_for_kafka(
    request: Request, key: ApiKey, metrics: IngestMetrics, *, weight: int, reports: int
) -> Iterator[None]:
    """Hold the ``weight`` of ``key``'s validated reports (``reports`` of them) while they wait
    for the ownership check and Kafka's acknowledgement.

    ``429`` when that takes the key's tenant over ``MAX_WAITING_WEIGHT_PER_TENANT``, ``503``
    when it takes the process over ``MAX_WAITING_WEIGHT``: only a slow Kafka or database lets
    either fill, and nothing is accepted then. Without this bound, a tenant could park as many
    reports as the rate limit let in over those deadlines.
    """
    waiting: InFlight = request.app.state.waiting
    settings: Settings = request.app.state.settings
    retry_after = {"Retry-After": str(settings.RETRY_AFTER_S)}
    if not waiting.fits(key.tenant, settings.MAX_WAITING_WEIGHT_PER_TENANT, weight):
        held = waiting.held_by(key.tenant)
        metrics.count("rejected", reports)
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"tenant {key.tenant!r} already has reports weighing {held} bytes waiting for "
            f"Kafka here, and this request's {weight} would take it over "
            f"MAX_WAITING_WEIGHT_PER_TENANT ({settings.MAX_WAITING_WEIGHT_PER_TENANT}, all its "
            "keys together); nothing was accepted, retry after the Retry-After seconds",
            headers=retry_after,
        )
    if not waiting.fits_total(settings.MAX_WAITING_WEIGHT, weight):
        # Kafka (or the database) is slow for everyone: our side, like any other 503.
        metrics.count("unavailable", reports)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"this processor already holds reports weighing {waiting.total} bytes waiting for "
            f"Kafka (MAX_WAITING_WEIGHT {settings.MAX_WAITING_WEIGHT}); nothing was accepted, "
            "retry after the Retry-After seconds",
            headers=retry_after,
        )
    waiting.add(key.tenant, weight)  # both caps checked above, with nothing awaited since
    try:
        yield
    finally:
        waiting.leave(key.tenant, weight)


def charge(
    request: Request,
    key: ApiKey,
    metrics: IngestMetrics,
    *,
    weight: int,
    reports: int,
    paid: int,
    gpus: int = 0,
) -> int:
    """Take what a request costs beyond the ``paid`` tokens already taken, and return what it
    has paid now: one token per report, per ``RATE_LIMIT_TOKEN_WEIGHT`` of the body's
    ``weight`` or per ``RATE_LIMIT_GPUS_PER_TOKEN`` of its reports' ``gpus``, whichever is most
    (``reports`` and ``gpus`` are ``0`` while they are not counted yet), from the key's bucket
    and its tenant's.

    ``413`` when the request costs more than the key's bucket can ever hold (retrying could
    never help; the SDK halves a batch on ``413``), ``429`` while either bucket is short.
    """
    limits: RateLimits = request.app.state.rate_limits
    settings: Settings = request.app.state.settings
    tokens = max(
        reports,
        -(-weight // settings.RATE_LIMIT_TOKEN_WEIGHT),
        -(-gpus // settings.RATE_LIMIT_GPUS_PER_TOKEN),
    )
    if tokens <= paid or not limits.enabled:
        return max(tokens, paid)
    burst, key_id = limits.burst, key.key_id
    if tokens > burst:
        metrics.count("rejected", max(reports, 1))
        if reports > burst:
            message = (
                f"{reports} reports in one request are more than the rate-limit burst of "
                f"{burst} reports for key {key_id!r}; send at most {burst} per request"
            )
        elif weight:
            message = (
                f"a body weighing {weight} bytes costs {tokens} tokens (one per "
                f"{settings.RATE_LIMIT_TOKEN_WEIGHT} bytes of weight), more than the rate-limit "
                f"burst of {burst} for key {key_id!r}; send fewer reports per request"
            )
        else:
            message = (
                f"reports of {gpus} GPUs in all cost {tokens} tokens (one per "
                f"{settings.RATE_LIMIT_GPUS_PER_TOKEN} GPUs), more than the rate-limit burst of "
                f"{burst} for key {key_id!r}; send fewer reports per request"
            )
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, message)
    if (refusal := limits.try_acquire(key, tokens - paid)) is not None:
        metrics.count("rejected", max(reports, 1))
        # The retry pays again what this request has paid already (its first token, and its
        # weight's share once validated), so it must wait for those too, or it never fits.
        raise _rate_limited(
            refusal, refusal.wait_s + paid / refusal.rate, tokens=tokens, settings=settings
        )
    return tokens


def _rate_limited(
    refusal: RateRefusal, wait_s: float, *, tokens: int, settings: Settings
) -> Exception:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        f"rate limit of {refusal.rate:g} tokens/s for {refusal.whose} exceeded (this request "
        f"costs {tokens}: one per report, per {settings.RATE_LIMIT_TOKEN_WEIGHT} bytes of body "
        f"weight or per {settings.RATE_LIMIT_GPUS_PER_TOKEN} GPUs, whichever is most); retry "
        "after the Retry-After seconds",
        headers={"Retry-After": retry_after_header(wait_s)},
    )
