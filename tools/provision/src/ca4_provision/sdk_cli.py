"""``ca4 send`` (synthetic reports for demos and load tests) and ``ca4 sdk probe``."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Annotated, Any

import typer
from ca4_sdk.probe import probe as run_probe
from ca4_sdk.synthetic import make_sessions
from ca4_sdk.transport import Backoff, SendOutcome, Transport
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ca4_provision.devstack.settings import DevstackSettings

sdk_app = typer.Typer(
    help="The client SDK: see what it collects on this host.", no_args_is_help=True
)
console = Console()

DEV_API_KEY = "ca4-dev-key"
ERROR_CHARS = 240
"""How much of each distinct error the summary shows (a URL and the system's reason fit)."""


@dataclass
class SendTally:
    """Running totals of a ``ca4 send`` run (shared by the worker threads)."""

    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    rate_limited: int = 0
    retried: int = 0
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class CollectorName(StrEnum):
    """The collectors ``ca4 sdk probe --collector`` can force."""

    NVML = "nvml"
    NVIDIA_SMI = "nvidia-smi"
    NONE = "none"


@sdk_app.command("probe")
def probe(
    collector: Annotated[
        CollectorName | None,
        typer.Option(help="Force a collector (default: the best one that works)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole report as JSON.")
    ] = False,
) -> None:
    """Show what the collector sees on this host: host facts, GPUs and the self-check."""
    report = run_probe(collector.value if collector else None)
    if as_json:
        console.print_json(json.dumps(report))
        return
    payload = report["payload"]
    check = payload["collector"]
    host = Table(title=f"Host ({report['source']['runtime']}, session {report['session_id']})")
    host.add_column("fact")
    host.add_column("value")
    for key, value in payload["host"].items():
        host.add_row(key, f"{value:.1f}" if isinstance(value, float) else str(value))
    console.print(host)
    gpus = Table(title=f"GPUs via {check['collector']}")
    for column in (
        "index",
        "uuid",
        "name",
        "memory used/total MiB",
        "util %",
        "temp °C",
        "power W",
    ):
        gpus.add_column(column)
    for gpu in payload["gpus"]:
        gpus.add_row(
            str(gpu["index"]),
            gpu["uuid"],
            gpu["name"],
            f"{gpu.get('memory_used_mib', '?')}/{gpu.get('memory_total_mib', '?')}",
            str(gpu.get("utilization_gpu_pct", "-")),
            str(gpu.get("temperature_gpu_c", "-")),
            str(gpu.get("power_draw_w", "-")),
        )
    console.print(gpus if payload["gpus"] else "[yellow]No GPUs seen (a CPU runtime is valid).")
    console.print(
        escape(
            f"Unavailable fields: {', '.join(check['unavailable_fields']) or 'none'}\n"
            f"Errors: {'; '.join(check['errors']) or 'none'}"
        )
    )


def _deliver(
    transport: Transport, batch: list[dict[str, Any]], tally: SendTally, retries: int
) -> SendOutcome:
    """POST one batch until it is delivered or refused for good.

    The processor's rate limit paces the load rather than failing it: wait and resend. A
    transient failure (the edge shedding load with 503, a timeout) gets ``retries`` resends with
    backoff, as the SDK's spool would; the same event ids, so the pipeline stores each once.
    """
    outcome = transport.send(batch)
    backoff, transient_left = Backoff(base_s=0.5, max_s=10.0), retries
    while outcome.retry and not outcome.auth_failed:
        if outcome.rate_limited:
            delay = outcome.retry_after_s or 1.0
            with tally.lock:
                tally.rate_limited += 1
        elif transient_left > 0:
            transient_left -= 1
            delay = backoff.next_delay(outcome.retry_after_s)
            with tally.lock:
                tally.retried += 1
        else:
            break
        time.sleep(delay)
        earlier = outcome
        outcome = transport.send(earlier.retry)
        outcome.accepted = earlier.accepted + outcome.accepted
        outcome.rejected = earlier.rejected + outcome.rejected
    return outcome


def send(  # noqa: PLR0917 - Typer maps each option to one parameter
    count: Annotated[int, typer.Option(min=1, help="How many reports to send.")] = 100,
    rate: Annotated[
        float, typer.Option(min=0.0, help="Reports per second; 0 = as fast as possible.")
    ] = 10.0,
    sessions: Annotated[int, typer.Option(min=1, help="How many synthetic runtime sessions.")] = 5,
    batch_size: Annotated[int, typer.Option(min=1, max=500, help="Reports per POST.")] = 10,
    concurrency: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Parallel HTTP clients (a processor answers 429, retried, past its "
            "CA4_MAX_REQUESTS_IN_FLIGHT_PER_TENANT, 16 by default).",
        ),
    ] = 4,
    url: Annotated[
        str | None,
        typer.Option(
            help="Edge API URL (default CA4_EDGE_API_URL, else the dev edge: "
            "127.0.0.1:CA4_DEVSTACK_EDGE_PORT, 8002)."
        ),
    ] = None,
    api_key: Annotated[str | None, typer.Option(help="API key (default CA4_API_KEY).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible sessions.")] = None,
    retries: Annotated[
        int,
        typer.Option(
            min=0,
            help="Resends of a batch after a transient failure (503, timeout), with backoff; "
            "safe because the pipeline drops repeated event ids.",
        ),
    ] = 3,
) -> None:
    """Send realistic synthetic GPU reports (several GPU models) and print a summary."""
    edge_url = url or os.environ.get("CA4_EDGE_API_URL") or DevstackSettings.from_env().edge_url
    key = api_key or os.environ.get("CA4_API_KEY", DEV_API_KEY)
    synthetic = make_sessions(sessions, seed=seed)
    session_cycle = itertools.cycle(synthetic)
    batches = [
        [next(session_cycle).next_report() for _ in range(min(batch_size, count - start))]
        for start in range(0, count, batch_size)
    ]
    tally = SendTally()
    local = threading.local()

    def post(batch: list[dict[str, Any]]) -> None:
        if not hasattr(local, "transport"):
            local.transport = Transport(edge_url, key)
        started = time.perf_counter()
        outcome = _deliver(local.transport, batch, tally, retries)
        with tally.lock:
            tally.latencies_s.append(time.perf_counter() - started)
            tally.accepted += len(outcome.accepted)
            tally.rejected += len(outcome.rejected)
            tally.failed += len(outcome.retry)
            for error in ([outcome.error] if outcome.error else []) + [
                reason for _, reason in outcome.rejected
            ]:
                shown = error[:ERROR_CHARS]
                tally.errors[shown] = tally.errors.get(shown, 0) + 1

    started = time.perf_counter()
    with (
        Progress(
            TextColumn("sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
        ThreadPoolExecutor(max_workers=concurrency) as pool,
    ):
        task = progress.add_task("send", total=count)
        futures = []
        for number, batch in enumerate(batches):
            if rate > 0:
                # Pace by reports, not batches, so --rate means what it says.
                due = started + (number * batch_size) / rate
                time.sleep(max(0.0, due - time.perf_counter()))
            future = pool.submit(post, batch)
            future.add_done_callback(partial(_advance, progress, task, len(batch)))
            futures.append(future)
        for future in futures:
            future.result()
    elapsed = time.perf_counter() - started
    _print_summary(tally, count, sessions, elapsed, edge_url)
    if tally.accepted < count:
        raise typer.Exit(code=1)


def _advance(progress: Progress, task: TaskID, amount: int, _future: object) -> None:
    progress.advance(task, amount)


def _print_summary(tally: SendTally, count: int, sessions: int, elapsed: float, url: str) -> None:
    table = Table(title=f"ca4 send → {url}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    latencies = sorted(tally.latencies_s)
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else 0.0
    for name, value in (
        ("reports", str(count)),
        ("sessions", str(sessions)),
        ("accepted", str(tally.accepted)),
        ("rejected", str(tally.rejected)),
        ("failed (retryable)", str(tally.failed)),
        ("waits for the rate limit (429)", str(tally.rate_limited)),
        ("resent after a transient failure", str(tally.retried)),
        ("elapsed", f"{elapsed:.2f} s"),
        ("throughput", f"{tally.accepted / elapsed:.1f} reports/s" if elapsed else "-"),
        ("POST latency p50", f"{statistics.median(latencies) * 1000:.1f} ms" if latencies else "-"),
        ("POST latency p95", f"{p95 * 1000:.1f} ms"),
    ):
        table.add_row(name, value)
    console.print(table)
    for error, times in tally.errors.items():
        console.print(f"[red]{times} x {escape(error)}", soft_wrap=True)  # one line each
