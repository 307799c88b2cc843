"""Helpers for the Reporter unit tests: a CPU-only collector, waiting, a fake ``atexit``, and an
edge that accepts connections and never answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ca4_sdk import Reporter
from ca4_sdk import reporter as reporter_module
from ca4_sdk.collectors.base import CollectorResult


class StaticCollector:
    """A CPU-only collector: the reporter logic doesn't depend on GPUs."""

    name = "none"

    def __init__(self) -> None:
        self.closed = False

    def collect(self) -> CollectorResult:
        return CollectorResult(collector="none")

    def close(self) -> None:
        self.closed = True


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def make_reporter(
    url: str, tmp_path: Path, session_id: str = "unit-session", **kwargs: Any
) -> Reporter:
    """A Reporter with a key, a fixed session id, a CPU collector and a spool under tmp_path."""
    options: dict[str, Any] = {
        "api_key": "k",
        "session_id": session_id,
        "collector": StaticCollector(),
        "spool_dir": tmp_path / "spool",
    }
    options.update(kwargs)
    return Reporter(url=url, **options)


class FakeAtexit:
    """Stands in for the ``atexit`` module the reporter uses: records what is registered, so a
    test can see it and nothing of the test runs when pytest itself exits."""

    def __init__(self) -> None:
        self.registered: list[Callable[[], None]] = []

    def register(self, function: Callable[[], None]) -> Callable[[], None]:
        self.registered.append(function)
        return function

    def unregister(self, function: Callable[[], None]) -> None:
        self.registered = [f for f in self.registered if f != function]

    def due(self) -> list[Reporter]:
        """The reporters the registered exit hook would flush (none when it is not)."""
        if self.registered != [reporter_module._flush_all_at_exit]:
            assert self.registered == [], self.registered
            return []
        return list(reporter_module._registry.exit_due)


class SilentEdge:
    """A TCP server on 127.0.0.1 that accepts connections and, while ``silent``, never answers
    (an edge whose app hangs); otherwise it closes each connection at once (fails fast)."""

    def __init__(self) -> None:
        self.silent = True
        self.accepted = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                if self.silent:
                    self._connections.append(connection)
                    continue
            connection.close()

    def close(self) -> None:
        """Stop accepting and close every held connection (a waiting client fails at once)."""
        self._closed.set()
        self._thread.join(5)
        self._listener.close()
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()


@contextmanager
def silent_edge() -> Iterator[SilentEdge]:
    """A :class:`SilentEdge` for the duration of the block."""
    edge = SilentEdge()
    try:
        yield edge
    finally:
        edge.close()
