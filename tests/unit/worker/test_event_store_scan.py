"""``ca4 replay`` reads the store through ``MongoEventStore.scan``: its partitions come from
seeks on the ``position`` index, never ``distinct``, which DocumentDB answers by reading every
event (no index), past any deadline on a large store."""

from __future__ import annotations

from ca4_worker.persistence.database import init_database
from ca4_worker.persistence.documents import EVENTS
from ca4_worker.persistence.events import MongoEventStore

from tests.unit.worker.factories import positioned
from tests.unit.worker.fake_mongo import FakeDatabase


async def test_replays_scan_finds_partitions_by_index_seeks_never_distinct() -> None:
    fake = FakeDatabase()
    await init_database(fake.as_database(), build_deadline_s=60)
    store = MongoEventStore(fake.as_database(), topic="t", deadline_s=5)
    events = [positioned(partition, offset) for partition in (5, 0, 2) for offset in range(3)]
    await store.append(events)

    pages = [page async for page in store.scan(batch_size=2)]

    assert [item.position for page in pages for item in page] == sorted(
        item.position for item in events
    )
    assert fake[EVENTS].commands("distinct") == []
    # One seek per partition, each past the last partition found, and one that finds none.
    assert fake[EVENTS].commands("find_one") == [
        {},
        {"partition": {"$gt": 0}},
        {"partition": {"$gt": 2}},
        {"partition": {"$gt": 5}},
    ]


async def test_an_empty_store_scans_nothing_with_one_seek() -> None:
    fake = FakeDatabase()
    await init_database(fake.as_database(), build_deadline_s=60)
    store = MongoEventStore(fake.as_database(), topic="t", deadline_s=5)
    assert [page async for page in store.scan()] == []
    index_calls = {"listIndexes", "createIndexes"}
    assert [name for name, _ in fake[EVENTS].calls if name not in index_calls] == ["find_one"]
