"""The dev edge, run in process: one local URL that routes each path to the app serving it.

Tests that cannot run Traefik (no cluster here) still need the one edge URL a notebook user gets.
This serves the dev stack's own edge (``ca4_provision.devstack.edge``, what ``make dev`` runs
on port 8002), which reads the chart's route list (``ingress.routes`` in the ca4-app values),
matches path prefixes on segment boundaries as a Kubernetes ``Prefix`` path does (longest wins)
and answers ``404`` for everything else, as the ingress does for probes, metrics and docs.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import uvicorn
from ca4_provision.devstack.edge import UVICORN_OPTIONS, EdgeProxy, chart_routes, route

__all__ = ["chart_routes", "local_edge", "route"]

START_TIMEOUT_S = 10.0


@contextmanager
def local_edge(upstreams: Mapping[str, str], *, deadline_s: float = 60.0) -> Iterator[str]:
    """Serve the chart's routes on a free local port; ``upstreams`` maps component -> base URL."""
    proxy = EdgeProxy(chart_routes(), upstreams, deadline_s=deadline_s)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        proxy, log_level="warning", access_log=False, lifespan="on", **UVICORN_OPTIONS
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="edge-proxy", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the local edge did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT_S)
        sock.close()
