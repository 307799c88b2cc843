"""A tiny in-process HTTP server that speaks the processor's batch API, for SDK unit tests.

Per-report answers have the processor's shapes: ``207`` when some reports are rejected, ``422``
with the same body when none is accepted, and the processor's own error item for a report of
another tenant's session (``ca4_processor.api.tenancy.session_forbidden_item``).
"""

from __future__ import annotations

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
    foreign_sessions: set[str] = field(default_factory=set)
    """Sessions owned by another tenant: their reports are rejected as ``session_forbidden``."""
    page: str | None = None
    """Answer ``status`` with this HTML page instead (a tunnel or portal, not the API)."""
    raw_answer: bytes | None = None
    """Answer ``status`` with these bytes as JSON instead (what a hostile edge could send)."""
    requests: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted_ids(self) -> list[str]:
        with self.lock:
            return list(self.accepted)


def _handler(state: StubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            body = json.loads(raw)
            with state.lock:
                state.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
            if state.delay_s:
                time.sleep(state.delay_s)
            with state.lock:
                status = state.first_statuses.pop(0) if state.first_statuses else state.status
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
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if state.retry_after and code >= 400:
                self.send_header("Retry-After", state.retry_after)
            self.end_headers()
            self.wfile.write(data)

        def _answer_page(self, code: int, page: str) -> None:
            data = page.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


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
