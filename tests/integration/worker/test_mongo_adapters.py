"""The MongoDB adapters pass the shared contracts against the real FerretDB."""

from __future__ import annotations

import pytest
from ca4_worker.application.bounded import WriteLimits
from ca4_worker.persistence.mongo import (
    Doc,
    MongoEventStore,
    MongoProjections,
    guards_belong_in_filters,
)
from pymongo.asynchronous.database import AsyncDatabase

from tests.unit.worker.contracts import EventStoreContract, ProjectionsContract

pytestmark = pytest.mark.mongo


class TestMongoEventStore(EventStoreContract):
    @pytest.fixture
    def store(self, database: AsyncDatabase[Doc]) -> MongoEventStore:
        return MongoEventStore(database, topic="gpu-metadata")


class TestMongoProjections(ProjectionsContract):
    """Both ways of guarding writes keep the contract, whichever database runs the tests."""

    @pytest.fixture(params=[True, False], ids=["guards-in-filters", "guards-read-first"])
    def projections(
        self, database: AsyncDatabase[Doc], request: pytest.FixtureRequest
    ) -> MongoProjections:
        # Small chunks, so every contract scenario also runs split over several calls.
        return MongoProjections(
            database,
            guards_in_filters=request.param,
            limits=WriteLimits(chunk=16, concurrency=2),
        )


async def test_ferretdb_is_detected_and_gets_id_only_filters(
    database: AsyncDatabase[Doc],
) -> None:
    info = await database.client.admin.command("buildInfo")
    assert await guards_belong_in_filters(database) is ("ferretdbVersion" not in info)


async def test_events_collection_has_its_indexes(database: AsyncDatabase[Doc]) -> None:
    names = {index["name"] async for index in await database["events"].list_indexes()}
    assert {"_id_", "position", "session_id"} <= names
