"""Drive ``ca4 devstack`` from tests: stop a service to simulate an outage, then bring it back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ca4_provision.devstack.documentdb import PostgresInstall
from ca4_provision.devstack.health import HEALTH_COLLECTION, HEALTH_DATABASE, PSQL_OPTIONS, psql
from ca4_provision.devstack.settings import DevstackSettings
from ca4_provision.devstack.stack import resolve_names

DEVSTACK_SERVICES = ("kafka", "postgres", "ferretdb", "minio", "alertmanager", "prometheus")


@dataclass(frozen=True)
class CliResult:
    """Exit code and output of one ``ca4 devstack`` command."""

    code: int
    stdout: str
    stderr: str


async def run_devstack(
    *args: str, timeout_s: float = 240.0, env: Mapping[str, str] | None = None
) -> CliResult:
    """Run ``ca4 devstack ARGS`` in a child process (its services outlive it, detached), in
    ``env`` (default: this process's environment).

    If it hangs, it is sent SIGABRT so faulthandler prints where, and that goes in the error.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ca4_provision.devstack",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**(os.environ if env is None else env), "PYTHONFAULTHANDLER": "1"},
    )
    communicating = asyncio.ensure_future(proc.communicate())
    try:
        out, err = await asyncio.wait_for(asyncio.shield(communicating), timeout_s)
    except TimeoutError:
        proc.send_signal(signal.SIGABRT)
        _out, err = await communicating
        raise RuntimeError(
            f"`ca4 devstack {' '.join(args)}` hung for {timeout_s:.0f}s:\n{err.decode()[-4000:]}"
        ) from None
    return CliResult(proc.returncode or 0, out.decode(), err.decode())


@dataclass
class DevstackControl:
    """Stops and starts dev stack services; whatever it stopped is restarted at teardown."""

    stopped: set[str] = field(default_factory=set)

    async def status(self) -> dict[str, dict[str, Any]]:
        """``ca4 devstack status --json``, keyed by service name."""
        result = await run_devstack("status", "--json")
        return {row["name"]: row for row in json.loads(result.stdout)}

    async def require_ours(self, service: str) -> None:
        """Fail unless ``service`` runs under this checkout's dev stack (so we may stop it)."""
        row = (await self.status())[resolve_names([service])[0]]
        if row["pid"] is None:
            raise RuntimeError(
                f"{service} is not run by this checkout's `ca4 devstack` ({row['state']}); "
                "disruptive tests stop and restart services, so run them under `make test` or "
                "after `uv run ca4 devstack up`."
            )

    async def stop(self, service: str) -> None:
        """Stop one service (simulated outage)."""
        await self.require_ours(service)
        self.stopped.add(service)
        result = await run_devstack("stop", service)
        if result.code != 0:
            raise RuntimeError(f"ca4 devstack stop {service} failed:\n{result.stderr}")

    async def start(self, service: str) -> None:
        """Start it again and wait until it is healthy."""
        result = await run_devstack("start", service)
        if result.code != 0:
            raise RuntimeError(f"ca4 devstack start {service} failed:\n{result.stderr}")
        self.stopped.discard(service)

    @contextlib.asynccontextmanager
    async def paused(self, service: str) -> AsyncIterator[None]:
        """Freeze one service's process (``SIGSTOP``) while the block runs: it keeps its
        connections but answers nothing, like a server that stalls; then ``SIGCONT``."""
        await self.require_ours(service)
        pid = (await self.status())[resolve_names([service])[0]]["pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    async def restore(self) -> None:
        """Restart everything this control stopped."""
        for service in sorted(self.stopped):
            await self.start(service)


@contextlib.asynccontextmanager
async def health_collection_locked() -> AsyncIterator[None]:
    """Hold an exclusive PostgreSQL lock on the health check's collection: it pings, no query ends.

    A wedged database without stopping anything: only the scratch collection is locked, so other
    data stays usable, and the lock ends with the block.
    """
    url = DevstackSettings.from_env().postgres_url
    program = PostgresInstall.debian().program("psql")
    table = await psql(
        url,
        "SELECT 'documentdb_data.documents_' || collection_id "
        "FROM documentdb_api_catalog.collections "
        f"WHERE database_name = '{HEALTH_DATABASE}' AND collection_name = '{HEALTH_COLLECTION}'",
        psql_program=program,
    )
    holder = await asyncio.create_subprocess_exec(
        str(program),
        *PSQL_OPTIONS,
        "--quiet",
        url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    holder.stdin.write(
        f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n".encode()
    )
    await holder.stdin.drain()
    try:
        line = await asyncio.wait_for(holder.stdout.readline(), 30)
        if line.strip() != b"locked":
            raise RuntimeError(f"could not lock {table}: psql said {line!r}")
        yield
    finally:
        holder.stdin.write(b"ROLLBACK;\n")
        holder.stdin.close()
        await asyncio.wait_for(holder.wait(), 30)
