"""Stamping and session ownership on the ingest path: which reports a key may publish.

A session belongs to the tenant whose key reported it first (:mod:`ca4_processor.ownership`);
reports of another tenant's session are refused with ``403`` (per report in a batch), and the
answer never names the owner.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final, Literal

import structlog
from ca4_auth import ApiKey
from ca4_auth.http import retry_after_header
from ca4_schemas import GpuMetadataReport, GpuMetadataReported
from ca4_schemas.api import ErrorItem
from fastapi import HTTPException, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from ca4_processor.core.config import Settings
from ca4_processor.metrics import IngestMetrics
from ca4_processor.ownership import OwnershipUnavailableError, SessionOwners
from ca4_processor.security import RateLimits

log = structlog.get_logger(__name__)

SESSION_FORBIDDEN: Final = "session_forbidden"
"""``type`` of a refusal for a report of another tenant's session: the batch's error item, and
the single report's ``403`` body beside its ``detail``."""
_ROTATION_HINT = (
    "a session first reported before the tenancy upgrade belongs to tenant legacy, which no "
    "key holds; a rotated key must keep its key id or name the same tenant: "
    "key_id:<hash>:<tenant>"
)
"""The two usual causes after an upgrade: a session reported before tenancy (the README's
"Upgrading from a pre-tenancy release"), and a key replaced by one of another tenant. Said to
every refused key alike, so it tells nothing about the owner."""


class SessionForbiddenBody(BaseModel):
    """The ``403`` of a single report of another tenant's session: a message body with the
    batch error's ``type``, so a client tells it from a key without the write scope."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    detail: str
    """What went wrong and what to do about it."""
    type: Literal["session_forbidden"] = SESSION_FORBIDDEN
    """Always ``session_forbidden``, as in a batch's error item."""


def session_forbidden_message(session_id: str) -> str:
    """Why a report of another tenant's session was refused (never says whose it is).

    Clients match the text before the hint, which stays as it was.
    """
    return (
        f"session {session_id!r} belongs to another tenant; report under a session_id of your "
        f"own ({_ROTATION_HINT})"
    )


def session_forbidden_response(session_id: str) -> JSONResponse:
    """The ``403`` answer to a single report of another tenant's session."""
    body = SessionForbiddenBody(detail=session_forbidden_message(session_id))
    return JSONResponse(body.model_dump(), status_code=status.HTTP_403_FORBIDDEN)


def session_forbidden_item(index: int) -> ErrorItem:
    """The batch error for report ``index`` of another tenant's session."""
    return ErrorItem(
        loc=["body", "reports", index, "session_id"],
        msg="session belongs to another tenant; report under a session_id of your own "
        f"({_ROTATION_HINT})",
        type=SESSION_FORBIDDEN,
    )


def stamp(report: GpuMetadataReport, key: ApiKey, received_at: datetime) -> GpuMetadataReported:
    """The event for ``report``: its key id and tenant come from the key, never the body."""
    return GpuMetadataReported.stamped(
        report, received_at=received_at, key_id=key.key_id, tenant=key.tenant
    )


async def foreign_sessions(
    events: Sequence[GpuMetadataReported],
    key: ApiKey,
    owners: SessionOwners,
    metrics: IngestMetrics,
    settings: Settings,
    *,
    limits: RateLimits,
    paid: int,
) -> set[str]:
    """The session ids among ``events`` owned by another tenant (new ones are claimed).

    ``503`` when ownership cannot be established in time: nothing is published unchecked.
    ``429`` when the sessions it would start are more than the tenant's new-session bucket
    holds (``RATE_LIMIT_NEW_SESSIONS_PER_SECOND``), ``413`` when more than it can ever hold:
    nothing is claimed or published, and the ``paid`` tokens of the rate limit are given back
    (a fleet retrying its new sessions would otherwise spend the tenant's running ones' share).
    """
    try:
        owned = await owners.owners(
            {event.session_id: key.tenant for event in events},
            admit=(
                (lambda new: _admit_new_sessions(limits, key, new, metrics, paid, len(events)))
                if limits.new_sessions is not None
                else None  # no lookup before the claim: one round trip for a new session
            ),
        )
    except OwnershipUnavailableError as error:
        metrics.count("unavailable", len(events))
        log.warning("ingest.ownership_unavailable", events=len(events), error=str(error))
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "session ownership cannot be checked right now; nothing was accepted, retry later "
            "with the same event_id",
            headers={"Retry-After": str(settings.RETRY_AFTER_S)},
        ) from None
    foreign = {session_id for session_id, owner in owned.items() if owner != key.tenant}
    if foreign:
        log.warning("ingest.session_forbidden", session_ids=sorted(foreign))
    return foreign


def _admit_new_sessions(  # noqa: PLR0917 - what the refusal gives back and says
    limits: RateLimits, key: ApiKey, new: int, metrics: IngestMetrics, paid: int, reports: int
) -> None:
    """Pay for ``new`` sessions from the key's tenant's new-session bucket, or refuse the
    request, giving back the ``paid`` tokens of the rate limit."""
    tenant = key.tenant
    if (refusal := limits.try_start_sessions(tenant, new)) is None:
        return
    limits.give_back(key, paid)
    metrics.count("rejected", reports)
    burst = limits.new_sessions.burst if limits.new_sessions is not None else 0
    if new > burst:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"this request starts {new} new sessions, more than {refusal.whose} may ever start "
            f"at once (RATE_LIMIT_NEW_SESSIONS_BURST: {burst:g}); send reports of fewer new "
            "sessions per request",
        )
    log.info("ingest.new_sessions_limited", tenant=tenant, new_sessions=new)
    raise HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        f"this request starts {new} new sessions, more than {refusal.whose} may start now "
        f"(RATE_LIMIT_NEW_SESSIONS_PER_SECOND: {refusal.rate:g}/s, all its keys together); "
        "reports of sessions already started are not limited by this. Nothing was accepted; "
        "retry after the Retry-After seconds",
        headers={"Retry-After": retry_after_header(refusal.wait_s)},
    )
