"""Sessions: one document per runtime session."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from ca4_worker.api.deps import ProjectionsDep, ReadTenantDep
from ca4_worker.api.routes import NOT_FOUND, READ_ERRORS
from ca4_worker.application.views import Page, SessionQuery, SessionView

router = APIRouter(prefix="/v1/sessions", tags=["sessions"], responses=READ_ERRORS)


LABEL_PATTERN = r"^[^:]+:"
"""``key:value`` with a non-empty key; checked by the query's declaration, so a bad one gets the
documented ``422`` validation body like every other bad parameter."""


def _label(raw: str | None) -> tuple[str, str] | None:
    if raw is None:
        return None
    key, _, value = raw.partition(":")
    return key, value


@router.get("", response_model=Page[SessionView])
async def read_sessions(  # noqa: PLR0917 - FastAPI passes each query parameter by keyword
    projections: ProjectionsDep,
    tenant: ReadTenantDep,
    label: Annotated[
        str | None, Query(description="key:value", max_length=330, pattern=LABEL_PATTERN)
    ] = None,
    gpu_model: Annotated[str | None, Query(max_length=128)] = None,
    runtime: Annotated[str | None, Query(max_length=32)] = None,
    seen_since: datetime | None = None,
    seen_until: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[SessionView]:
    """List the key's tenant's sessions (every tenant's for ``read:all``) ordered by id; pass
    ``next_cursor`` back as ``cursor`` for the next page."""
    query = SessionQuery(
        tenant=tenant,
        label=_label(label),
        gpu_model=gpu_model,
        runtime=runtime,
        seen_since=seen_since,
        seen_until=seen_until,
        after=cursor,
        limit=limit,
    )
    return await projections.sessions(query)


@router.get("/{session_id}", response_model=SessionView, responses=NOT_FOUND)
async def read_session(
    session_id: str, projections: ProjectionsDep, tenant: ReadTenantDep
) -> SessionView:
    """One session; another tenant's is ``404``, exactly like one that does not exist."""
    view = await projections.session(session_id, tenant=tenant)
    if view is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="Session not found")
    return view
