"""Helpers for worker tests against real services: produce, run a worker, wait, proxy."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from asgi_lifespan import LifespanManager
from ca4_worker.core.config import Settings
from ca4_worker.main import create_app

INDEX_BUILD_DEADLINE_S = 60.0
"""Deadline of the index builds tests start (on collections of a few documents)."""
OPERATOR_KEY = "tests-operator-key-5b1e"
"""A ``read:all`` key the worker tests read every tenant's data with."""
OPERATOR_KEY_HASHES = (
    f"tests-operator:{hashlib.sha256(OPERATOR_KEY.encode()).hexdigest()}:operators:read:all"
)


async def produce(
    bootstrap_servers: str,
    topic: str,
    messages: Sequence[dict[str, Any] | bytes],
    *,
    headers: Sequence[tuple[str, bytes]] = (),
) -> None:
    """Publish events (keyed by session id, as the processor does) and raw bytes."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        futures = []
        for message in messages:
            if isinstance(message, dict):
                # Non-ASCII written as it is, as the processor publishes it.
                value = json.dumps(message, ensure_ascii=False).encode()
                key = str(message.get("session_id", "none")).encode()
            else:
                value, key = message, b"poison"
            futures.append(await producer.send(topic, value=value, key=key, headers=list(headers)))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def wait_for(
    condition: Callable[[], Awaitable[bool]], *, timeout_s: float, what: str
) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A worker app with its consumers running, and an HTTP client for its API (sending
    :data:`OPERATOR_KEY`, which ``settings`` should accept)."""
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://worker",
            headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
        ) as client:
            yield client


class TcpProxy:
    """A TCP proxy a test can cut (connections dropped, new ones refused) and restore."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        """Listen (on a free port the first time, then on the same port again)."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._connections):
            writer.transport.abort()
        self._connections.clear()

    async def restore(self) -> None:
        """Listen again on the same port."""
        await self.start()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._connections.update({writer, upstream_writer})

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self._connections.discard(writer)
        self._connections.discard(upstream_writer)
