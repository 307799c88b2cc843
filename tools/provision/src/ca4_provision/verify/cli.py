"""``ca4 verify --target local|k3s [--json]``: prove the whole pipeline works, hop by hop."""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ca4_provision.verify.cluster import ClusterAccessError
from ca4_provision.verify.results import StepStatus, VerifyReport
from ca4_provision.verify.runner import run_verification
from ca4_provision.verify.settings import VerifySettings

_STYLE = {
    StepStatus.PASS: "bold green",
    StepStatus.FAIL: "bold red",
    StepStatus.NOT_DEPLOYED: "yellow",
}


class TargetName(StrEnum):
    """Where the deployment runs."""

    LOCAL = "local"
    K3S = "k3s"


def render_table(report: VerifyReport) -> Table:
    """The Rich table: one row per step with status and time."""
    table = Table(title=f"ca4 verify --target {report.target}  (event {report.event_id})")
    table.add_column("#", justify="right")
    table.add_column("check")
    table.add_column("status")
    table.add_column("time", justify="right")
    table.add_column("detail", overflow="fold")
    for step in report.steps:
        table.add_row(
            str(step.number),
            step.name,
            f"[{_STYLE[step.status]}]{step.status.value}[/]",
            f"{step.seconds:.2f}s",
            step.detail,
        )
    return table


def verify(  # noqa: PLR0917 - Typer maps each option to one parameter
    target: Annotated[
        TargetName,
        typer.Option(
            help="local: dev stack or compose; k3s: the cluster through kubectl port-forwards."
        ),
    ] = TargetName.LOCAL,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON instead of a table.")
    ] = False,
    edge_api_url: Annotated[
        str | None, typer.Option(help="Edge URL (ingest) [CA4_EDGE_API_URL].")
    ] = None,
    worker_url: Annotated[str | None, typer.Option(help="Worker URL [CA4_WORKER_URL].")] = None,
    kafka: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers [CA4_KAFKA_BOOTSTRAP_SERVERS].")
    ] = None,
    mongo_url: Annotated[str | None, typer.Option(help="Event store URL [CA4_MONGO_URL].")] = None,
    mongo_db: Annotated[
        str | None, typer.Option(help="Event store database [CA4_MONGO_DB].")
    ] = None,
    prometheus_url: Annotated[
        str | None, typer.Option(help="Prometheus URL [CA4_PROMETHEUS_URL].")
    ] = None,
    grafana_url: Annotated[str | None, typer.Option(help="Grafana URL [CA4_GRAFANA_URL].")] = None,
    loki_url: Annotated[str | None, typer.Option(help="Loki URL [CA4_LOKI_URL].")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds a step may wait [CA4_VERIFY_TIMEOUT_S].")
    ] = None,
) -> None:
    """Run the end-to-end checks; exit 1 if any deployed step fails, 2 if k3s access fails."""
    overrides: dict[str, Any] = {
        "EDGE_API_URL": edge_api_url,
        "WORKER_URL": worker_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "MONGO_URL": mongo_url,
        "MONGO_DB": mongo_db,
        "PROMETHEUS_URL": prometheus_url,
        "GRAFANA_URL": grafana_url,
        "LOKI_URL": loki_url,
        "VERIFY_TIMEOUT_S": timeout,
    }
    settings = VerifySettings(
        **{key: value for key, value in overrides.items() if value is not None}
    )
    console = Console(stderr=json_output)
    try:
        with console.status("running the end-to-end checks...", spinner="dots"):
            report = asyncio.run(run_verification(settings, target.value))
    except ClusterAccessError as refused:
        typer.echo(f"ca4 verify: {refused}", err=True)
        raise typer.Exit(2) from None
    if json_output:
        typer.echo(report.model_dump_json(indent=2))
    else:
        console.print(render_table(report))
        verdict = "[bold green]all deployed steps pass[/]" if report.ok else "[bold red]FAILED[/]"
        console.print(verdict)
    raise typer.Exit(0 if report.ok else 1)
