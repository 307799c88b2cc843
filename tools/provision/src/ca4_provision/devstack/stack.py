"""Bring services up and down: install, launch, wait for health, provision, report."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from subprocess import Popen
from typing import Literal, Protocol

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from ca4_provision.devstack.health import UnhealthyError, import_clients, port_open
from ca4_provision.devstack.installers import tail
from ca4_provision.devstack.process import alive
from ca4_provision.devstack.services import SERVICE_NAMES, Service, catalog
from ca4_provision.devstack.settings import HOST, DevstackSettings

CHECK_DEADLINE_S = 12.0

ALIASES = {
    "s3": "minio",
    "mongo": "ferretdb",
    "mongodb": "ferretdb",
    "db": "ferretdb",
    "database": "ferretdb",
    "pg": "postgres",
    "postgresql": "postgres",
}

State = Literal["healthy", "unhealthy", "stopped", "external"]
StartOutcome = Literal["started", "running", "external"]


class DevstackError(RuntimeError):
    """A service could not be started; the message says why and where its log is."""


class Reporter(Protocol):
    """Where progress goes (the CLI renders it with Rich)."""

    def begin(self, service: str, what: str) -> None:
        """A long step starts (an install, a start)."""

    def end(self, service: str, what: str) -> None:
        """That step finished."""

    def note(self, service: str, message: str) -> None:
        """A one-line note."""


@dataclass(frozen=True)
class ServiceStatus:
    """One row of ``ca4 devstack status``."""

    name: str
    version: str
    address: str
    pid: int | None
    state: State
    detail: str


def resolve_names(names: Iterable[str]) -> list[str]:
    """Service names with aliases (``s3``, ``mongo``) resolved; unknown names raise."""
    known = list(SERVICE_NAMES)
    resolved = []
    for raw in names:
        name = ALIASES.get(raw.lower(), raw.lower())
        if name not in known:
            raise DevstackError(f"unknown service {raw!r}; choose from {', '.join(known)}")
        resolved.append(name)
    return resolved


class Stack:
    """The dev stack described by ``settings``."""

    def __init__(self, settings: DevstackSettings, reporter: Reporter) -> None:
        self.settings = settings
        self.services = catalog(settings)
        self.reporter = reporter
        self.outcomes: dict[str, StartOutcome] = {}
        """What ``up`` did to each service so far (kept when a later service fails)."""

    def select(
        self, names: Sequence[str] | None, *, with_app: bool = True, with_dependencies: bool = False
    ) -> list[Service]:
        """The named services (all of them, or all infra ones, when no names are given).

        ``with_dependencies`` adds what the named ones need (``up ferretdb`` starts PostgreSQL).
        """
        if not names:
            return [s for s in self.services.values() if with_app or s.group == "infra"]
        wanted = set(resolve_names(names))
        while with_dependencies and (
            needed := {d for n in wanted for d in self.services[n].depends_on} - wanted
        ):
            wanted |= needed
        return [s for s in self.services.values() if s.name in wanted]

    # --- status -------------------------------------------------------------------------------

    @staticmethod
    async def check(service: Service) -> None:
        """Run the service's health check with a hard time limit (a hung server is unhealthy)."""
        try:
            await asyncio.wait_for(service.check(), CHECK_DEADLINE_S)
        except TimeoutError as exc:
            raise UnhealthyError(f"health check gave no answer in {CHECK_DEADLINE_S:.0f}s") from exc

    async def status_of(self, service: Service) -> ServiceStatus:
        """Is it ours, running and healthy?"""
        pid = service.process.owned_pid(service.markers)
        state: State
        try:
            await self.check(service)
        except UnhealthyError as exc:
            state, detail = ("unhealthy" if pid else "stopped"), str(exc)
        else:
            state, detail = ("healthy" if pid else "external"), ""
        if state == "external":
            detail = "answers, but not started by this dev stack"
        return ServiceStatus(
            name=service.name,
            version=await service.version(),
            address=service.address,
            pid=pid,
            state=state,
            detail=detail,
        )

    async def status(self, names: Sequence[str] | None = None) -> list[ServiceStatus]:
        """Status of each service, checked concurrently."""
        import_clients()
        return list(await asyncio.gather(*(self.status_of(s) for s in self.select(names))))

    # --- start --------------------------------------------------------------------------------

    async def _wait_healthy(self, service: Service, proc: Popen[bytes] | None) -> None:
        deadline = self.settings.health_timeout_s
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_delay(deadline),
                wait=wait_exponential(multiplier=0.1, max=1.0),
                retry=retry_if_exception_type(UnhealthyError),
                reraise=True,
            ):
                with attempt:
                    if proc is not None and proc.poll() is not None:
                        raise DevstackError(
                            f"{service.name} exited with code {proc.returncode} while starting; "
                            f"log {service.process.log_file}:\n{tail(service.process.log_file)}"
                        )
                    await self.check(service)
        except UnhealthyError as exc:
            raise DevstackError(
                f"{service.name} not healthy after {deadline:.0f}s ({exc}); "
                f"log {service.process.log_file}:\n{tail(service.process.log_file)}"
            ) from exc

    async def start(
        self, service: Service, dependencies: Sequence[asyncio.Future[StartOutcome]] = ()
    ) -> StartOutcome:
        """Start one service unless it already runs; wait for health; provision it.

        It installs while its ``dependencies`` start, and launches only once they are healthy.
        """
        outcome: StartOutcome
        pid = service.process.owned_pid(service.markers)
        if pid is not None:
            outcome = "running"
            await self._wait_healthy(service, None)
        elif await port_open(HOST, service.port):
            try:
                await self.check(service)
            except UnhealthyError as exc:
                raise DevstackError(
                    f"port {service.port} for {service.name} is taken by another process "
                    f"that is not a healthy {service.name} ({exc}); free it or move "
                    "the dev stack with the CA4_DEVSTACK_*_PORT variables"
                ) from exc
            outcome = "external"
            self.reporter.note(service.name, f"already served at {service.address} (not ours)")
        else:
            outcome = "started"
            if not service.installed():
                self.reporter.begin(service.name, "installing")
                began = time.monotonic()
                await service.install()
                self.reporter.end(service.name, "installing")
                self.reporter.note(service.name, f"installed in {time.monotonic() - began:.0f}s")
            await self._wait_for(service, dependencies)
            self.reporter.begin(service.name, "starting")
            began = time.monotonic()
            spec = await service.prepare()
            proc = await asyncio.to_thread(service.process.spawn, spec)
            try:
                await self._wait_healthy(service, proc)
            except BaseException:
                await service.process.stop(
                    service.markers, timeout_s=10, stop_signal=service.stop_signal
                )
                raise
            finally:
                self.reporter.end(service.name, "starting")
            self.reporter.note(
                service.name,
                f"healthy at {service.address} (pid {proc.pid}, {time.monotonic() - began:.1f}s)",
            )
        self.outcomes[service.name] = outcome
        note = await service.provision()
        if note:
            self.reporter.note(service.name, note)
        return outcome

    @staticmethod
    async def _wait_for(
        service: Service, dependencies: Sequence[asyncio.Future[StartOutcome]]
    ) -> None:
        try:
            await asyncio.gather(*dependencies)
        except Exception as exc:
            raise DevstackError(
                f"{service.name} not started: {', '.join(service.depends_on)} did not start"
            ) from exc

    async def up(self, names: Sequence[str] | None, *, with_app: bool) -> dict[str, StartOutcome]:
        """Start infra services in parallel, then the apps (which need the infra).

        Within a group a service waits for its ``depends_on`` to be healthy before it launches.
        """
        selected = self.select(names, with_app=with_app, with_dependencies=True)
        import_clients()
        for group in ("infra", "app"):
            batch = [s for s in selected if s.group == group]
            starts: dict[str, asyncio.Future[StartOutcome]] = {}
            for service in batch:  # dependencies come first in the catalog
                needs = [starts[d] for d in service.depends_on if d in starts]
                starts[service.name] = asyncio.ensure_future(self.start(service, needs))
            results = await asyncio.gather(*starts.values(), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if len(errors) == 1:
                raise errors[0]
            if errors:
                raise DevstackError("\n\n".join(str(e) for e in errors))
        return dict(self.outcomes)

    # --- stop ---------------------------------------------------------------------------------

    async def stop(self, service: Service) -> bool:
        """Stop one service if we started it; True if it was running."""
        stopped = await service.process.stop(
            service.markers, timeout_s=service.stop_timeout_s, stop_signal=service.stop_signal
        )
        if stopped:
            self.reporter.note(service.name, "stopped")
        return stopped

    async def down(self, names: Sequence[str] | None = None) -> list[str]:
        """Stop the apps first, then the infra, each group in parallel after its dependents."""
        selected = self.select(names)
        stopped: list[str] = []
        for group in ("app", "infra"):
            batch = [s for s in selected if s.group == group]
            while batch:  # dependents before what they need (FerretDB before PostgreSQL)
                needed = {d for s in batch for d in s.depends_on}
                wave = [s for s in batch if s.name not in needed]
                results = await asyncio.gather(*(self.stop(s) for s in wave))
                stopped += [s.name for s, was in zip(wave, results, strict=True) if was]
                batch = [s for s in batch if s not in wave]
        return stopped

    def running_pids(self) -> dict[str, int]:
        """PIDs of the services of ours that are alive."""
        pids = {}
        for service in self.services.values():
            pid = service.process.owned_pid(service.markers)
            if pid is not None and alive(pid):
                pids[service.name] = pid
        return pids
