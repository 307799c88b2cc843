"""The dev stack's MongoDB-compatible database: insert and query through Beanie 2."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import pytest
from beanie import Document, Indexed, init_beanie
from pymongo import AsyncMongoClient
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
