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
from rich.table import Table

from ca4_worker.application.usage import UsageReport, usage_report
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


def _csv(report: UsageReport) -> str:
    buffer = io.StringIO()
    fields = list(report.rows[0].model_dump()) if report.rows else ["group"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in report.rows:
        writer.writerow(row.model_dump())
    return buffer.getvalue()


def _table(report: UsageReport) -> Table:
    table = Table(
        title=f"GPU usage {report.from_day} to {report.to_day} (UTC, end excluded) "
        f"by {report.group_by}"
    )
    columns = ["group", "held h", "busy h", "idle h", "idle %", "GPUs", "sessions"]
    if report.currency:
        columns.append(f"cost ({report.currency})")
    for column in columns:
        table.add_column(column, justify="left" if column == "group" else "right")
    for row in report.rows:
        idle_share = 100 * row.idle_seconds / row.held_seconds if row.held_seconds else 0.0
        cells = [
            row.group,
            f"{row.held_hours:.2f}",
            f"{row.busy_hours:.2f}",
            f"{row.idle_hours:.2f}",
            f"{idle_share:.0f}",
            str(row.gpus),
            str(row.sessions),
        ]
        if report.currency:
            cells.append(f"{row.cost or 0:.2f}")
        table.add_row(*cells)
    return table


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
        str, typer.Option("--group-by", help="label:<key>, gpu_model or runtime.")
    ] = "label:project",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (as GET /v1/usage).")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV, one row per group.")] = False,
) -> None:
    """GPU hours held, busy and idle (and cost, with CA4_USAGE_PRICES) per group."""
    if not (group_by in {"gpu_model", "runtime"} or group_by.startswith("label:")):
        raise typer.BadParameter("use label:<key>, gpu_model or runtime", param_hint="--group-by")
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
        typer.echo(_csv(report), nl=False)
    else:
        console.print(_table(report))
