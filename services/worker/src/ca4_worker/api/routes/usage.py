"""GPU usage: held, busy and idle GPU hours per project, GPU model or runtime."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from ca4_auth import ApiKey
from ca4_schemas.api import MessageErrorBody
from ca4_schemas.types import OWNER_ID_PATTERN
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status

from ca4_worker.api.deps import (
    READ_WAITED_S,
    ReadTenantDep,
    authenticate_reader,
    too_many_in_flight,
)
from ca4_worker.api.read_slots import ReadRefusedError, ReadSlots, slot_owner
from ca4_worker.api.routes import DATABASE_RETRY_AFTER_S, READ_ERRORS, bad_query
from ca4_worker.application.ports import TimedOutError
from ca4_worker.application.usage import UsageProjection, UsageReport, usage_report
from ca4_worker.core.config import Settings

router = APIRouter(prefix="/v1/usage", tags=["usage"], responses=READ_ERRORS)

MAX_DAYS = 366
DEFAULT_DAYS = 7
GROUP_BY_PATTERN = r"^(label:[A-Za-z0-9_.\-]{1,64}|gpu_model|runtime|tenant)$"


async def get_usage(request: Request) -> UsageProjection:
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
        403: {
            "model": MessageErrorBody,
            "description": (
                "The key has neither read nor read:all, or a key without read:all asked for "
                "another tenant's usage (tenant=)"
            ),
        },
        404: {"model": MessageErrorBody, "description": "Usage accounting is off"},
        429: {
            "model": MessageErrorBody,
            "description": (
                "Too many reads in flight for this tenant or worker, or usage reports over "
                "CA4_USAGE_MAX_REPORTS_IN_FLIGHT_PER_TENANT of the tenant or "
                "CA4_USAGE_MAX_REPORTS_IN_FLIGHT of the worker that got no slot within half "
                "of CA4_USAGE_REPORT_TIMEOUT_S, or with too many already waiting; retry after "
                "Retry-After"
            ),
        },
        503: {
            "model": MessageErrorBody,
            "description": (
                "The database did not answer, or the report did not finish within "
                "CA4_USAGE_REPORT_TIMEOUT_S; retry after Retry-After, or ask for fewer days "
                "(a read:all key: or one tenant's, tenant=<name>)"
            ),
        },
    },
)
async def read_usage(  # noqa: PLR0917 - FastAPI passes each query parameter by keyword
    request: Request,
    usage: UsageDep,
    key: Annotated[ApiKey, Depends(authenticate_reader)],
    key_tenant: ReadTenantDep,
    from_day: Annotated[
        date | None, Query(alias="from", description="First UTC day (default: 7 days ago)")
    ] = None,
    to_day: Annotated[
        date | None, Query(alias="to", description="Day after the last (default: tomorrow)")
    ] = None,
    group_by: Annotated[
        str,
        Query(pattern=GROUP_BY_PATTERN, description="label:<key>, gpu_model, runtime or tenant"),
    ] = "label:project",
    tenant: Annotated[
        str | None,
        Query(
            pattern=OWNER_ID_PATTERN,
            description="Only this tenant's usage: any tenant for a read:all key (default: "
            "every tenant's), the key's own for any other key (another is 403)",
        ),
    ] = None,
) -> UsageReport:
    """GPU seconds and hours held, busy and idle per group over UTC days ``[from, to)``,
    for the key's tenant (for ``read:all``, every tenant's: a row per tenant and group, with
    its ``tenant``), with cost when prices are set. ``tenant=<name>`` reads only that
    tenant's records: a ``read:all`` key may name any tenant (its rows still carry
    ``tenant``), a tenant's key only its own (any other is ``403``). Rows of ``kind``
    ``none`` (``(none)``) sum the records without the label; past ``CA4_USAGE_MAX_GROUPS``
    groups (shared fairly among the tenants), the rest of a tenant's are summed in its last
    row, of ``kind`` ``other`` (``(other)``), and ``truncated`` is true. A report of every
    tenant's records that misses ``CA4_USAGE_REPORT_TIMEOUT_S`` (one tenant's many records
    can take it all) is ``503``: ask for fewer days, or one tenant's."""
    if key_tenant is not None and tenant not in {None, key_tenant}:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"API key {key.key_id!r} lacks the 'read:all' scope: it reads only its own "
            f"tenant's usage (leave out tenant, or pass tenant={key_tenant})",
        )
    read_tenant = tenant if key_tenant is None else key_tenant
    settings: Settings = request.app.state.settings
    end = to_day or datetime.now(UTC).date() + timedelta(days=1)
    try:
        start = from_day or end - timedelta(days=DEFAULT_DAYS)
    except OverflowError:  # the default from would be before year 1
        raise bad_query(
            "to", f"to leaves no room for the default {DEFAULT_DAYS} days before it", end
        ) from None
    if not start < end or (end - start).days > MAX_DAYS:
        raise bad_query("from", f"from must be before to, at most {MAX_DAYS} days apart", start)
    # One tenant's reports take at most its own slots, never every one of the worker's; a
    # report over a cap waits its turn, and the wait counts against the report's deadline.
    slots: ReadSlots = request.app.state.usage_slots
    owner = slot_owner(key_tenant)
    started = time.monotonic()
    try:
        await slots.enter(owner)
    except ReadRefusedError as error:
        raise too_many_in_flight(str(error)) from error
    finally:
        # Other tenants' reports: not its budget's, also when refused or left while waiting.
        waited_s = time.monotonic() - started
        setattr(request.state, READ_WAITED_S, waited_s)
    try:
        return await usage_report(
            usage.records,
            start,
            end,
            tenant=read_tenant,
            group_by=group_by,
            prices=settings.usage_prices,
            currency=settings.usage_currency,
            deadline_s=settings.usage_report_timeout_s - waited_s,
            max_groups=settings.usage_max_groups,
            # A read:all key's rows always say whose they are, also with tenant=.
            per_tenant=key_tenant is None,
        )
    except TimedOutError as error:
        waited = f" (it waited {waited_s:.1f} s of them for its turn)" if waited_s >= 0.1 else ""
        # Every tenant's records in one report: one tenant's many can take the whole deadline.
        narrower = " or one tenant's (tenant=<name>)" if read_tenant is None else ""
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"the usage report did not finish within {settings.usage_report_timeout_s:g} s"
            f"{waited}; retry after the Retry-After seconds, or ask for fewer days{narrower}",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        ) from error
    finally:
        await slots.leave(owner)
