"""Sessions: one document per runtime session."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from ca4_schemas.types import LabelKey
from fastapi import APIRouter, HTTPException, Query, status
from pydantic import TypeAdapter, ValidationError

from ca4_worker.api.deps import ProjectionsDep, ReadTenantDep, SettingsDep
from ca4_worker.api.routes import NOT_FOUND, READ_ERRORS, in_utc, unprocessable
from ca4_worker.application.views import Page, SessionQuery, SessionView

router = APIRouter(prefix="/v1/sessions", tags=["sessions"], responses=READ_ERRORS)


BAD_LABEL = (
    "label must look like key:value, the key as in reports: 1-64 ASCII letters, digits, '_' "
    "or '-', starting with a letter or '_'"
)
"""``detail`` of the ``422`` for a bad ``label``: a string, as clients from before tenancy
read it, starting with the text they know."""
_LABEL_KEY: TypeAdapter[str] = TypeAdapter(LabelKey)


def _label(raw: str | None) -> tuple[str, str] | None:
    """``(key, value)``; the key by the contract's rule, which keeps ``$``, ``.`` and NUL (a
    ``500`` from the database before) out of the query's ``labels.<key>`` path."""
    if raw is None:
        return None
    key, separator, value = raw.partition(":")
    if not separator or not _is_label_key(key):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, BAD_LABEL)
    return key, value


def _is_label_key(key: str) -> bool:
    try:
        _LABEL_KEY.validate_python(key)
    except ValidationError:
        return False
    return True


@router.get(
    "",
    response_model=Page[SessionView],
    responses=unprocessable(f"A bad label ({BAD_LABEL!r}), or another bad parameter"),
)
async def read_sessions(  # noqa: PLR0917 - FastAPI passes each query parameter by keyword
    projections: ProjectionsDep,
    tenant: ReadTenantDep,
    settings: SettingsDep,
    label: Annotated[str | None, Query(description="key:value", max_length=330)] = None,
    gpu_model: Annotated[str | None, Query(max_length=128)] = None,
    runtime: Annotated[str | None, Query(max_length=32)] = None,
    seen_since: datetime | None = None,
    seen_until: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[SessionView]:
    """List the key's tenant's sessions (every tenant's for ``read:all``) ordered by id; pass
    ``next_cursor`` back as ``cursor`` for the next page.

    A page ends early, with ``next_cursor``, once its sessions weigh ``CA4_READ_PAGE_MAX_BYTES``:
    a page shorter than ``limit`` is not the last one, only ``next_cursor: null`` ends the list."""
    query = SessionQuery(
        tenant=tenant,
        label=_label(label),
        gpu_model=gpu_model,
        runtime=runtime,
        seen_since=in_utc("seen_since", seen_since),
        seen_until=in_utc("seen_until", seen_until),
        after=cursor,
        limit=limit,
        max_bytes=settings.read_page_max_bytes,
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
