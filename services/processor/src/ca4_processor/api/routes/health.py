"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse

from ca4_processor.api.deps import PublisherDep, SettingsDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def read_liveness() -> dict[str, str]:
    """Liveness: the process is up and serving (never checks Kafka, so no restart storms)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "Kafka does not answer; take this replica out of rotation"}},
)
async def read_readiness(publisher: PublisherDep, settings: SettingsDep) -> JSONResponse:
    """Readiness: ``200`` while the Kafka broker answers, ``503`` otherwise."""
    if await publisher.is_ready():
        return JSONResponse({"status": "ready", "kafka": "connected"})
    return JSONResponse(
        {"status": "unavailable", "kafka": "unreachable"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(settings.RETRY_AFTER_S)},
    )
