"""GPUs: one document per GPU UUID with its latest sample."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from ca4_worker.api.deps import ProjectionsDep
from ca4_worker.application.views import GpuQuery, GpuView, Page

router = APIRouter(prefix="/v1/gpus", tags=["gpus"])


@router.get("", response_model=Page[GpuView])
async def read_gpus(
    projections: ProjectionsDep,
    session_id: Annotated[str | None, Query(max_length=128)] = None,
    gpu_name: Annotated[str | None, Query(max_length=128)] = None,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[GpuView]:
    """List GPUs ordered by UUID; pass ``next_cursor`` back as ``cursor`` for the next page."""
    query = GpuQuery(session_id=session_id, gpu_name=gpu_name, after=cursor, limit=limit)
    return await projections.gpus(query)


@router.get("/{gpu_uuid}", response_model=GpuView)
async def read_gpu(gpu_uuid: str, projections: ProjectionsDep) -> GpuView:
    """One GPU."""
    view = await projections.gpu(gpu_uuid)
    if view is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="GPU not found")
    return view
