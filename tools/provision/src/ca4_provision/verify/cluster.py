"""What ``ca4 verify --target k3s`` opens itself: kubectl port-forwards and kubectl exec.

The HTTP services are reached through ``kubectl port-forward`` on ports the kernel picks (never the
dev stack's), Kafka and the database from inside the cluster with ``kubectl exec`` (the broker
advertises in-cluster names, and DocumentDB is reachable only from the VPC, with the app's own
credentials). Everything opened here is closed when the run ends, failed or not.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from ca4_provision.verify.settings import VerifySettings

#: Settings a k3s run replaces with its own port-forwards; naming loopback for one is refused.
FORWARDED_URLS = ("EDGE_API_URL", "WORKER_URL", "PROMETHEUS_URL", "GRAFANA_URL", "LOKI_URL")
#: Settings a k3s run does not use (Kafka and the database are read through kubectl exec).
UNUSED_ON_K3S = ("KAFKA_BOOTSTRAP_SERVERS", "MONGO_URL")
_FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) ->")


class ClusterAccessError(Exception):
    """kubectl could not open what the run needs; the message says what and why."""


@dataclass(frozen=True)
class Forward:
    """One ``kubectl port-forward`` target: a Service in a namespace and its port."""

    setting: str
    namespace: str
    service: str
    port: str = "http"
    """The Service port's name, which kubectl resolves whatever number a values file gives it
    (the app's Services listen on 80, not on the containers' 8000 and 8001)."""
    fallback: str | None = None
    """The Service forwarded instead where ``service`` does not exist."""


def forwards(settings: VerifySettings) -> tuple[Forward, ...]:
    """The Services the charts deploy, one per forwarded setting."""
    app, monitoring = settings.APP_NAMESPACE, settings.MONITORING_NAMESPACE
    return (
        Forward("EDGE_API_URL", app, f"{settings.APP_RELEASE}-processor"),
        # The read API where the edge sends reads: the reader where the chart runs one (prod's
        # reader.enabled), else the worker.
        Forward(
            "WORKER_URL",
            app,
            f"{settings.APP_RELEASE}-reader",
            fallback=f"{settings.APP_RELEASE}-worker",
        ),
        Forward("PROMETHEUS_URL", monitoring, "prometheus"),
        Forward("GRAFANA_URL", monitoring, "grafana"),
        Forward("LOKI_URL", monitoring, "loki"),
    )


def _is_loopback(url: str) -> bool:
    host = urlsplit(url if "//" in url else f"//{url}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_local_endpoints(settings: VerifySettings) -> None:
    """A k3s run must never check this machine: loopback endpoints given to it are refused."""
    given = settings.model_fields_set
    local = [
        f"{name}={getattr(settings, name)}"
        for name in (*FORWARDED_URLS, *UNUSED_ON_K3S)
        if name in given and _is_loopback(str(getattr(settings, name)).split(",")[0])
    ]
    if local:
        raise ClusterAccessError(
            "--target k3s checks the cluster, not this machine: it opens its own port-forwards, "
            f"so remove {', '.join(local)}"
        )


async def _open_forward(forward: Forward) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        "kubectl",
        "-n",
        forward.namespace,
        "port-forward",
        f"svc/{forward.service}",
        f":{forward.port}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    match = _FORWARDING.search(line.decode())
    if match is None:
        error = b""
        if not line and process.stderr is not None:  # kubectl exited: its reason is on stderr
            error = await asyncio.wait_for(process.stderr.read(), 5)
        await _close(process)
        raise ClusterAccessError(
            f"kubectl port-forward svc/{forward.service} in {forward.namespace} failed: "
            f"{(line or error).decode().strip() or 'no output'}"
        )
    return process, int(match.group(1))


async def _close(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()


@asynccontextmanager
async def port_forwards(settings: VerifySettings) -> AsyncIterator[VerifySettings]:
    """The settings with every HTTP endpoint on a port-forward opened here, closed on exit."""
    refuse_local_endpoints(settings)
    opened: list[asyncio.subprocess.Process] = []
    try:
        urls: dict[str, str] = {}
        for forward in forwards(settings):
            try:
                process, port = await _open_forward(forward)
            except ClusterAccessError as error:
                if forward.fallback is None or "not found" not in str(error):
                    raise
                process, port = await _open_forward(replace(forward, service=forward.fallback))
            opened.append(process)
            urls[forward.setting] = f"http://127.0.0.1:{port}"
        yield settings.model_copy(update=urls)
    finally:
        for process in opened:
            await _close(process)


async def kubectl_exec(namespace: str, target: str, *command: str, seconds: float) -> str:
    """stdout of ``kubectl exec`` in ``target`` (pod/NAME or deploy/NAME); a failure raises."""
    process = await asyncio.create_subprocess_exec(
        "kubectl",
        "-n",
        namespace,
        "exec",
        target,
        "--",
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), seconds)
    except TimeoutError:
        await _close(process)
        raise
    if process.returncode != 0:
        raise ClusterAccessError(
            f"kubectl exec {target} in {namespace}: {stderr.decode().strip()[:300]}"
        )
    return stdout.decode()
