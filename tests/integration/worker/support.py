"""Helpers for worker tests against real services: produce, run a worker, wait."""

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
