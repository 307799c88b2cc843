"""``ca4 usage``: GPU hours held, busy and idle per project, GPU model or runtime.

Reads the usage records straight from the database, as an operator (every tenant's, or one
tenant's with ``--tenant``), the same roll-up ``GET /v1/usage`` answers: with the same cap on
groups (``CA4_USAGE_MAX_GROUPS``) and a deadline (``CA4_USAGE_REPORT_TIMEOUT_S``, or
``--timeout``). Registered on the root ``ca4`` command by ``ca4_provision.cli``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

import typer
from ca4_schemas.types import OWNER_ID_PATTERN
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ca4_worker.application.usage import (
    ReportTimedOutError,
    UsageRecords,
    UsageReport,
    UsageRow,
    usage_report,
)
from ca4_worker.cli_support import OperatorError, as_written, database_endpoint, reaching
from ca4_worker.core.config import Settings, get_settings
from ca4_worker.persistence.database import connect
from ca4_worker.persistence.usage_mongo import MongoUsageRecords

console = Console()


class UsageTimedOutError(OperatorError):
    """The report did not finish within its deadline; the message says how to narrow it."""


@asynccontextmanager
async def usage_records(settings: Settings) -> AsyncIterator[UsageRecords]:
    """The database's usage records, its client closed afterwards (the seam tests replace)."""
    client = connect(settings.mongo_url, timeout_ms=settings.mongo_timeout_ms)
    try:
        yield MongoUsageRecords(client[settings.mongo_db])
    finally:
        await client.close()


async def _report(
    settings: Settings,
    start: date,
    end: date,
    group_by: str,
    *,
    tenant: str | None,
    timeout_s: float,
) -> UsageReport:
    async with usage_records(settings) as records:
        return await usage_report(
            records,
            start,
            end,
            tenant=tenant,
            group_by=group_by,
            prices=settings.usage_prices,
            currency=settings.usage_currency,
            deadline_s=timeout_s,
            max_groups=settings.usage_max_groups,
            per_tenant=True,  # an operator's rows always say whose they are
        )


def _too_slow(timeout_s: float, *, tenant: str | None) -> UsageTimedOutError:
    """What to do about a report past its deadline: one tenant's many records can take all
    of an every-tenant report's, so without ``--tenant`` that is the first thing to try."""
    narrower = "" if tenant else ", one tenant's (--tenant NAME)"
    return UsageTimedOutError(
        f"the usage report did not finish within {timeout_s:g} s: ask for fewer days "
        f"(--from/--to){narrower}, or allow it longer (--timeout SECONDS)"
    )


def truncation_note(max_groups: int | None, *, tenant: str | None = None) -> str:
    """The line that says a report's groups were cut at ``max_groups`` (when known); without
    ``tenant`` (every tenant's report), one tenant's may fit."""
    cap = f"more than {max_groups} groups" if max_groups else "more groups than a report shows"
    narrower = " or pass --tenant" if tenant is None else ""
    return (
        f"truncated: {cap} (CA4_USAGE_MAX_GROUPS); each tenant's (other) row sums the rest. "
        f"Group by fewer values, ask for fewer days{narrower} to see every group."
    )


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula (OWASP, "CSV Injection")."""


def csv_cell(value: object) -> object:
    """``value`` as a CSV cell a spreadsheet shows as text: group values are the tenants' own
    (label values, GPU model names), so a text cell starting with a formula character gets a
    leading ``'`` (OWASP's advice). Numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return f"'{value}"
    return value


def csv_text(report: UsageReport) -> str:
    """The report's rows as CSV, every field of a row a column, text cells neutralised
    (:func:`csv_cell`)."""
    buffer = io.StringIO()
    fields = list(UsageRow.model_fields)
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in report.rows:
        writer.writerow({field: csv_cell(value) for field, value in row.model_dump().items()})
    return buffer.getvalue()


