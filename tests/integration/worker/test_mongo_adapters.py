"""The MongoDB adapters pass the shared contracts against the real FerretDB."""

from __future__ import annotations

from datetime import timedelta

import pytest
from ca4_worker.application.bounded import WriteLimits
from ca4_worker.application.ports import TimedOutError
from ca4_worker.application.views import GpuQuery
from ca4_worker.persistence.database import COLLECTIONS, ensure_indexes
from ca4_worker.persistence.documents import Doc
from ca4_worker.persistence.events import MongoEventStore
from ca4_worker.persistence.projections import MongoProjections
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from tests.unit.worker.contracts import EventStoreContract, ProjectionsContract
from tests.unit.worker.factories import TENANT_A, gpu_sample, positioned

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


async def test_session_owners_come_from_stored_events_old_and_many(
    database: AsyncDatabase[Doc],
) -> None:
    """Owners for the tenancy guard, read from the event store: a version-1 document (no
    ``event.tenant``) is the legacy tenant's, and a session with many stored events does not
    crowd another out of the bounded read."""
    busy = [
        {"_id": f"busy-{n}", "session_id": "busy", "partition": 0, "offset": n,
         "event": {"tenant": "tenant-a"}}
        for n in range(40)
    ]  # fmt: skip
    quiet = {"_id": "quiet-0", "session_id": "quiet", "partition": 1, "offset": 0,
             "event": {"tenant": "tenant-b"}}  # fmt: skip
    old = {"_id": "old-0", "session_id": "old", "partition": 2, "offset": 0, "event": {}}
    await database["events"].insert_many([*busy, quiet, old])
    store = MongoEventStore(database, topic="t")
    owners = await store.session_owners(["busy", "quiet", "old", "new"])
    assert owners == {"busy": "tenant-a", "quiet": "tenant-b", "old": "legacy"}


async def test_a_read_all_bare_cursor_pages_on_after_a_pre_tenancy_gpu(
    database: AsyncDatabase[Doc],
) -> None:
    """GPU documents from before tenancy keep their bare UUID as id until the rebuild, so a
    ``read:all`` page that ends on one hands out a bare cursor, which must page on."""
    projections = MongoProjections(database)
    await projections.apply([positioned(0, 0, gpus=[gpu_sample(0, uuid_="GPU-new")])])
    (stored,) = await database["gpus"].find().to_list()
    legacy = {**stored, "_id": "GPU-old", "gpu_uuid": "GPU-old"}
    del legacy["tenant"]
    await database["gpus"].insert_one(legacy)

    first = await projections.gpus(GpuQuery(tenant=None, limit=1))
    rest = await projections.gpus(GpuQuery(tenant=None, after=first.next_cursor))

    assert ([view.gpu_uuid for view in first.items], first.next_cursor) == (["GPU-old"], "GPU-old")
    assert [(view.tenant, view.gpu_uuid) for view in rest.items] == [(TENANT_A, "GPU-new")]


async def test_a_read_all_lookup_prefers_a_tenants_newer_gpu_to_a_pre_tenancy_document(
    database: AsyncDatabase[Doc],
) -> None:
    """A pre-tenancy GPU document's id is its bare UUID: asked for that UUID, a ``read:all``
    key gets the newest of it and the tenants' GPUs of that UUID, as before an exact document
    id won over a UUID spelling it (which only a tenancy document's id does)."""
    projections = MongoProjections(database)
    await projections.apply([positioned(0, 0, gpus=[gpu_sample(0, uuid_="GPU-x")])])
    (stored,) = await database["gpus"].find().to_list()
    older = stored["last_seen"] - timedelta(days=1)
    legacy = {**stored, "_id": "GPU-x", "last_seen": older, "session_id": "before-tenancy"}
    del legacy["tenant"]
    await database["gpus"].insert_one(legacy)

    found = await projections.gpu("GPU-x", tenant=None)

    assert found is not None
    assert (found.tenant, found.session_id) == (TENANT_A, stored["session_id"])


async def test_indexes_are_built_once_and_under_their_own_deadline(
    database: AsyncDatabase[Doc],
) -> None:
    """A restart builds nothing (every index is listed first), and a missing index's build runs
    under the build deadline, not the client's socket timeout."""
    assert await ensure_indexes(database, COLLECTIONS, build_deadline_s=60) == {}
    wanted = {"later": [IndexModel([("at", ASCENDING)], name="at")]}
    with pytest.raises(TimedOutError):
        await ensure_indexes(database, wanted, build_deadline_s=1e-9)
    assert await ensure_indexes(database, wanted, build_deadline_s=60) == {"later": ["at"]}
    assert await ensure_indexes(database, wanted, build_deadline_s=1e-9) == {}


async def test_the_partitions_seek_finds_what_distinct_finds(
    database: AsyncDatabase[Doc],
) -> None:
    """``ca4 replay``'s partitions come from index seeks (DocumentDB answers ``distinct``
    without an index): the same partitions, on a store whose partitions are far apart and
    uneven."""
    store = MongoEventStore(database, topic="t", deadline_s=10)
    assert [partition async for partition in store.partitions()] == []
    sizes = {0: 1, 1: 300, 4: 2, 11: 50}
    await store.append(
        [positioned(p, offset) for p, size in sizes.items() for offset in range(size)]
    )
    found = [partition async for partition in store.partitions()]
    assert found == sorted(await database["events"].distinct("partition")) == sorted(sizes)
