"""``ca4 devstack``: run the real services locally without Docker."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import os
import shlex
import shutil
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from ca4_worker.cli_support import confirm_destructive
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from ca4_provision.devstack.installers import InstallError, tail
from ca4_provision.devstack.provisioning import ProvisioningError
from ca4_provision.devstack.settings import TLS_MARKER, DevstackSettings
from ca4_provision.devstack.stack import DevstackError, Stack, resolve_names
from ca4_provision.devstack.tools import MissingToolError

app = typer.Typer(
    name="devstack",
    help="Run Kafka, PostgreSQL + FerretDB v2, MinIO, Alertmanager and Prometheus locally "
    "(no Docker); "
    "see `ca4 devstack env`.",
    no_args_is_help=True,
    epilog=(
        "Environment knobs: CA4_DEVSTACK_HOME (state: data, logs, PIDs; default <repo>/.devstack), "
        "CA4_DEVSTACK_CACHE (installs and builds; default ~/.cache/ca4/devstack), "
        "CA4_DEVSTACK_VENDOR (the pinned source archives DocumentDB is built from, checked by "
        "sha256; default <repo>/../shared/vendor), "
        "CA4_DEVSTACK_{KAFKA,KAFKA_CONTROLLER,MONGO,MONGO_TLS,FERRETDB_DEBUG,POSTGRES,S3,"
        "S3_CONSOLE,PROMETHEUS,ALERTMANAGER,PROCESSOR,WORKER,EDGE}_PORT (defaults 9092 9093 27017 "
        "27018 8088 5433 9000 9001 9090 9094 8000 8001 8002), CA4_DEVSTACK_KAFKA_HEAP (512m), "
        "CA4_DEVSTACK_HEALTH_TIMEOUT (120 s), CA4_DEVSTACK_TLS (FerretDB also serves TLS on "
        "CA4_DEVSTACK_MONGO_TLS_PORT with a local CA, as DocumentDB does; same as `up --tls`), "
        "CA4_DEVSTACK_ALERT_WEBHOOK_URL (where Alertmanager "
        "posts; default none: alerts stay in Alertmanager), CA4_RUNBOOK_BASE_URL (the runbooks "
        "page alert links point into). Alertmanager and amtool are built from the pinned Go "
        "module (without the web UI, which the module does not ship). "
        "PostgreSQL: Debian's postgresql-15 (apt-get installs it and the build packages when "
        "missing and run as root), run as the `postgres` user with its data in the state dir. "
        "Outside the cache and the state dir the dev stack writes only what PostgreSQL loads "
        "from its own folders: pg_documentdb_core.so, pg_documentdb.so, pg_cron.so and vector.so "
        "in /usr/lib/postgresql/15/lib, and their .control and .sql files in "
        "/usr/share/postgresql/15/extension (copied from the cached build when they differ). "
        "The FerretDB health check is a real query with a 5 s deadline: a database that pings "
        "but answers no query shows as unhealthy (wedged). "
        "With --with-app, the edge (CA4_DEVSTACK_EDGE_PORT) routes each path to the processor or "
        "the worker by the Helm chart's ingress.routes, as the cluster ingress does: the one URL "
        "for notebooks and the SDK (expose it with `ngrok http 127.0.0.1:8002`); it answers its "
        "own health at /-/healthy and 404 for paths the ingress does not route."
    ),
)

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

_SERVICES = (
    "Services (kafka, postgres|pg, ferretdb|mongo, minio|s3, alertmanager, prometheus, "
    "processor, worker, edge); default: all."
)
UpServicesArg = Annotated[
    list[str] | None,
    typer.Argument(
        help=f"{_SERVICES} Starting ferretdb starts postgres first, and edge the processor and "
        "worker."
    ),
]
ServicesArg = Annotated[list[str] | None, typer.Argument(help=_SERVICES)]


class RichReporter:
    """Spinners for long steps, one line per note, all on stderr."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[tuple[str, str], TaskID] = {}

    def begin(self, service: str, what: str) -> None:
        """Show a spinner for ``service: what``."""
        self.tasks[(service, what)] = self.progress.add_task(f"{service}: {what}", total=None)

    def end(self, service: str, what: str) -> None:
        """Remove that spinner."""
        task = self.tasks.pop((service, what), None)
        if task is not None:
            self.progress.remove_task(task)

    def note(self, service: str, message: str) -> None:
        """Print one line."""
        self.progress.console.print(f"[bold]{service}[/bold]: {message}")


