"""A stand-in for the cluster ingress: one local URL that routes each path to the app serving it.

Tests that cannot run Traefik (no cluster here) still need the one edge URL a notebook user gets.
This proxy reads the chart's own route list (``ingress.routes`` in the ca4-app values), matches
path prefixes on segment boundaries as a Kubernetes ``Prefix`` path does (longest wins) and
answers ``404`` for everything else, as the ingress does for probes, metrics and docs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_VALUES = REPO_ROOT / "infra" / "helm" / "ca4-app" / "values.yaml"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


def chart_routes() -> dict[str, str]:
    """``path prefix -> component`` from the chart's default values."""
    values = yaml.safe_load(CHART_VALUES.read_text("utf-8"))
    return {route["path"]: route["component"] for route in values["ingress"]["routes"]}


def route(path: str, routes: Mapping[str, str]) -> str | None:
    """The component serving ``path`` (a ``Prefix`` match on whole segments), or None."""
    bare = path.split("?", 1)[0]
    matches = [p for p in routes if bare == p or bare.startswith(p.rstrip("/") + "/")]
    return routes[max(matches, key=len)] if matches else None


def _handler(routes: Mapping[str, str], upstreams: Mapping[str, str]) -> type:
    class EdgeHandler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            component = route(self.path, routes)
            if component is None:
                self._answer(404, {"Content-Type": "text/plain"}, b"404 page not found\n")
                return
            length = int(self.headers.get("Content-Length") or 0)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream = requests.request(
                self.command,
                f"{upstreams[component]}{self.path}",
                headers=headers,
                data=self.rfile.read(length) if length else None,
                timeout=60,
                allow_redirects=False,
            )
            kept = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-encoding"
            }
            self._answer(upstream.status_code, kept, upstream.content)

        def _answer(self, code: int, headers: Mapping[str, str], body: bytes) -> None:
            self.send_response(code)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_HEAD = _forward  # noqa: N815 - http.server's method names

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the apps log the requests."""

    return EdgeHandler


@contextmanager
def local_edge(upstreams: Mapping[str, str]) -> Iterator[str]:
    """Serve the chart's routes on a free local port; ``upstreams`` maps component -> base URL."""
    routes = chart_routes()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(routes, upstreams))
    thread = threading.Thread(target=server.serve_forever, name="edge-proxy", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
