"""The tenancy guard's owner lookup against the real FerretDB: a session with thousands of
stored events among hundreds of others costs a few round trips, not one per session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from ca4_schemas import LEGACY_TENANT
from ca4_worker.application.tenancy import TenantGuard
from ca4_worker.persistence.documents import Doc
from ca4_worker.persistence.events import MongoEventStore
from ca4_worker.persistence.projections import MongoProjections
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from tests.support.services import Endpoints
from tests.unit.worker.factories import TENANT_A, TENANT_B, positioned

pytestmark = pytest.mark.mongo

SESSIONS = [f"s-{n:04d}" for n in range(600)]
BIG = "s-0100"
BIG_EVENTS = 3000
"""More than the first read's limit (4 documents for each of the 600 sessions): it crowds out
the sessions after it in the index."""
SMALL = SESSIONS[25::50]
LEGACY = "s-0480"


class Reads(monitoring.CommandListener):
    """Counts the reads (``find`` and ``getMore``) sent to the server."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in {"find", "getMore"}:
            self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _stored(session_id: str, count: int, tenant: str | None) -> list[Doc]:
    return [
        {"_id": f"{session_id}-{n}", "session_id": session_id, "partition": 0, "offset": n,
         "event": {} if tenant is None else {"tenant": tenant}}
        for n in range(count)
    ]  # fmt: skip


@pytest.fixture
async def counted(
    services: Endpoints, database: AsyncDatabase[Doc]
) -> AsyncIterator[tuple[AsyncDatabase[Doc], Reads]]:
    """The test's database, filled, through a client that counts its reads."""
    await database["events"].insert_many(
        [
            *_stored(BIG, BIG_EVENTS, TENANT_A),
            *(doc for session_id in SMALL for doc in _stored(session_id, 3, TENANT_B)),
            *_stored(LEGACY, 2, None),  # version 1: no event.tenant
        ]
    )
    reads = Reads()
    client: AsyncMongoClient[Doc] = AsyncMongoClient(
        services.mongo_url, tz_aware=True, event_listeners=[reads]
    )
    yield client[database.name], reads
    await client.close()


async def test_a_big_session_among_many_costs_a_few_reads(
    counted: tuple[AsyncDatabase[Doc], Reads],
) -> None:
    database, reads = counted
    store = MongoEventStore(database, topic="t", deadline_s=10.0)

    owners = await store.session_owners([*SESSIONS, "never-seen"])

    assert owners == {BIG: TENANT_A, LEGACY: LEGACY_TENANT} | dict.fromkeys(SMALL, TENANT_B)
    # The first read, cut short by the big session, then the rest in 8 pieces; the code
    # before read the sessions it had not found one by one: 601 reads here.
    assert reads.count <= 9


async def test_the_guard_splits_a_batch_over_a_big_unprojected_session_in_a_few_reads(
    counted: tuple[AsyncDatabase[Doc], Reads],
) -> None:
    database, reads = counted
    guard = TenantGuard(
        MongoProjections(database), MongoEventStore(database, topic="t"), max_backoff_s=0.1
    )
    batch = [
        positioned(1, n, session_id=session_id, tenant=TENANT_A)
        for n, session_id in enumerate(SESSIONS)
    ]

    own, foreign = await guard.split(batch, {})

    assert {item.event.session_id for item in foreign} == {*SMALL, LEGACY}
    assert BIG in {item.event.session_id for item in own}
    assert len(own) + len(foreign) == len(SESSIONS)
    # One read of the projection, then the store in calls of 500 and 100 sessions.
    assert reads.count <= 1 + 9 + 1
