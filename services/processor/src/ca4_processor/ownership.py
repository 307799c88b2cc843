"""Which tenant owns each session: the first tenant to report it, for good.

The processor has no other state, so ownership is a claim in the MongoDB-compatible database the
worker uses: one document per session in ``session_owners``, ``_id`` = session id. A claim is an
``insert`` (atomic on the unique ``_id``, so two replicas racing for a new session agree on one
winner); a duplicate key means the session was claimed before, and one read says by whom.
Claims never change, so a bounded in-process cache (:class:`ca4_auth.SessionOwnerCache`, fair
between tenants) answers repeat sessions without a round trip.
Every database call has a deadline; when a claim cannot be checked the request gets ``503``
(nothing is published unchecked). Sessions from before tenancy are claimed for the legacy
tenant by the worker (``ca4_worker.persistence.claims``), so they are refused here too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from ca4_auth import SessionOwnerCache
from ca4_schemas.constants import PRIMARY_READS, SESSION_OWNERS
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, PyMongoError

DUPLICATE_KEY = 11000


class OwnershipUnavailableError(Exception):
    """The owners of some sessions could not be established in time: answer ``503``."""


class SessionClaims(Protocol):
    """Durable, first-writer-wins claims of session ids by tenants."""

    async def claim(self, claims: Mapping[str, str]) -> dict[str, str]:
        """Claim each ``{session_id: tenant}`` not claimed yet; the owner of every session."""
        ...

    async def owners_of(self, session_ids: Collection[str]) -> dict[str, str]:
        """The owners of those of ``session_ids`` claimed before (claims nothing)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class SessionOwners:
    """Claims with a deadline, behind a bounded cache of owners already confirmed."""

    def __init__(self, claims: SessionClaims, *, timeout_s: float, cache_size: int) -> None:
        self._claims = claims
        self._timeout_s = timeout_s
        self._cache = SessionOwnerCache(cache_size)

    async def owners(
        self, claims: Mapping[str, str], *, admit: Callable[[int], None] | None = None
    ) -> dict[str, str]:
        """The owner of each session in ``{session_id: claiming tenant}``, claiming new ones.

        With ``admit``, sessions the cache does not know are looked up first, and ``admit`` is
        called with how many were never claimed: it raises to refuse them, before any claim.
        """
        owners: dict[str, str] = {}
        missing: dict[str, str] = {}
        for session_id, tenant in claims.items():
            owner = self._cache.get(session_id)
            if owner is None:
                missing[session_id] = tenant
            else:
                owners[session_id] = owner
        if missing:
            try:
                async with asyncio.timeout(self._timeout_s):
                    if admit is not None:
                        known = await self._claims.owners_of(list(missing))
                        self._remember(known)
                        owners.update(known)
                        missing = {s: t for s, t in missing.items() if s not in known}
                        admit(len(missing))
                    confirmed = await self._claims.claim(missing) if missing else {}
            except (TimeoutError, PyMongoError) as error:
                raise OwnershipUnavailableError(
                    f"session owners not confirmed within {self._timeout_s:g}s "
                    f"({type(error).__name__})"
                ) from error
            self._remember(confirmed)
            owners.update(confirmed)
        return owners

    def _remember(self, owners: Mapping[str, str]) -> None:
        for session_id, owner in owners.items():
            self._cache.put(session_id, owner)

    async def close(self) -> None:
        """Release the claims store's connections."""
        await self._claims.close()


class MongoSessionClaims:
    """``session_owners`` in the MongoDB-compatible database (FerretDB, DocumentDB)."""

    def __init__(self, url: str, *, database: str, timeout_s: float) -> None:
        timeout_ms = max(1, int(timeout_s * 1000))
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url,
            tz_aware=True,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            timeoutMS=timeout_ms,
            # DocumentDB refuses retryable writes; a claim needs none (a repeated insert is a
            # duplicate key, answered by reading the owner).
            retryWrites=False,
            # A claim refused as a duplicate reads the owner just written: on the primary.
            **PRIMARY_READS,
        )
        self._owners: AsyncCollection[dict[str, Any]] = self._client[database][SESSION_OWNERS]

    async def claim(self, claims: Mapping[str, str]) -> dict[str, str]:
        """One unordered insert; for sessions claimed before, one read of their owners."""
        now = datetime.now(UTC)
        documents = [
            {"_id": session_id, "tenant": tenant, "claimed_at": now}
            for session_id, tenant in claims.items()
        ]
        taken: list[str] = []
        try:
            await self._owners.insert_many(documents, ordered=False)
        except BulkWriteError as error:
            write_errors = error.details.get("writeErrors", [])
            if error.details.get("writeConcernErrors") or any(
                item.get("code") != DUPLICATE_KEY for item in write_errors
            ):
                raise
            taken = [str(documents[int(item["index"])]["_id"]) for item in write_errors]
        owners = {
            session_id: tenant for session_id, tenant in claims.items() if session_id not in taken
        }
        if taken:
            cursor = self._owners.find({"_id": {"$in": taken}}, {"tenant": 1})
            owners.update({doc["_id"]: doc["tenant"] async for doc in cursor})
        missing = set(taken) - owners.keys()
        if missing:
            # A duplicate key whose document then cannot be read: never guess an owner.
            raise OwnershipUnavailableError(f"{len(missing)} claimed sessions could not be read")
        return owners

    async def owners_of(self, session_ids: Collection[str]) -> dict[str, str]:
        """One read of the claims among ``session_ids``."""
        cursor = self._owners.find({"_id": {"$in": list(session_ids)}}, {"tenant": 1})
        return {doc["_id"]: doc["tenant"] async for doc in cursor}

    async def close(self) -> None:
        """Close the client."""
        await self._client.close()
