"""``ca4 usage``: GPU hours held, busy and idle per project, GPU model or runtime.

Reads the usage records straight from the database, as an operator (every tenant), the same
roll-up ``GET /v1/usage`` answers. Registered on the root ``ca4`` command by ``ca4_provision.cli``.
"""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ca4_worker.application.usage import UsageReport, UsageRow, usage_report
from ca4_worker.cli_support import database_endpoint, reaching
from ca4_worker.core.config import Settings, get_settings
from ca4_worker.persistence.database import connect
from ca4_worker.persistence.usage_mongo import MongoUsageRecords

console = Console()


async def _report(settings: Settings, start: date, end: date, group_by: str) -> UsageReport:
    client = connect(settings.mongo_url, timeout_ms=settings.mongo_timeout_ms)
    try:
        return await usage_report(
            MongoUsageRecords(client[settings.mongo_db]),
            start,
            end,
            tenant=None,
            group_by=group_by,
            prices=settings.usage_prices,
            currency=settings.usage_currency,
        )
    finally:
        await client.close()


def csv_text(report: UsageReport) -> str:
    """The report's rows as CSV, every field of a row a column."""
    buffer = io.StringIO()
    fields = list(UsageRow.model_fields)
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in report.rows:
        writer.writerow(row.model_dump())
    return buffer.getvalue()


def table(report: UsageReport) -> Table:
    """The report as a Rich table (``ca4 usage`` reads every tenant: a tenant column)."""
    shown = Table(
        title=f"GPU usage {report.from_day} to {report.to_day} (UTC, end excluded) "
        f"by {report.group_by}"
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
        # Values are the tenants' own: never markup. A synthetic row shows in italics, as a
        # tenant's value may spell "(none)" or "(other)" too.
        group = escape(row.group) if row.kind == "value" else f"[italic]{row.group}[/italic]"
        cells = [
            escape(row.tenant or ""),
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


def usage(
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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (as GET /v1/usage).")] = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Print CSV, one row per tenant and group.")
    ] = False,
) -> None:
    """GPU hours held, busy and idle (and cost, with CA4_USAGE_PRICES) per tenant and group."""
    if not (group_by in {"gpu_model", "runtime", "tenant"} or group_by.startswith("label:")):
        raise typer.BadParameter(
            "use label:<key>, gpu_model, runtime or tenant", param_hint="--group-by"
        )
    settings = get_settings()
    end = to_day.date() if to_day else datetime.now(UTC).date() + timedelta(days=1)
    start = from_day.date() if from_day else end - timedelta(days=7)
    if not start < end:
        raise typer.BadParameter("--from must be before --to", param_hint="--from")
    with reaching(database_endpoint(settings), settings):
        report = asyncio.run(_report(settings, start, end, group_by))
    if as_json:
        typer.echo(report.model_dump_json(by_alias=True, indent=2))
    elif as_csv:
        typer.echo(csv_text(report), nl=False)
    else:
        console.print(table(report))
