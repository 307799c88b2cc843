"""The read API's paths, asked of the processor: a ``404`` that says where reads are served.

``/v1/sessions``, ``/v1/gpus``, ``/v1/events`` and ``/v1/usage`` belong to the worker; the edge
(the ingress, or the dev stack's edge) routes them there. A user who takes the processor's own
port for the edge sees ingest work and then every read fail with FastAPI's bare
``{"detail": "Not Found"}``; this answers the same status with a detail naming the fix. The
routes stay out of the OpenAPI document: the processor serves none of these reads.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

READ_PREFIXES = ("/v1/sessions", "/v1/gpus", "/v1/events", "/v1/usage")
"""The worker's read routes (the chart's ``ingress.routes`` for the worker component)."""
WRONG_SERVICE_DETAIL = (
    "reads are served by the worker: use the edge (ingress) URL, which routes them"
)

router = APIRouter(include_in_schema=False)


async def read_elsewhere() -> None:
    """Any read: ``404`` naming the edge, which routes reads to the worker."""
    raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=WRONG_SERVICE_DETAIL)


for _prefix in READ_PREFIXES:
    router.add_api_route(_prefix, read_elsewhere, methods=["GET"])
    router.add_api_route(f"{_prefix}/{{rest:path}}", read_elsewhere, methods=["GET"])
