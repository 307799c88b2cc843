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
from typing import Any

from ca4_schemas import LEGACY_TENANT
from ca4_schemas.constants import SESSION_OWNERS
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from ca4_worker.persistence.database import database_call, insert_ignoring_duplicates
from ca4_worker.persistence.documents import SESSIONS, Doc

MIGRATIONS = "migrations"
PRE_TENANCY_CLAIMS = "pre-tenancy-session-claims"
"""The migration's record, written when it is done."""
PRE_TENANCY_PROGRESS = "pre-tenancy-session-claims.progress"
"""Where the migration got to (the last session id of the last page claimed), while it runs."""
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


async def claim_pre_tenancy_sessions(
    database: AsyncDatabase[Doc],
    *,
    deadline_s: float | None = None,
    page_size: int = CLAIMS_PER_CALL,
) -> int | None:
    """Claim every session projected before tenancy (no tenant, or the legacy one), once per
    database; the number claimed, or ``None`` when an earlier start did it.

    A processor of the first tenancy release claimed such a session for whichever tenant
    reported it first, and the worker dead-lettered every report of it since: those claims
    are corrected to the legacy tenant here, the one time claims change (a processor forgets
    what it cached when it restarts).

    Sessions are read in pages of ``page_size`` in ``_id`` order (the primary key) and picked
    by tenant here: a filter on a missing field uses no index on DocumentDB, so one query for
    them read the whole collection in one call, past any timeout, and was sent again on every
    try. Each page is claimed under ``deadline_s``, and where it ended is recorded, so a try
    cut short (a timeout, an outage, a restart) goes on from the last page done."""
    migrations = database[MIGRATIONS]
    with database_call(deadline_s):
        if await migrations.find_one({"_id": PRE_TENANCY_CLAIMS}) is not None:
            return None
        progress = await migrations.find_one({"_id": PRE_TENANCY_PROGRESS}) or {}
    after: Any = progress.get("after")
    claimed = int(progress.get("sessions", 0))
    while True:
        with database_call(deadline_s):
            page = await _pre_tenancy_page(database, after, page_size)
            if not page:
                break
            session_ids = [
                doc["_id"] for doc in page if doc.get("tenant", LEGACY_TENANT) == LEGACY_TENANT
            ]
            await _claim_for_legacy(database, session_ids)
            after, claimed = page[-1]["_id"], claimed + len(session_ids)
            await migrations.update_one(
                {"_id": PRE_TENANCY_PROGRESS},
                {"$set": {"after": after, "sessions": claimed}},
                upsert=True,
            )
    with database_call(deadline_s):
        await insert_ignoring_duplicates(
            migrations, [{"_id": PRE_TENANCY_CLAIMS, "at": datetime.now(UTC), "sessions": claimed}]
        )
        # Gone once done: an operator who deletes the record to run it again starts afresh.
        await migrations.delete_one({"_id": PRE_TENANCY_PROGRESS})
    return claimed


async def _pre_tenancy_page(database: AsyncDatabase[Doc], after: Any, size: int) -> list[Doc]:
    """The tenants of up to ``size`` sessions past ``after`` in ``_id`` order (all from the
    first with ``after`` ``None``)."""
    conditions: Doc = {} if after is None else {"_id": {"$gt": after}}
    cursor = (
        database[SESSIONS]
        .find(conditions, {"tenant": 1})
        .sort("_id", ASCENDING)
        .limit(size)
        .batch_size(size)
    )
    return [doc async for doc in cursor]


async def _claim_for_legacy(database: AsyncDatabase[Doc], session_ids: list[str]) -> None:
    """Claim ``session_ids`` for the legacy tenant, correcting any other tenant's claim."""
    if not session_ids:
        return
    await claim_sessions(database, dict.fromkeys(session_ids, LEGACY_TENANT))
    await database[SESSION_OWNERS].update_many(
        {"_id": {"$in": session_ids}, "tenant": {"$ne": LEGACY_TENANT}},
        {"$set": {"tenant": LEGACY_TENANT, "corrected_at": datetime.now(UTC)}},
    )
