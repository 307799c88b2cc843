"""One contract for the read models: every projection scenario leaves the same whole
documents in the real database as in the in-memory fake."""

from __future__ import annotations

from datetime import timedelta

import pytest
from ca4_worker.application.bounded import WriteLimits
from ca4_worker.persistence.documents import GPUS, SESSIONS, Doc
from ca4_worker.persistence.memory import InMemoryProjections
from ca4_worker.persistence.projections import MongoProjections
from pymongo.asynchronous.database import AsyncDatabase

from tests.unit.worker.contracts import projection_scenarios
from tests.unit.worker.factories import BASE_TIME, report_of_gpus

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


async def test_a_session_an_older_worker_wrote_keeps_the_gpus_of_its_next_reports(
    database: AsyncDatabase[Doc],
) -> None:
    """A document from before the GPU cap lists no ``gpu_uuids``: the first report after an
    upgrade, redelivered beside a new one, must not make the new one's GPUs look past the cap
    (they were stored as kept, with no GPU document and nothing counted)."""
    first = [f"GPU-U-{index:02d}" for index in range(64)]
    second = [f"GPU-V-{index:02d}" for index in range(64)]
    reports = [
        report_of_gpus(
            offset, uuids, session_id="upgraded", at=BASE_TIME + timedelta(seconds=offset)
        )
        for offset, uuids in enumerate([first, second])
    ]
    fake = InMemoryProjections()
    real = MongoProjections(database, limits=WriteLimits(chunk=16, concurrency=2))
    for projections in (fake, real):
        await projections.apply(reports[:1])
    older_worker = {"gpu_uuids": "", "gpus_dropped": ""}
    await database[SESSIONS].update_one({"_id": "upgraded"}, {"$unset": older_worker})
    for field in older_worker:
        del fake.session_docs["upgraded"][field]
    for projections in (fake, real):
        await projections.apply(reports)

    session = await database[SESSIONS].find_one({"_id": "upgraded"})
    assert session is not None
    assert (session["gpu_uuids"], session["gpus_dropped"]) == (second, 0)
    assert await database[GPUS].count_documents({"gpu_uuid": {"$in": second}}) == 64
    stored = {
        name: [doc async for doc in database[name].find().sort("_id", 1)]
        for name in (SESSIONS, GPUS)
    }
    assert stored == fake.documents()
