"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ca4_worker.api.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(runtime: RuntimeDep, response: Response) -> dict[str, object]:
    """Readiness: the database answers and the consumers run."""
    checks = await runtime.readiness()
    ready = all(checks.values())
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {"status": "ready" if ready else "not ready", "checks": checks}


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus exposition of the worker's metrics and this app's HTTP request metrics.

    Rendered in a thread: thousands of GPU series with long labels took over a second, which
    on the event loop stalled both stages (prometheus_client collects under its own locks).
    """
    registries = (REGISTRY, request.app.state.http_registry)
    body = await asyncio.to_thread(lambda: b"".join(map(generate_latest, registries)))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
