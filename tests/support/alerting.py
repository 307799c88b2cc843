"""Alertmanager for tests: the dev stack's pinned build, a webhook that records what it is sent,
and a scrape target the test switches off and on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from ca4_provision.devstack import installers
from ca4_provision.devstack.settings import HOST, DevstackSettings

from tests.support.ports import free_port

Notification = dict[str, Any]


def alertmanager_programs() -> Path:
    """The ``bin`` folder with ``alertmanager`` and ``amtool``, built into the dev stack cache
    once (a few minutes the first time on a machine)."""
    cache = DevstackSettings.from_env().cache
    return asyncio.run(installers.install_alertmanager(cache))


@contextlib.contextmanager
def running_alertmanager(programs: Path, config: Path, folder: Path) -> Iterator[str]:
    """Alertmanager from ``programs`` with ``config`` on a free port, its data and log in
    ``folder``, ready; its URL. Fails the test with the log's end when it never gets ready."""
    port = free_port()
    log_path = folder / "alertmanager.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(programs / "alertmanager"),
                f"--config.file={config}",
                f"--storage.path={folder / 'data'}",
                f"--web.listen-address={HOST}:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://{HOST}:{port}"
        try:
            _wait_ready(url, log_path)
            yield url
        finally:
            process.terminate()
            process.wait(10)


def _wait_ready(url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(log.read_text(encoding="utf-8", errors="replace")[-3000:])


class _Server:
    """A threaded HTTP server on 127.0.0.1 whose handler the subclass chooses."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int | None = None) -> None:
        self.port = port or free_port()
        self._handler = handler
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        """Listen (again) on the same port."""
        server = ThreadingHTTPServer((HOST, self.port), self._handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        """Close the port: connections are refused until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{HOST}:{self.port}"


class WebhookReceiver(_Server):
    """Records every JSON body POSTed to it, with the path it was POSTed to."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Notification]] = []
        self._arrived = threading.Condition()
        received, arrived = self.received, self._arrived

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with arrived:
                    received.append((self.path, json.loads(body)))
                    arrived.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                """Quiet: pytest shows what the assertions need."""

        super().__init__(Handler)

    def wait_for(
        self, matches: Callable[[str, Notification], bool], timeout_s: float
    ) -> Notification:
        """The first notification received (so far or within ``timeout_s``) that ``matches``
        accepts, whatever arrived before or between."""
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while True:
                for path, notification in self.received:
                    if matches(path, notification):
                        return notification
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.wait(left)
            seen = [
                f"{path}: {n.get('status')} {n.get('groupLabels')}" for path, n in self.received
            ]
        raise AssertionError(f"no matching notification within {timeout_s:.0f} s; got {seen}")


class MetricsTarget(_Server):
    """A scrape target that answers ``/metrics`` while started."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"# TYPE ca4_fake_target gauge\nca4_fake_target 1\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                """Quiet: Prometheus scrapes every few seconds."""

        super().__init__(Handler)
