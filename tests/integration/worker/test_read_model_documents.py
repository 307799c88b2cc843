"""One contract for the read models: every projection scenario leaves the same whole
documents in the real database as in the in-memory fake."""

from __future__ import annotations

import pytest
from ca4_worker.application.bounded import WriteLimits
from ca4_worker.persistence.documents import GPUS, SESSIONS, Doc
from ca4_worker.persistence.memory import InMemoryProjections
from ca4_worker.persistence.projections import MongoProjections
from pymongo.asynchronous.database import AsyncDatabase

from tests.unit.worker.contracts import projection_scenarios

pytestmark = pytest.mark.mongo


@pytest.mark.parametrize("scenario", sorted(projection_scenarios()))
async def test_the_database_holds_the_fakes_documents(
    database: AsyncDatabase[Doc], scenario: str
) -> None:
    batches = projection_scenarios()[scenario]
    fake = InMemoryProjections()
    real = MongoProjections(database, limits=WriteLimits(chunk=16, concurrency=2))
    for batch in batches:
        await fake.apply(batch)
        await real.apply(batch)

    stored = {
        name: [doc async for doc in database[name].find().sort("_id", 1)]
        for name in (SESSIONS, GPUS)
    }
    assert stored == fake.documents()
    assert stored[SESSIONS]
