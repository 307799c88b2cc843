"""A tiny in-process HTTP server that speaks the processor's batch API, for SDK unit tests.

Per-report answers have the processor's shapes: ``207`` when some reports are rejected, ``422``
with the same body when none is accepted, and the processor's own error item for a report of
another tenant's session (``ca4_processor.api.tenancy.session_forbidden_item``).
"""

from __future__ import annotations

import functools
import gzip
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ca4_processor.api.tenancy import session_forbidden_item


class EverySession(set[str]):
    """``foreign_sessions`` holding every session id: each is another tenant's (a key whose
    tenant changes again, or a fresh session refused too)."""

    def __contains__(self, item: object) -> bool:
        return True


@dataclass
class StubState:
    """What the stub answers and what it has seen."""

    status: int = 202
    first_statuses: list[int] = field(default_factory=list)
    """Answered (in order) before ``status``, one per request."""
    retry_after: str | None = None
    delay_s: float = 0.0
    reject_event_ids: set[str] = field(default_factory=set)
    failing_event_ids: set[str] = field(default_factory=set)
    """Answer 500 to any batch that holds one of these (a report the API fails on)."""
    foreign_sessions: set[str] = field(default_factory=set)
    """Sessions owned by another tenant: their reports are rejected as ``session_forbidden``."""
    page: str | None = None
    """Answer ``status`` with this HTML page instead (a tunnel or portal, not the API)."""
    page_headers: dict[str, str] = field(default_factory=dict)
    """Headers sent with ``page`` (a tunnel's ``ngrok-error-code``)."""
    raw_answer: bytes | None = None
    """Answer ``status`` with these bytes as JSON instead (what a hostile edge could send)."""
    padding: int = 0
    """Bytes of JSON whitespace after each answer: megabytes from an edge that a man in the
    middle controls, still valid JSON once read whole."""
    gzip_answer: bool = False
    """Send each answer gzipped, with ``Content-Encoding: gzip``; with ``padding``, a gzip bomb
    (the padding is a few KiB on the wire, megabytes once inflated)."""
    content_encoding: str | None = None
    """Send ``raw_answer`` as it is with this ``Content-Encoding`` (any bytes, any coding: what
    an edge in the middle could send)."""
    chunked: bool = False
    """Send each answer in HTTP/1.1 with ``Transfer-Encoding: chunked`` (4 KiB chunks), not a
    ``Content-Length``, as proxies that compress on the fly do."""
    trickle_s: float = 0.0
    """Send each answer's body one byte every ``trickle_s`` seconds after its headers: no read
    waits long, yet the whole answer takes as long as the edge likes."""
    redirects: int = 0
    """Answer this many requests first with ``redirect_status`` to ``redirect_to`` (the same
    path when None), with a body no client needs that takes ``redirect_body_s`` to arrive (a
    byte every 20 ms)."""
    redirect_status: int = 307
    redirect_to: str | None = None
    """The ``Location`` of a redirect; an empty string sends none."""
    redirect_body_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted_ids(self) -> list[str]:
        with self.lock:
            return list(self.accepted)


def _handler(state: StubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        @property  # read for each request: with chunked answers, HTTP/1.1 and keep-alive
        def protocol_version(self) -> str:  # type: ignore[override]
            return "HTTP/1.1" if state.chunked else "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            # What the API answers a POST turned into a GET by a followed 301 or 302.
            with state.lock:
                state.requests.append({"path": self.path, "headers": dict(self.headers)})
            self._answer(405, {"detail": "Method Not Allowed"})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            body = json.loads(raw)
            with state.lock:
                state.requests.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                        "connection": self.client_address,
                    }
                )
            if state.delay_s:
                time.sleep(state.delay_s)
            with state.lock:
                redirect = state.redirects > 0
                state.redirects -= redirect
            if redirect:
                self._redirect()
                return
            with state.lock:
                status = state.first_statuses.pop(0) if state.first_statuses else state.status
                if any(r["event_id"] in state.failing_event_ids for r in body["reports"]):
                    status = 500
            if state.page is not None:
                self._answer_page(status, state.page)
                return
            if state.raw_answer is not None:
                self._answer_bytes(status, state.raw_answer)
                return
            if status not in (202, 207):
                self._answer(status, {"detail": "stub says no"})
                return
            results = []
            for index, report in enumerate(body["reports"]):
                if report["event_id"] in state.reject_event_ids:
                    results.append({"index": index, "status": "rejected", "errors": []})
                    continue
                if report.get("session_id") in state.foreign_sessions:
                    error = session_forbidden_item(index).model_dump(mode="json", exclude_none=True)
                    results.append({"index": index, "status": "rejected", "errors": [error]})
                    continue
                with state.lock:
                    state.accepted.append(report["event_id"])
                results.append({"index": index, "status": "accepted"})
            rejected = sum(r["status"] == "rejected" for r in results)
            code = (422 if rejected == len(results) else 207) if rejected else 202
            self._answer(
                code,
                {"accepted": len(results) - rejected, "rejected": rejected, "results": results},
            )

        def _answer(self, code: int, body: dict[str, Any]) -> None:
            self._answer_bytes(code, json.dumps(body).encode())

        def _answer_bytes(self, code: int, data: bytes) -> None:
            padding = b" " * state.padding
            if state.gzip_answer:
                # Two gzip members (decoders read both): the padding's is made once.
                data, padding = gzip.compress(data), _gzipped_spaces(state.padding)
            encoding = "gzip" if state.gzip_answer else state.content_encoding
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            if state.chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(len(data) + len(padding)))
            if encoding:
                self.send_header("Content-Encoding", encoding)
            if state.retry_after and code >= 400:
                self.send_header("Retry-After", state.retry_after)
            self.end_headers()
            if state.chunked:
                self._write_chunked(data + padding)
            else:
                self._write(data + padding, every_s=state.trickle_s)

        def _redirect(self) -> None:
            size = int(state.redirect_body_s / 0.02)
            location = self.path if state.redirect_to is None else state.redirect_to
            self.send_response(state.redirect_status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self._write(b" " * size, every_s=0.02)

        def _write(self, data: bytes, *, every_s: float) -> None:
            """Write ``data`` at once, or a byte every ``every_s`` seconds."""
            try:
                if not every_s:
                    self.wfile.write(data)
                    return
                for byte in data:
                    self.wfile.write(bytes((byte,)))
                    time.sleep(every_s)
            except OSError:
                pass  # the client hung up on an answer it would not read whole

        def _write_chunked(self, data: bytes) -> None:
            try:
                for start in range(0, len(data), 4096):
                    chunk = data[start : start + 4096]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass  # the client hung up on an answer it would not read whole

        def _answer_page(self, code: int, page: str) -> None:
            data = page.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in state.page_headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


@functools.cache
def _gzipped_spaces(size: int) -> bytes:
    return gzip.compress(b" " * size, compresslevel=9)


@contextmanager
def stub_api() -> Iterator[tuple[str, StubState]]:
    """Serve the stub on a free local port; yields (base url, state)."""
    state = StubState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
