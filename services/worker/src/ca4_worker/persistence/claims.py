"""Sessions' owners in the processor's session claims (``session_owners``).

The processor lets the first tenant to report a session claim it there. The worker claims
every session it stores for the tenant that owns it, which is a no-op for sessions the processor
claimed already, and matters when the claims are missing: after the database was lost or
restored to an earlier time (the rewound workers and ``ca4 replay --store-events`` store the
events again, and would otherwise leave their sessions unclaimed for any tenant to claim at the
edge, locking the owner out), and for sessions that began before tenancy. Those have no claim,
but their stored events belong to the legacy tenant, so the worker would dead-letter every
later report of them as another tenant's, after the processor had answered ``202``. Claimed
for the legacy tenant, the processor refuses those reports at once (``403``,
``session_forbidden``): every session projected before tenancy, once per database, when the
worker starts, and each stored version-1 event's (published by a processor from before tenancy,
during an upgrade).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from ca4_schemas import LEGACY_TENANT
from ca4_schemas.constants import SESSION_OWNERS
from pymongo.asynchronous.database import AsyncDatabase

from ca4_worker.persistence.database import database_call, insert_ignoring_duplicates
from ca4_worker.persistence.documents import SESSIONS, Doc

MIGRATIONS = "migrations"
PRE_TENANCY_CLAIMS = "pre-tenancy-session-claims"
CLAIMS_PER_CALL = 1000


async def claim_sessions(
    database: AsyncDatabase[Doc], owners: Mapping[str, str], *, deadline_s: float | None = None
) -> None:
    """Claim each session of ``owners`` for its tenant; a session claimed before keeps its
    owner."""
    now = datetime.now(UTC)
    ordered = sorted(owners)
    with database_call(deadline_s):
        for start in range(0, len(ordered), CLAIMS_PER_CALL):
            await insert_ignoring_duplicates(
                database[SESSION_OWNERS],
                [
                    {"_id": session_id, "tenant": owners[session_id], "claimed_at": now}
                    for session_id in ordered[start : start + CLAIMS_PER_CALL]
                ],
            )


async def claim_pre_tenancy_sessions(database: AsyncDatabase[Doc]) -> int | None:
    """Claim every session projected before tenancy (no tenant, or the legacy one), once per
    database; the number claimed, or ``None`` when an earlier start did it.

    A processor of the first tenancy release claimed such a session for whichever tenant
    reported it first, and the worker dead-lettered every report of it since: those claims
    are corrected to the legacy tenant here, the one time claims change (a processor forgets
    what it cached when it restarts)."""
    with database_call():
        if await database[MIGRATIONS].find_one({"_id": PRE_TENANCY_CLAIMS}) is not None:
            return None
        cursor = database[SESSIONS].find(
            {"$or": [{"tenant": {"$exists": False}}, {"tenant": LEGACY_TENANT}]}, {"_id": 1}
        )
        session_ids = [doc["_id"] async for doc in cursor]
    await claim_sessions(database, dict.fromkeys(session_ids, LEGACY_TENANT))
    with database_call():
        for start in range(0, len(session_ids), CLAIMS_PER_CALL):
            await database[SESSION_OWNERS].update_many(
                {
                    "_id": {"$in": session_ids[start : start + CLAIMS_PER_CALL]},
                    "tenant": {"$ne": LEGACY_TENANT},
                },
                {"$set": {"tenant": LEGACY_TENANT, "corrected_at": datetime.now(UTC)}},
            )
        await insert_ignoring_duplicates(
            database[MIGRATIONS],
            [{"_id": PRE_TENANCY_CLAIMS, "at": datetime.now(UTC), "sessions": len(session_ids)}],
        )
    return len(session_ids)