@contextlib.contextmanager
def _reporting() -> Iterator[RichReporter]:
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    with progress:
        yield RichReporter(progress)


@contextlib.contextmanager
def _state_lock(settings: DevstackSettings) -> Iterator[None]:
    """One mutating ``ca4 devstack`` command at a time per state dir."""
    settings.home.mkdir(parents=True, exist_ok=True)
    with (settings.home / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            err.print("waiting for another `ca4 devstack` command to finish…")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, turning our expected failures into one red message and exit code 1."""
    try:
        return asyncio.run(coro)
    except (DevstackError, MissingToolError, InstallError, ProvisioningError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc


def _settings() -> DevstackSettings:
    try:
        return DevstackSettings.from_env()
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _names(services: list[str] | None) -> list[str] | None:
    try:
        return resolve_names(services) if services else None
    except DevstackError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


@app.command()
def up(
    services: UpServicesArg = None,
    with_app: Annotated[
        bool,
        typer.Option(
            "--with-app", help="Also start the processor, the worker and the edge in front of them."
        ),
    ] = False,
    started_file: Annotated[
        Path | None,
        typer.Option(help="Write the names of the services this command started, one a line."),
    ] = None,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls",
            help="FerretDB also serves TLS (CA4_DEVSTACK_MONGO_TLS_PORT) with a local CA's "
            "certificate, from now on for this state dir; `env` prints its URL and CA file. "
            "A FerretDB already running keeps its listeners until restarted.",
        ),
    ] = False,
) -> None:
    """Install what is missing, start what is not running, wait until all are healthy."""
    settings = _settings()
    if tls:
        marker = settings.home / TLS_MARKER
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        settings = dataclasses.replace(settings, tls=True)
    names = _names(services)
    with _state_lock(settings), _reporting() as reporter:
        stack = Stack(settings, reporter)
        try:
            _run(stack.up(names, with_app=with_app))
        finally:
            # Written even when a later service fails, so the caller can stop what did start.
            started = [name for name, done in stack.outcomes.items() if done == "started"]
            if started_file is not None:
                started_file.write_text("".join(f"{name}\n" for name in started), "utf-8")
    external = [name for name, done in stack.outcomes.items() if done == "external"]
    if started:
        err.print(f"[green]started:[/green] {', '.join(started)}")
    elif not external:
        err.print("[green]all services were already running and healthy[/green]")
    if external:
        # Reused, not replaced: what answers there may be another checkout's stack (its data, its
        # topics), which this command never stops.
        err.print(
            f"[yellow]not started by this state dir ({settings.home}), reused as found:[/yellow] "
            f"{', '.join(external)}. If that is another checkout's stack, run your own with "
            "CA4_DEVSTACK_HOME and the CA4_DEVSTACK_*_PORT variables (`ca4 devstack --help`)."
        )
    err.print('Point clients at it with: eval "$(uv run ca4 devstack env)"')
    if "edge" in stack.outcomes:
        address = stack.services["edge"].address
        err.print(
            f"One URL for notebooks and the SDK (ingest and reads): {address}; "
            f"expose it with `ngrok http {address.removeprefix('http://')}`"
        )


@app.command()
def down(
    services: ServicesArg = None,
    services_file: Annotated[
        Path | None,
        typer.Option(help="Stop only the services named in this file (see `up --started-file`)."),
    ] = None,
    purge: Annotated[
        bool,
        typer.Option("--purge", help="Also delete the state dir (all data and logs); asks first."),
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask before deleting with --purge.")
    ] = False,
) -> None:
    """Stop the services this dev stack started (by PID), apps first."""
    settings = _settings()
    if purge and not services and services_file is None:
        confirm_destructive(
            f"Delete every dev stack service's data and logs in {settings.home}?", yes=yes
        )
    names = _names(services)
    if services_file is not None:
        listed = services_file.read_text(encoding="utf-8").split() if services_file.exists() else []
        names = (names or []) + (_names(listed) or [])
        if not names:
            err.print("nothing to stop")
            return
    with _state_lock(settings), _reporting() as reporter:
        stack = Stack(settings, reporter)
        stopped = _run(stack.down(names))
        if purge and not names:
            leftovers = stack.running_pids()
            if leftovers:
                err.print(f"[red]not purging: still running {leftovers}[/red]")
                raise typer.Exit(1)
            for child in settings.home.iterdir():
                if child.name != ".lock":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
    err.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing of ours was running")


@app.command()
def start(services: Annotated[list[str], typer.Argument(help="Services to start.")]) -> None:
    """Start the named services (e.g. after `stop`, to end a simulated outage)."""
    up(services=services, with_app=False, started_file=None)


@app.command()
def stop(services: Annotated[list[str], typer.Argument(help="Services to stop.")]) -> None:
    """Stop the named services (e.g. to simulate an outage in a test)."""
    down(services=services, services_file=None, purge=False, yes=False)


@app.command()
def status(
    services: ServicesArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    check: Annotated[
        bool,
        typer.Option("--check", help="Exit 1 unless every listed (default: infra) service is up."),
    ] = False,
) -> None:
    """Show each service: version, address, PID and health."""
    settings = _settings()
    names = _names(services)

    class _Silent:
        def begin(self, service: str, what: str) -> None: ...
        def end(self, service: str, what: str) -> None: ...
        def note(self, service: str, message: str) -> None: ...

    stack = Stack(settings, _Silent())
    rows = _run(stack.status(names))
    if as_json:
        out.print_json(json.dumps([row.__dict__ for row in rows]))
    else:
        table = Table(title=f"CA4 dev stack ({settings.home})")
        for column in ("service", "version", "address", "pid", "health"):
            table.add_column(column, overflow="fold")
        colours = {"healthy": "green", "external": "cyan", "unhealthy": "red", "stopped": "dim"}
        for row in rows:
            health = f"[{colours[row.state]}]{row.state}[/]"
            if row.state in {"unhealthy", "external"}:
                health += f" ({row.detail})"
            table.add_row(row.name, row.version, row.address, str(row.pid or "-"), health)
        out.print(table)
    if check:
        wanted = [
            row for row in rows if names or stack.services[row.name].group == "infra" or row.pid
        ]
        if any(row.state not in {"healthy", "external"} for row in wanted):
            raise typer.Exit(1)


@app.command()
def env() -> None:
    """Print `export CA4_…=…` lines that point clients and tests at the stack."""
    for key, value in _settings().client_env().items():
        typer.echo(f"export {key}={shlex.quote(value)}")


@app.command()
def logs(
    service: Annotated[str | None, typer.Argument(help="One service; default: all.")] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many lines.")] = 40,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
) -> None:
    """Print the end of a service's log file (or of all of them)."""
    settings = _settings()
    stack = Stack(settings, RichReporter(Progress(console=err)))
    selected = stack.select(_names([service]) if service else None)
    files = [s.process.log_file for s in selected if s.process.log_file.exists()]
    if not files:
        which = service or "any service"
        err.print(
            f"no log file of {which} yet in {settings.home / 'logs'}: it has not run in this "
            "state dir (`uv run ca4 devstack status` lists what runs)"
        )
        raise typer.Exit(1)
    if follow:
        tail_bin = shutil.which("tail")
        if tail_bin is None:
            err.print("tail not found; run without --follow")
            raise typer.Exit(1)
        os.execv(tail_bin, [tail_bin, "-n", str(lines), "-F", *map(str, files)])  # noqa: S606
    for log_file in files:
        if len(files) > 1:
            out.rule(log_file.stem)
        # Raw text, not Rich: log lines must not be re-wrapped or re-coloured.
        sys.stdout.write(tail(log_file, lines) + "\n")
        sys.stdout.flush()
