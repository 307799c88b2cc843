"""The dev stack's MongoDB-compatible database: unique indexes, and the bulk that wedged
FerretDB v1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import ASCENDING, AsyncMongoClient, IndexModel, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from tests.support.services import Endpoints

pytestmark = [pytest.mark.mongo]


Doc = dict[str, Any]


@pytest.fixture
async def probe_events(
    services: Endpoints, database_name: str
) -> AsyncIterator[AsyncCollection[Doc]]:
    """A stand-in for the stored events: unique on its event id, indexed by session."""
    client: AsyncMongoClient[Doc] = AsyncMongoClient(services.mongo_url)
    try:
        collection = client[database_name]["probe_events"]
        await collection.create_indexes(
            [
                IndexModel([("event_id", ASCENDING)], unique=True),
                IndexModel([("session_id", ASCENDING)]),
            ]
        )
        yield collection
    finally:
        await client.drop_database(database_name)
        await client.close()


async def test_insert_and_query(probe_events: AsyncCollection[Doc]) -> None:
    await probe_events.insert_many(
        [
            {"event_id": "e-1", "session_id": "s-1", "gpu_count": 1},
            {"event_id": "e-2", "session_id": "s-1", "gpu_count": 2},
            {"event_id": "e-3", "session_id": "s-2", "gpu_count": 0},
        ]
    )

    found = probe_events.find({"session_id": "s-1"}).sort("event_id", ASCENDING)

    assert [doc["event_id"] async for doc in found] == ["e-1", "e-2"]
    assert await probe_events.count_documents({"gpu_count": {"$gte": 1}}) == 2


async def test_unique_index_rejects_a_second_copy(probe_events: AsyncCollection[Doc]) -> None:
    await probe_events.insert_one({"event_id": "e-1", "session_id": "s-1", "gpu_count": 1})

    with pytest.raises(DuplicateKeyError):
        await probe_events.insert_one({"event_id": "e-1", "session_id": "s-1", "gpu_count": 1})
    assert await probe_events.count_documents({}) == 1


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
