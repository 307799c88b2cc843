"""The pre-tenancy claim migration pages through ``sessions`` by ``_id``: DocumentDB uses no
index for ``$exists``, so the one query it sent read the whole collection in one call, past the
socket timeout, and was sent again on every try, so a large collection never finished."""

from __future__ import annotations

import pytest
from ca4_schemas.constants import SESSION_OWNERS
from ca4_worker.application.ports import TimedOutError
from ca4_worker.persistence.claims import MIGRATIONS, claim_pre_tenancy_sessions
from ca4_worker.persistence.documents import SESSIONS
from pymongo.errors import ExecutionTimeout

from tests.unit.worker.fake_mongo import FakeDatabase

TENANTS = [None, "legacy", "tenant-a"]
"""Session ``n``'s tenant is ``TENANTS[n % 3]`` (``None``: a document with no tenant)."""


def _sessions(count: int) -> FakeDatabase:
    fake = FakeDatabase()
    for number in range(count):
        tenant = TENANTS[number % 3]
        doc = {"_id": f"s{number:05d}", "applied": {}}
        fake[SESSIONS].docs[doc["_id"]] = doc if tenant is None else doc | {"tenant": tenant}
    # Claimed for a tenant by a processor of the first tenancy release: corrected.
    fake[SESSION_OWNERS].docs["s00000"] = {"_id": "s00000", "tenant": "tenant-b"}
    return fake


def _legacy_ids(count: int) -> set[str]:
    return {f"s{number:05d}" for number in range(count) if TENANTS[number % 3] != "tenant-a"}


async def test_sessions_are_read_in_bounded_pages_by_id_never_by_tenant() -> None:
    fake = _sessions(2500)
    claimed = await claim_pre_tenancy_sessions(fake.as_database(), deadline_s=5, page_size=1000)
    assert claimed == len(_legacy_ids(2500))
    assert fake[SESSIONS].commands("find") == [
        {},
        {"_id": {"$gt": "s00999"}},
        {"_id": {"$gt": "s01999"}},
        {"_id": {"$gt": "s02499"}},
    ]
    owners = {doc["_id"]: doc["tenant"] for doc in fake[SESSION_OWNERS].docs.values()}
    assert owners == dict.fromkeys(_legacy_ids(2500), "legacy")
    assert await claim_pre_tenancy_sessions(fake.as_database()) is None


async def test_a_migration_cut_short_goes_on_from_the_last_page_done() -> None:
    fake = _sessions(250)
    fake[SESSIONS].failures["find"] = [None, ExecutionTimeout("operation exceeded time limit")]
    with pytest.raises(TimedOutError):
        await claim_pre_tenancy_sessions(fake.as_database(), deadline_s=5, page_size=100)

    claimed = await claim_pre_tenancy_sessions(fake.as_database(), deadline_s=5, page_size=100)

    assert claimed == len(_legacy_ids(250))
    finds = fake[SESSIONS].commands("find")
    assert finds[2:] == [
        {"_id": {"$gt": "s00099"}},
        {"_id": {"$gt": "s00199"}},
        {"_id": {"$gt": "s00249"}},
    ]
    assert fake[MIGRATIONS].docs["pre-tenancy-session-claims"]["sessions"] == claimed
    # Done, the progress goes: a run an operator starts again by deleting the migration's
    # record reads every page, not only those past where this one ended.
    assert set(fake[MIGRATIONS].docs) == {"pre-tenancy-session-claims"}
