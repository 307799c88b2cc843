"""Detached service processes tracked by PID file, and stopped only if they are still ours.

A service runs in its own session (``start_new_session=True``) so it outlives the ``ca4``
command, with stdout and stderr appended to its log file. Its PID file holds the PID; before
signalling that PID we check ``/proc/<pid>/cmdline`` still contains the service's markers (for
example the path of its config file in our state dir), so a recycled PID is never killed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential


@dataclass(frozen=True)
class LaunchSpec:
    """How to start one service process."""

    argv: Sequence[str]
    markers: Sequence[str]
    """Strings that must all appear in ``/proc/<pid>/cmdline`` for the PID to count as ours."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment on top of ours."""
    cwd: Path | None = None
    user: str | None = None
    """Run as this user (when we are root and the server refuses to run as root)."""


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name in field 2 may contain spaces; the state follows its closing paren.
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    state = _state(pid)
    return state is not None and state not in {"Z", "X"}


@dataclass(frozen=True)
class ServiceProcess:
    """The PID file and log file of one service, and what its command line must contain."""

    name: str
    run_dir: Path
    log_file: Path

    @property
    def pid_file(self) -> Path:
        """``<run_dir>/<name>.pid``."""
        return self.run_dir / f"{self.name}.pid"

    def recorded_pid(self) -> int | None:
        """The PID in the PID file, if the file exists and parses."""
        try:
            return int(self.pid_file.read_text(encoding="utf-8").strip())
        except (FileNotFoundError, ValueError):
            return None

    def owned_pid(self, markers: Sequence[str]) -> int | None:
        """The recorded PID if that process is alive and still ours, else None."""
        pid = self.recorded_pid()
        if pid is None or not alive(pid):
            return None
        cmdline = _cmdline(pid)
        if cmdline is None or not all(marker in cmdline for marker in markers):
            return None
        return pid

    def forget(self) -> None:
        """Remove the PID file."""
        self.pid_file.unlink(missing_ok=True)

    def spawn(self, spec: LaunchSpec) -> subprocess.Popen[bytes]:
        """Start the process detached from us and record its PID."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **spec.env}
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - argv is built from our own pinned installs
                list(spec.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=spec.cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
                user=spec.user,
            )
        self.pid_file.write_text(f"{proc.pid}\n", encoding="utf-8")
        return proc

    async def stop(
        self,
        markers: Sequence[str],
        *,
        timeout_s: float = 30.0,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> bool:
        """Signal our process group, SIGKILL it after ``timeout_s``; True if one was running."""
        pid = self.owned_pid(markers)
        if pid is None:
            self.forget()
            return False
        _signal_group(pid, stop_signal)
        if not await wait_gone(pid, timeout_s):
            _signal_group(pid, signal.SIGKILL)
            await wait_gone(pid, 10.0)
        self.forget()
        return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # Each service leads its own session and process group (start_new_session=True).
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, sig)


class _StillRunningError(Exception):
    """The process has not exited yet."""


async def wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` has exited; True if it did within ``timeout_s``."""
    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(timeout_s),
            wait=wait_exponential(multiplier=0.05, max=0.5),
            retry=retry_if_exception_type(_StillRunningError),
            reraise=True,
        ):
            with attempt:
                if alive(pid):
                    raise _StillRunningError
    except _StillRunningError:
        return False
    return True


async def reap(proc: subprocess.Popen[bytes]) -> int | None:
    """Poll a child we spawned without blocking (collects zombies of crashed services)."""
    return await asyncio.to_thread(proc.poll)
