"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ca4_processor.api.deps import PublisherDep, SettingsDep

router = APIRouter(tags=["health"])


class Liveness(BaseModel):
    """The process answers."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Whether this replica can accept reports, and why not."""

    status: Literal["ready", "unavailable"]
    kafka: Literal["connected", "unreachable"]


@router.get("/healthz", response_model=Liveness)
async def read_liveness() -> dict[str, str]:
    """Liveness: the process is up and serving (never checks Kafka, so no restart storms)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": "Kafka does not answer; take this replica out of rotation",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        }
    },
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
