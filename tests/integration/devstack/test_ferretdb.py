"""The dev stack's MongoDB-compatible database: Beanie 2, and the bulk that wedged FerretDB v1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import pytest
from beanie import Document, Indexed, init_beanie
from pymongo import AsyncMongoClient, UpdateOne
from pymongo.errors import DuplicateKeyError

from tests.support.services import Endpoints

pytestmark = [pytest.mark.mongo]


class ProbeEvent(Document):
    """A stand-in for a stored event: unique on its id, queried by session."""

    event_id: Annotated[str, Indexed(unique=True)]
    session_id: str
    gpu_count: int

    class Settings:
        name = "probe_events"


@pytest.fixture
async def beanie_db(services: Endpoints, database_name: str) -> AsyncIterator[None]:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(services.mongo_url)
    try:
        await init_beanie(database=client[database_name], document_models=[ProbeEvent])
        yield
    finally:
        await client.drop_database(database_name)
        await client.close()


@pytest.mark.usefixtures("beanie_db")
async def test_insert_and_query() -> None:
    await ProbeEvent(event_id="e-1", session_id="s-1", gpu_count=1).insert()
    await ProbeEvent(event_id="e-2", session_id="s-1", gpu_count=2).insert()
    await ProbeEvent(event_id="e-3", session_id="s-2", gpu_count=0).insert()

    found = await ProbeEvent.find(ProbeEvent.session_id == "s-1").sort("+event_id").to_list()

    assert [e.event_id for e in found] == ["e-1", "e-2"]
    assert await ProbeEvent.find(ProbeEvent.gpu_count >= 1).count() == 2


@pytest.mark.usefixtures("beanie_db")
async def test_unique_index_rejects_a_second_copy() -> None:
    await ProbeEvent(event_id="e-1", session_id="s-1", gpu_count=1).insert()

    with pytest.raises(DuplicateKeyError):
        await ProbeEvent(event_id="e-1", session_id="s-1", gpu_count=1).insert()

    assert await ProbeEvent.count() == 1


async def test_one_unordered_bulk_of_300_updates_completes_in_seconds(
    services: Endpoints, database_name: str
) -> None:
    """FerretDB v1 on SQLite hung on this until killed (the pool deadlock of the store wedge)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(services.mongo_url)
    sessions = client[database_name]["sessions"]
    try:
        await sessions.insert_many([{"_id": f"s-{i}", "n": 0, "seen": 0} for i in range(300)])
        updates = [
            UpdateOne(
                {"_id": f"s-{i}"},
                {"$set": {"gpu_model": "H200"}, "$inc": {"n": 1}, "$max": {"seen": i}},
            )
            for i in range(300)
        ]

        began = time.monotonic()
        result = await asyncio.wait_for(sessions.bulk_write(updates, ordered=False), 60)
        elapsed = time.monotonic() - began

        assert result.matched_count == 300
        assert result.modified_count == 300
        assert elapsed < 10, f"300 updates took {elapsed:.1f}s"
        assert await sessions.count_documents({"n": 1, "gpu_model": "H200"}) == 300
        assert (await sessions.find_one({"_id": "s-299"}) or {})["seen"] == 299
    finally:
        await client.drop_database(database_name)
        await client.close()
