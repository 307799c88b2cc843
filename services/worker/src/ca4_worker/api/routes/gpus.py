"""GPUs: one document per GPU UUID with its latest sample."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import RedirectResponse

from ca4_worker.api.deps import ProjectionsDep, ReadTenantDep, SettingsDep
from ca4_worker.api.routes import NOT_FOUND, READ_ERRORS, unprocessable
from ca4_worker.application.views import GpuQuery, GpuView, Page, UnknownCursorError
from ca4_worker.domain.projection import gpu_document_id

router = APIRouter(prefix="/v1/gpus", tags=["gpus"], responses=READ_ERRORS)


@router.get(
    "",
    response_model=Page[GpuView],
    responses=unprocessable(
        "A read:all key's cursor that names no tenant and no document, or a bad parameter"
    ),
)
async def read_gpus(  # noqa: PLR0917 - FastAPI passes each query parameter by keyword
    projections: ProjectionsDep,
    tenant: ReadTenantDep,
    settings: SettingsDep,
    session_id: Annotated[str | None, Query(max_length=128)] = None,
    gpu_name: Annotated[str | None, Query(max_length=128)] = None,
    cursor: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[GpuView]:
    """List the key's tenant's GPUs (every tenant's for ``read:all``) ordered by UUID; pass
    ``next_cursor`` back as ``cursor`` for the next page.

    A page ends early, with ``next_cursor``, once its GPUs weigh ``CA4_READ_PAGE_MAX_BYTES``:
    a page shorter than ``limit`` is not the last one, only ``next_cursor: null`` ends the list.
    A tenant's key may pass a bare GPU UUID as ``cursor`` (what clients from before tenancy
    send): it pages on after that GPU of the tenant."""
    if tenant is not None and cursor is not None and not cursor.startswith(f"{tenant}/"):
        cursor = gpu_document_id(tenant, cursor)
    query = GpuQuery(
        tenant=tenant,
        session_id=session_id,
        gpu_name=gpu_name,
        after=cursor,
        limit=limit,
        max_bytes=settings.read_page_max_bytes,
    )
    try:
        return await projections.gpus(query)
    except UnknownCursorError as error:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"cursor {str(error)!r} names no tenant and no GPU document: a read:all key pages "
            "with the next_cursor it was given, '<tenant>/<gpu uuid>'",
        ) from error


@router.get("/", include_in_schema=False)
async def read_gpus_with_a_slash(request: Request) -> RedirectResponse:
    """``/v1/gpus/`` to the list, as every other list redirects a trailing slash (the one-GPU
    route below would otherwise take it for an empty UUID); relative, as every redirect
    (:class:`ca4_auth.RelativeRedirects`)."""
    return RedirectResponse(request.url.replace(path=request.url.path.rstrip("/")))


# `path`: a MIG device's UUID holds slashes (MIG-GPU-<uuid>/<gi>/<ci>), raw or as %2F.
@router.get("/{gpu_uuid:path}", response_model=GpuView, responses=NOT_FOUND)
async def read_gpu(gpu_uuid: str, projections: ProjectionsDep, tenant: ReadTenantDep) -> GpuView:
    """The key's tenant's view of one GPU (``read:all``: the GPU document of that id,
    ``<tenant>/<gpu uuid>``, else the newest of any tenant's with that UUID); a GPU only
    another tenant reported is ``404``, exactly like one nobody reported.

    A session keeps at most 64 GPUs (``SESSION_MAX_GPUS``), the first it reports: a GPU that
    came only in sessions already holding 64 others is ``404`` too, its samples counted in
    those sessions' ``gpus_dropped`` (and not billed in usage)."""
    view = await projections.gpu(gpu_uuid, tenant=tenant)
    if view is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="GPU not found")
    return view