def table(
    report: UsageReport, *, max_groups: int | None = None, tenant: str | None = None
) -> Table:
    """The report as a Rich table (``ca4 usage`` reads as an operator: a tenant column), with
    a caption saying so when its groups were cut at ``max_groups``."""
    shown = Table(
        title=f"GPU usage {report.from_day} to {report.to_day} (UTC, end excluded) "
        f"by {report.group_by}",
        caption=escape(truncation_note(max_groups, tenant=tenant)) if report.truncated else None,
        caption_style="bold",
        caption_justify="left",
    )
    columns = ["tenant", "group", "held h", "busy h", "idle h", "idle %", "GPUs", "sessions"]
    if report.currency:
        columns.append(f"cost ({report.currency})")
    for column in columns:
        if column in {"tenant", "group"}:
            # Fold a long name over lines rather than cut it: tenants' names may share a prefix.
            shown.add_column(column, overflow="fold", min_width=len(column))
        else:
            shown.add_column(column, justify="right")
    for row in report.rows:
        idle_share = 100 * row.idle_seconds / row.held_seconds if row.held_seconds else 0.0
        # Values are the tenants' own, shown as written. A synthetic row shows in italics, as
        # a tenant's value may spell "(none)" or "(other)" too.
        group = as_written(row.group, style="" if row.kind == "value" else "italic")
        cells: list[str | Text] = [
            as_written(row.tenant or ""),
            group,
            f"{row.held_hours:.2f}",
            f"{row.busy_hours:.2f}",
            f"{row.idle_hours:.2f}",
            f"{idle_share:.0f}",
            str(row.gpus),
            str(row.sessions),
        ]
        if report.currency:
            cells.append(f"{row.cost or 0:.2f}")
        shown.add_row(*cells)
    return shown


def usage(  # noqa: PLR0917 - Typer passes each option by keyword
    from_day: Annotated[
        datetime | None,
        typer.Option("--from", formats=["%Y-%m-%d"], help="First UTC day (default: 7 days ago)."),
    ] = None,
    to_day: Annotated[
        datetime | None,
        typer.Option("--to", formats=["%Y-%m-%d"], help="Day after the last (default: tomorrow)."),
    ] = None,
    group_by: Annotated[
        str, typer.Option("--group-by", help="label:<key>, gpu_model, runtime or tenant.")
    ] = "label:project",
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", help="Only this tenant's usage (default: every tenant's)."),
    ] = None,
    timeout_s: Annotated[
        float | None,
        typer.Option(
            "--timeout", help="Seconds the report may take (default: CA4_USAGE_REPORT_TIMEOUT_S)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (as GET /v1/usage).")] = False,
    as_csv: Annotated[
        bool,
        typer.Option(
            "--csv",
            help="Print CSV, one row per tenant and group; a text cell starting with = + - @, "
            "a tab or a carriage return gets a leading ' so a spreadsheet shows it as text.",
        ),
    ] = False,
) -> None:
    """GPU hours held, busy and idle (and cost, with CA4_USAGE_PRICES) per tenant and group.

    At most CA4_USAGE_MAX_GROUPS groups get a row of their own; the rest of each tenant's are
    summed in its (other) row, as in GET /v1/usage.
    """
    if not (group_by in {"gpu_model", "runtime", "tenant"} or group_by.startswith("label:")):
        raise typer.BadParameter(
            "use label:<key>, gpu_model, runtime or tenant", param_hint="--group-by"
        )
    if timeout_s is not None and not timeout_s > 0:
        raise typer.BadParameter("a number of seconds above 0", param_hint="--timeout")
    if tenant is not None and not re.fullmatch(OWNER_ID_PATTERN, tenant):
        raise typer.BadParameter(
            "a tenant is 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit",
            param_hint="--tenant",
        )
    settings = get_settings()
    end = to_day.date() if to_day else datetime.now(UTC).date() + timedelta(days=1)
    start = from_day.date() if from_day else end - timedelta(days=7)
    if not start < end:
        raise typer.BadParameter("--from must be before --to", param_hint="--from")
    deadline_s = settings.usage_report_timeout_s if timeout_s is None else timeout_s
    with reaching(database_endpoint(settings), settings):
        try:
            report = asyncio.run(
                _report(settings, start, end, group_by, tenant=tenant, timeout_s=deadline_s)
            )
        except ReportTimedOutError as error:
            # The report's own deadline (a database call that timed out is `reaching`'s).
            raise _too_slow(deadline_s, tenant=tenant) from error
    if as_json:
        typer.echo(report.model_dump_json(by_alias=True, indent=2))
    elif as_csv:
        typer.echo(csv_text(report), nl=False)
        if report.truncated:
            typer.echo(truncation_note(settings.usage_max_groups, tenant=tenant), err=True)
    else:
        console.print(table(report, max_groups=settings.usage_max_groups, tenant=tenant))
