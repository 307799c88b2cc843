"""The MongoDB adapters pass the shared contracts against the real FerretDB."""

from __future__ import annotations

import pytest
from ca4_worker.persistence.mongo import Doc, MongoEventStore, MongoProjections
from pymongo.asynchronous.database import AsyncDatabase

from tests.unit.worker.contracts import EventStoreContract, ProjectionsContract

pytestmark = pytest.mark.mongo


class TestMongoEventStore(EventStoreContract):
    @pytest.fixture
    def store(self, database: AsyncDatabase[Doc]) -> MongoEventStore:
        return MongoEventStore(database, topic="gpu-metadata")


class TestMongoProjections(ProjectionsContract):
    @pytest.fixture
    def projections(self, database: AsyncDatabase[Doc]) -> MongoProjections:
        return MongoProjections(database)


async def test_events_collection_has_its_indexes(database: AsyncDatabase[Doc]) -> None:
    names = {index["name"] async for index in await database["events"].list_indexes()}
    assert {"_id_", "position", "session_id"} <= names
