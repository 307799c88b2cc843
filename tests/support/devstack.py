"""Drive ``ca4 devstack`` from tests: stop a service to simulate an outage, then bring it back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from ca4_provision.devstack.stack import resolve_names

DEVSTACK_SERVICES = ("kafka", "ferretdb", "minio", "prometheus")


@dataclass(frozen=True)
class CliResult:
    """Exit code and output of one ``ca4 devstack`` command."""

    code: int
    stdout: str
    stderr: str


async def run_devstack(*args: str, timeout_s: float = 240.0) -> CliResult:
    """Run ``ca4 devstack ARGS`` in a child process (its services outlive it, detached).

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
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
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

    async def restore(self) -> None:
        """Restart everything this control stopped."""
        for service in sorted(self.stopped):
            await self.start(service)
