"""GPU usage: held, busy and idle GPU hours per project, GPU model or runtime."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from ca4_schemas.api import MessageErrorBody
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError

from ca4_worker.api.deps import ReadTenantDep
from ca4_worker.api.routes import READ_ERRORS
from ca4_worker.application.usage import UsageProjection, UsageReport, usage_report
from ca4_worker.core.config import Settings

router = APIRouter(prefix="/v1/usage", tags=["usage"], responses=READ_ERRORS)

MAX_DAYS = 366
DEFAULT_DAYS = 7
GROUP_BY_PATTERN = r"^(label:[A-Za-z0-9_.\-]{1,64}|gpu_model|runtime)$"


def get_usage(request: Request) -> UsageProjection:
    """The usage projection; ``404`` when the worker runs without it."""
    usage: UsageProjection | None = getattr(request.app.state, "usage", None)
    if usage is None:
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND,
            detail="Usage accounting is off on this worker (CA4_USAGE_ENABLED=false)",
        )
    return usage


UsageDep = Annotated[UsageProjection, Depends(get_usage)]


@router.get(
    "",
    response_model=UsageReport,
    response_model_by_alias=True,
    responses={
        404: {"model": MessageErrorBody, "description": "Usage accounting is off"},
    },
)
async def read_usage(  # noqa: PLR0917 - FastAPI passes each query parameter by keyword
    request: Request,
    usage: UsageDep,
    tenant: ReadTenantDep,
    from_day: Annotated[
        date | None, Query(alias="from", description="First UTC day (default: 7 days ago)")
    ] = None,
    to_day: Annotated[
        date | None, Query(alias="to", description="Day after the last (default: tomorrow)")
    ] = None,
    group_by: Annotated[
        str, Query(pattern=GROUP_BY_PATTERN, description="label:<key>, gpu_model or runtime")
    ] = "label:project",
) -> UsageReport:
    """GPU seconds and hours held, busy and idle per group over UTC days ``[from, to)``,
    for the key's tenant (every tenant's for ``read:all``), with cost when prices are set."""
    settings: Settings = request.app.state.settings
    end = to_day or datetime.now(UTC).date() + timedelta(days=1)
    start = from_day or end - timedelta(days=DEFAULT_DAYS)
    if not start < end or (end - start).days > MAX_DAYS:
        # The documented 422 body (FastAPI's validation errors), like every other bad query.
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "from"),
                    "msg": f"from must be before to, at most {MAX_DAYS} days apart",
                    "input": start.isoformat(),
                }
            ]
        )
    return await usage_report(
        usage.records,
        start,
        end,
        tenant=tenant,
        group_by=group_by,
        prices=settings.usage_prices,
        currency=settings.usage_currency,
    )
