"""The worker app over given adapters (usually the in-memory fakes), read API only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from asgi_lifespan import LifespanManager
from ca4_worker.bootstrap import AdapterFactory, WorkerAdapters
from ca4_worker.core.config import Settings
from ca4_worker.main import create_app
from fastapi import FastAPI


def given(adapters: WorkerAdapters) -> AdapterFactory:
    """An adapter factory for ``create_app`` that hands out ``adapters`` as they are."""

    @asynccontextmanager
    async def factory(_: Settings) -> AsyncIterator[WorkerAdapters]:
        yield adapters

    return factory


@asynccontextmanager
async def read_api(
    settings: Settings,
    adapters: WorkerAdapters,
    configure: Callable[[FastAPI], None] | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the worker's read API, built by ``create_app`` with ``adapters`` in place
    of :func:`~ca4_worker.bootstrap.bootstrap` and no Kafka consumers; lifespan run.
    ``configure`` may change the app first (a test's clock, say)."""
    app = create_app(settings, adapters=given(adapters), kafka_consumers=False)
    if configure is not None:
        configure(app)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker") as client,
    ):
        yield client
