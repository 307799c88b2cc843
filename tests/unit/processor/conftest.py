"""Processor unit-test fixtures: the real app with a fake publisher, driven in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from itertools import count
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from ca4_processor.core.config import Settings
from ca4_processor.main import create_api
from ca4_processor.ownership import OwnershipUnavailableError, SessionOwners
from ca4_processor.publishing import MessageTooLargeError, PublishUnavailableError
from ca4_schemas import GpuMetadataReported, encode_event
from ca4_schemas.api import Receipt
from fastapi import FastAPI

DEV_HEADERS = {"Authorization": "Bearer ca4-dev-key"}


class FakePublisher:
    """Records what would go to Kafka; can act like a broker that is down or has a size limit."""

    def __init__(self) -> None:
        self.published: list[GpuMetadataReported] = []
        self.available = True
        self.max_message_bytes: int | None = None
        """Refuse events whose JSON is longer, like a topic's ``max.message.bytes``."""
        self.delay_s = 0.0
        """How long the broker takes to acknowledge."""
        self.acknowledging = asyncio.Event()
        """Cleared, the broker acknowledges nothing until it is set again."""
        self.acknowledging.set()
        self.unacknowledged = 0
        """Publishes waiting for ``acknowledging`` now."""
        self._one_more = asyncio.Event()
        self._offsets = count()

    async def holding(self, count: int, timeout_s: float = 5.0) -> None:
        """Return once ``count`` publishes wait for ``acknowledging``."""
        while self.unacknowledged < count:
            self._one_more.clear()
            await asyncio.wait_for(self._one_more.wait(), timeout_s)

    async def publish(self, events: Sequence[GpuMetadataReported]) -> list[Receipt]:
        await asyncio.sleep(self.delay_s)
        self.unacknowledged += 1
        self._one_more.set()
        try:
            await self.acknowledging.wait()
        finally:
            self.unacknowledged -= 1
        if self.max_message_bytes is not None:
            sizes = {i: len(encode_event(e)) for i, e in enumerate(events)}
            oversized = {i: size for i, size in sizes.items() if size > self.max_message_bytes}
            if oversized:
                raise MessageTooLargeError(oversized, self.max_message_bytes)
        if not self.available:
            raise PublishUnavailableError("Kafka did not acknowledge within 0.1s (fake)")
        self.published.extend(events)
        return [
            Receipt(
                event_id=e.event_id, topic="gpu-metadata", partition=0, offset=next(self._offsets)
            )
            for e in events
        ]

    async def is_ready(self) -> bool:
        return self.available


class FakeSessionClaims:
    """First-writer-wins claims in a dict; can act like a database that is down or slow."""

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}
        self.calls = 0
        self.available = True
        self.delay_s = 0.0

    async def claim(self, claims: Mapping[str, str]) -> dict[str, str]:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        if not self.available:
            raise OwnershipUnavailableError("database down (fake)")
        return {
            session_id: self.owners.setdefault(session_id, tenant)
            for session_id, tenant in claims.items()
        }

    async def owners_of(self, session_ids: Collection[str]) -> dict[str, str]:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        if not self.available:
            raise OwnershipUnavailableError("database down (fake)")
        return {s: self.owners[s] for s in session_ids if s in self.owners}

    async def close(self) -> None:
        return None


@pytest.fixture
def fake_claims() -> FakeSessionClaims:
    """Fresh in-memory session claims per test."""
    return FakeSessionClaims()


@pytest.fixture
def fake_publisher() -> FakePublisher:
    """A fresh fake publisher per test."""
    return FakePublisher()


@pytest.fixture
def make_client(
    fake_publisher: FakePublisher, fake_claims: FakeSessionClaims
) -> Callable[..., Any]:
    """Build ``async with make_client(**settings) as (client, app)``."""

    def build(**settings: Any) -> _AppClient:
        config = Settings(**settings)
        owners = SessionOwners(
            fake_claims,
            timeout_s=config.SESSION_OWNER_TIMEOUT_S,
            cache_size=config.SESSION_OWNER_CACHE_SIZE,
        )
        return _AppClient(create_api(config, publisher=fake_publisher, session_owners=owners))

    return build


class _AppClient:
    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._lifespan = LifespanManager(app)

    async def __aenter__(self) -> tuple[httpx.AsyncClient, FastAPI]:
        await self._lifespan.__aenter__()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(self._lifespan.app), base_url="http://processor"
        )
        return self._client, self.app

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()
        await self._lifespan.__aexit__(*exc)


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app in dev mode (dev key accepted), rate limiting off."""
    async with make_client(RATE_LIMIT_PER_SECOND=0) as (http, _app):
        yield http
