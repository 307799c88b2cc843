"""The pre-tenancy claim migration on FerretDB: 2,500 sessions in pages of 1,000 (by ``_id``,
the way it finishes on a DocumentDB collection of any size)."""

from __future__ import annotations

import pytest
from ca4_schemas.constants import SESSION_OWNERS
from ca4_worker.persistence.claims import claim_pre_tenancy_sessions
from ca4_worker.persistence.documents import SESSIONS, Doc
from pymongo.asynchronous.database import AsyncDatabase

pytestmark = pytest.mark.mongo


async def test_2500_sessions_are_claimed_in_pages_and_only_once(
    database: AsyncDatabase[Doc],
) -> None:
    tenants = [None, "legacy", "tenant-a"]
    sessions = [
        {"_id": f"s{number:05d}", "applied": {}}
        | ({} if tenants[number % 3] is None else {"tenant": tenants[number % 3]})
        for number in range(2500)
    ]
    await database[SESSIONS].insert_many(sessions)
    # Claimed by a processor of the first tenancy release for the tenant that reported first.
    await database[SESSION_OWNERS].insert_one({"_id": "s00001", "tenant": "tenant-b"})
    legacy = {doc["_id"] for doc in sessions if doc.get("tenant", "legacy") == "legacy"}

    claimed = await claim_pre_tenancy_sessions(database, deadline_s=10)

    assert claimed == len(legacy) == 1667
    owners = {doc["_id"]: doc["tenant"] async for doc in database[SESSION_OWNERS].find({})}
    assert owners == dict.fromkeys(legacy, "legacy")
    assert await claim_pre_tenancy_sessions(database, deadline_s=10) is None
