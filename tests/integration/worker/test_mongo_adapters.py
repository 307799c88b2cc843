"""The MongoDB adapters pass the shared contracts against the real FerretDB."""

from __future__ import annotations

import pytest
from ca4_worker.application.bounded import WriteLimits
from ca4_worker.persistence.documents import Doc
from ca4_worker.persistence.events import MongoEventStore
from ca4_worker.persistence.projections import MongoProjections
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
        # Small chunks, so every contract scenario also runs split over several calls.
        return MongoProjections(database, limits=WriteLimits(chunk=16, concurrency=2))


async def test_events_collection_has_its_indexes(database: AsyncDatabase[Doc]) -> None:
    names = {index["name"] async for index in await database["events"].list_indexes()}
    assert {"_id_", "position", "session_id"} <= names
