"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ca4_worker.api.deps import RuntimeDep
from ca4_worker.core.metrics import gpu_exposition_bytes

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

    Rendered in a thread (prometheus_client collects under its own locks). The GPU series, the
    bulk of a busy worker's metrics, are joined from lines rendered when they were set
    (:mod:`ca4_worker.core.series_table`): thousands of them took over a second through
    ``generate_latest``.
    """
    registries = (REGISTRY, request.app.state.http_registry)

    def render() -> bytes:
        return b"".join(map(generate_latest, registries)) + gpu_exposition_bytes()

    return Response(await asyncio.to_thread(render), media_type=CONTENT_TYPE_LATEST)
