"""A stub of the Grafana API ``ca4 verify`` reads in step 7: ``/api/health`` and the search API,
behind one accepted ``Authorization`` (a service account's token on K3s, the admin's user and
password for ``--target local`` as the README gives it)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: The dashboards the provisioned Grafana serves (verify's ``DASHBOARD_UIDS``).
DASHBOARDS = [{"uid": "ca4-pipeline"}, {"uid": "ca4-gpus"}]


def bearer(token: str) -> str:
    """The ``Authorization`` a service account's token makes."""
    return f"Bearer {token}"


def basic(user: str, password: str) -> str:
    """The ``Authorization`` of a user/password login (HTTP basic, as Grafana's API takes it)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def search_answer(authorization: str | None, accepted: str) -> tuple[int, Any]:
    """Status and body of ``GET /api/search``: the dashboards for the accepted login only."""
    if authorization != accepted:
        return 401, {"message": "Unauthorized"}
    return 200, DASHBOARDS


@dataclass
class StubGrafana:
    """Where the stub answers, and the searches it was sent (their ``Authorization`` and query)."""

    url: str
    searches: list[tuple[str | None, dict[str, list[str]]]] = field(default_factory=list)


@contextmanager
def stub_grafana(accepted: str) -> Iterator[StubGrafana]:
    """Serve the stub on a free loopback port until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    stub = StubGrafana(url=f"http://127.0.0.1:{server.server_address[1]}")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            status: int
            body: Any
            if url.path == "/api/health":
                status, body = 200, {"database": "ok"}
            elif url.path == "/api/search":
                authorization = self.headers.get("Authorization")
                stub.searches.append((authorization, parse_qs(url.query)))
                status, body = search_answer(authorization, accepted)
            else:
                status, body = 404, {"message": "Not found"}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
