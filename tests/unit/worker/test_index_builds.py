"""Index creation at start-up (``ensure_indexes``): pods that start together, and restarts, on a
database that builds one index per collection at a time (DocumentDB answers a second build with
40333, MongoDB with 276)."""

from __future__ import annotations

import pytest
from ca4_worker.application.ports import UnavailableError
from ca4_worker.application.retry import until_available
from ca4_worker.persistence.database import COLLECTIONS, init_database
from ca4_worker.persistence.documents import EVENTS
from ca4_worker.persistence.usage_mongo import USAGE_INDEXES, MongoUsageRecords
from pymongo.errors import OperationFailure

from tests.unit.worker.fake_mongo import FakeDatabase

WANTED = {**COLLECTIONS, **USAGE_INDEXES}


def _with_every_index() -> FakeDatabase:
    fake = FakeDatabase()
    for name, indexes in WANTED.items():
        fake[name].index_names.update(index.document["name"] for index in indexes)
    return fake


async def test_a_restart_sends_no_create_indexes_when_every_index_exists() -> None:
    fake = _with_every_index()
    await init_database(fake.as_database(), build_deadline_s=60)
    await MongoUsageRecords(fake.as_database()).create_indexes(build_deadline_s=60)
    for name in WANTED:
        assert fake[name].commands("listIndexes") == [None]
        assert fake[name].commands("createIndexes") == []


async def test_only_the_missing_indexes_are_built_one_per_call() -> None:
    fake = _with_every_index()
    fake[EVENTS].index_names -= {"position", "session_id"}
    fake["usage_days"].index_names.discard("marks_of")
    await init_database(fake.as_database(), build_deadline_s=60)
    await MongoUsageRecords(fake.as_database()).create_indexes(build_deadline_s=60)
    assert fake[EVENTS].commands("createIndexes") == [["position"], ["session_id"]]
    assert fake["usage_days"].commands("createIndexes") == [["marks_of"]]
    for name in set(WANTED) - {EVENTS, "usage_days"}:
        assert fake[name].commands("createIndexes") == []


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (40333, "Existing index build in progress on the same collection"),  # DocumentDB
        (276, "Index build already in progress"),  # MongoDB's IndexBuildAlreadyInProgress
    ],
)
async def test_another_pods_build_in_progress_is_waited_out(code: int, message: str) -> None:
    fake = FakeDatabase()
    fake[EVENTS].failures["createIndexes"] = [OperationFailure(message, code=code)]
    with pytest.raises(UnavailableError):
        await init_database(fake.as_database(), build_deadline_s=60)

    await until_available(
        lambda: init_database(fake.as_database(), build_deadline_s=60),
        what="initialise database",
        max_backoff_s=0.01,
    )
    assert {"position", "session_id"} <= fake[EVENTS].index_names
    # The refused build, then the retry's: it listed the indexes again first.
    assert fake[EVENTS].commands("createIndexes") == [["position"], ["position"], ["session_id"]]
    assert len(fake[EVENTS].commands("listIndexes")) == 2


async def test_the_usage_indexes_wait_out_a_build_in_progress_too() -> None:
    fake = FakeDatabase()
    fake["usage_days"].failures["createIndexes"] = [
        OperationFailure("Existing index build in progress on the same collection", code=40333)
    ]
    records = MongoUsageRecords(fake.as_database())
    await until_available(
        lambda: records.create_indexes(build_deadline_s=60),
        what="create usage indexes",
        max_backoff_s=0.01,
    )
    assert {index.document["name"] for index in USAGE_INDEXES["usage_days"]} <= (
        fake["usage_days"].index_names
    )
