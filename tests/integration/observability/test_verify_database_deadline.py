"""``ca4 verify``'s database step against a database that stops answering mid-call (a proxy in
front of the dev stack's that freezes once the step's first ``find`` is answered)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from functools import partial

import httpx
import pytest
from ca4_provision.verify import checks, runner
from ca4_provision.verify.results import StepStatus
from ca4_provision.verify.settings import VerifySettings
from ca4_schemas.api import Receipt
from pymongo import AsyncMongoClient, monitoring

from tests.support.proxy import TcpProxy, proxy_to
from tests.support.services import Endpoints

pytestmark = [pytest.mark.mongo]

LIMIT_S = 3.0


class _FreezeAfterFind(monitoring.CommandListener):
    """Freezes the proxy once a ``find`` was answered: the connection is open and handshaken,
    and the step's next ``find`` is sent into a connection that never answers."""

    def __init__(self, proxy: TcpProxy) -> None:
        self._proxy = proxy

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name == "find":
            self._proxy.freeze()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
async def db_proxy(services: Endpoints) -> AsyncIterator[TcpProxy]:
    async with proxy_to(services.mongo_url) as proxy:
        yield proxy


async def test_the_database_step_fails_within_its_limit_when_the_database_stops_answering(
    db_proxy: TcpProxy, database_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client had a server selection timeout only: a ``find_one`` sent into a connection
    that stopped answering waited without end, and the step's limit, checked between polls,
    never came."""
    listening = partial(AsyncMongoClient, event_listeners=[_FreezeAfterFind(db_proxy)])
    monkeypatch.setattr(checks, "AsyncMongoClient", listening)
    settings = VerifySettings(
        MONGO_URL=f"mongodb://127.0.0.1:{db_proxy.port}/?directConnection=true",
        MONGO_DB=database_name,
        VERIFY_TIMEOUT_S=LIMIT_S,
        VERIFY_POLL_S=0.1,
    )
    database_step = next(step for step in runner.STEPS if step.component == "database")
    async with httpx.AsyncClient() as http:
        ctx = checks.VerifyContext(settings=settings, http=http)
        event_id = uuid.uuid4()  # in no events collection: the step polls
        ctx.report = {"event_id": str(event_id)}
        ctx.receipt = Receipt(event_id=event_id, topic="gpu-metadata", partition=0, offset=0)
        started = time.monotonic()
        result = await runner.run_step(5, database_step, ctx, "local")
        took = time.monotonic() - started

    assert result.status is StepStatus.FAIL
    assert "did not answer" in result.detail, result.detail
    assert took < LIMIT_S + 2, f"failed after {took:.1f}s, past its {LIMIT_S:.0f}s limit"


async def test_an_event_never_stored_is_reported_as_missing_not_as_a_silent_database(
    services: Endpoints, database_name: str
) -> None:
    """The poll's last try may start past the step's limit: the deadline is each call's, so
    that try still gets an answer and the step says the event is missing."""
    settings = VerifySettings(
        MONGO_URL=services.mongo_url,
        MONGO_DB=database_name,
        VERIFY_TIMEOUT_S=1.0,
        VERIFY_POLL_S=0.3,
    )
    database_step = next(step for step in runner.STEPS if step.component == "database")
    async with httpx.AsyncClient() as http:
        ctx = checks.VerifyContext(settings=settings, http=http)
        event_id = uuid.uuid4()
        ctx.report = {"event_id": str(event_id)}
        ctx.receipt = Receipt(event_id=event_id, topic="gpu-metadata", partition=0, offset=0)
        result = await runner.run_step(5, database_step, ctx, "local")

    assert result.status is StepStatus.FAIL
    assert f"no events document with _id {event_id}" in result.detail, result.detail
