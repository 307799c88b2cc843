"""The database (FerretDB locally, MongoDB or DocumentDB in production): connecting, the
collections and their indexes, and what a driver error means.

Only features FerretDB and DocumentDB share are used: unordered ``insert_many``, unique
``_id``, unordered ``bulk_write`` of single-document updates with
``$set/$inc/$min/$max/$addToSet``, no transactions and no aggregation pipelines. A bulk upserts
only where its filter is ``{_id}`` alone and its counts are not read (the re-drive records of
:mod:`.redrives`): a guarded upsert whose guard misses is a duplicate-key error, not a no-op. The
adapters are split by job: :mod:`.events` (the store), :mod:`.projections` (writes) and
:mod:`.queries` (the read API's reads).

Driver errors are sorted by cause in one place (:func:`database_call`): an unreachable or slow
database, or one that refuses the worker itself (credentials, permissions), is an outage
(retried), a refusal of the data that would repeat on every try is poison
(:class:`~ca4_worker.application.ports.RejectedError`, dead-lettered by the caller).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Final

import bson
import pymongo
from bson.errors import InvalidDocument
from ca4_schemas.constants import PRIMARY_READS
from pymongo import ASCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)

from ca4_worker.application.ports import RejectedError, TimedOutError, UnavailableError
from ca4_worker.persistence.documents import EVENTS, GPUS, SESSIONS, Doc

DUPLICATE_KEY = 11000


INDEX_BUILD_IN_PROGRESS = frozenset({276, 40333})
"""Another index build on the collection is running: MongoDB's IndexBuildAlreadyInProgress
(276), and DocumentDB's 40333, which it answers to any second build on a collection (it builds
one index per collection at a time). Workers and readers start together and each ensures the
indexes, so one of them meets the others' build: it waits the build out as an outage."""
# Server error codes that mean "not now" rather than "never": shutdown, elections, network,
# time limits, lock and write conflicts, interruptions, another index build running. Every
# other server error about a write is taken as the data's fault (poison).
TRANSIENT_SERVER_CODES = (
    frozenset({6, 7, 24, 46, 50, 89, 91, 112, 189, 262, 9001, 10107, 13435, 13436})
    # Interrupted at shutdown, by an operator's killOp, by a stepdown: the call did not run
    # to its end, and the same call may succeed next time.
    | frozenset({11600, 11601, 11602})
    | frozenset({16500})  # Azure Cosmos DB's throttling (not DocumentDB's); harmless here
    | INDEX_BUILD_IN_PROGRESS
)
# Server error codes that say the deployment is wrong, not the data: authentication and
# permissions (a rotated password the pods have not picked up yet, a user without its role) and
# commands or features the server does not run (59 and 115, MongoDB's; 303, DocumentDB's
# "Feature not supported"). They repeat on every try, but for every event alike, so taking them
# as poison would dead-letter the whole stream; they are outages, retried until the deployment
# is fixed, and the store's lag alerts say so.
DEPLOYMENT_SERVER_CODES = frozenset({11, 13, 18, 31, 59, 115, 303, 8000})
DOCUMENT_TOO_LARGE_CODES = frozenset({10334, 17419, 17420})
PROJECTION_MAX_BYTES = 1024 * 1024
"""Size guard for one projection write: far below the 16 MiB document limit, far above what
the capped read models need (a session document is a few KiB, a GPU document one sample)."""


def _server_error_is_transient(code: int | None, labels: Iterable[str]) -> bool:
    return (
        code in TRANSIENT_SERVER_CODES
        or code in DEPLOYMENT_SERVER_CODES
        or bool({"RetryableWriteError", "TransientTransactionError"} & set(labels))
    )


def classify_driver_error(error: Exception) -> Exception:
    """The worker's view of a driver error: timeout, outage or poison (see module docstring)."""
    if isinstance(error, InvalidDocument | OverflowError):
        # Refused by the driver before sending (too large, or an int BSON cannot hold).
        too_large = "too large" in str(error).lower()
        return RejectedError("document_too_large" if too_large else "invalid_document", str(error))
    if not isinstance(error, PyMongoError):
        return error
    if error.timeout:
        return TimedOutError(f"database call timed out: {error}")
    return _server_rejection(error) or UnavailableError(f"database unavailable: {error}")


def _server_rejection(error: PyMongoError) -> RejectedError | None:
    """The refusal in ``error`` when the server refused the data itself; None for an outage."""
    labels: list[str] = []
    if isinstance(error, BulkWriteError):
        if error.details.get("writeConcernErrors"):
            return None
        failures = error.details.get("writeErrors", [])
        codes = {item.get("code") for item in failures}
        message = str(failures[0].get("errmsg", error)) if failures else str(error)
    elif isinstance(error, OperationFailure) and not isinstance(error, WriteConcernError):
        codes = {error.code}
        message = str(error)
        labels = list((error.details or {}).get("errorLabels", []))
    else:  # connection failures, write concern errors: the database, not the data
        return None
    if not codes or all(_server_error_is_transient(code, labels) for code in codes):
        return None
    if codes & DOCUMENT_TOO_LARGE_CODES:
        return RejectedError("document_too_large", message)
    return RejectedError("database_rejected", f"codes {sorted(map(str, codes))}: {message}")


@contextmanager
def database_call(deadline_s: float | None = None) -> Iterator[None]:
    """One call to the database: under ``deadline_s`` (client-side), errors sorted by cause.

    Callers retry :class:`UnavailableError` (an outage), split the work on
    :class:`TimedOutError` and dead-letter on :class:`RejectedError`.
    """
    try:
        if deadline_s is None:
            yield
        else:
            with pymongo.timeout(deadline_s):
                yield
    except (PyMongoError, InvalidDocument, OverflowError) as error:
        raise classify_driver_error(error) from error


def ensure_fits(document: Doc, *, what: str) -> Doc:
    """``document`` unchanged, or :class:`RejectedError` when it is past the size guard."""
    size = len(bson.encode(document))
    if size > PROJECTION_MAX_BYTES:
        raise RejectedError(
            "document_too_large",
            f"{what} would be {size} bytes, over the {PROJECTION_MAX_BYTES}-byte guard",
        )
    return document


def connect(url: str, *, timeout_ms: int = 5000) -> AsyncMongoClient[Doc]:
    """A client whose operations fail fast (then get retried) while the database is down.

    Reads go to the primary whatever ``url`` says: the worker reads back what it has just
    written (which positions an event was stored from, owners after a duplicate key), and a
    replica that has not caught up would make it skip events for good.
    """
    return AsyncMongoClient(
        url,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 6, 30_000),
        **PRIMARY_READS,
    )


COLLECTIONS: Final[dict[str, list[IndexModel]]] = {
    EVENTS: [
        IndexModel([("partition", ASCENDING), ("offset", ASCENDING)], name="position"),
        IndexModel([("session_id", ASCENDING)], name="session_id"),
    ],
    SESSIONS: [
        IndexModel([("last_seen", ASCENDING)], name="last_seen"),
        # A tenant's list filters on tenant and pages by _id.
        IndexModel([("tenant", ASCENDING), ("_id", ASCENDING)], name="tenant"),
    ],
    GPUS: [
        IndexModel([("session_id", ASCENDING)], name="session_id"),
        IndexModel([("tenant", ASCENDING), ("_id", ASCENDING)], name="tenant"),
        # GET /v1/gpus/{uuid} with a read:all key looks across tenants.
        IndexModel([("gpu_uuid", ASCENDING)], name="gpu_uuid"),
    ],
}
"""The worker's collections and their secondary indexes (every ``_id`` is the primary key).
Their shapes are in :mod:`ca4_worker.persistence.documents`."""


async def ensure_indexes(
    database: AsyncDatabase[Doc],
    collections: Mapping[str, Sequence[IndexModel]],
    *,
    build_deadline_s: float,
) -> dict[str, list[str]]:
    """Create the indexes of ``collections`` that are missing (by name); the names created,
    per collection.

    Each collection's indexes are listed first, and ``createIndexes`` is sent only for those
    missing, one index per call: a restart sends none, and DocumentDB, which builds one index
    per collection at a time, answers a second build with 40333 and documents no build of
    several in one call, gets one build at a time from each process (pods starting together
    meet each other's build and wait it out: :data:`INDEX_BUILD_IN_PROGRESS` is an outage).
    The build runs under ``build_deadline_s``, not the client's socket timeout, which a build
    on a large collection outlasts. An index whose name exists is kept as it is, whatever its keys.
    """
    created: dict[str, list[str]] = {}
    for name, indexes in collections.items():
        collection = database[name]
        with database_call():
            existing = {index["name"] async for index in await collection.list_indexes()}
        for index in indexes:
            if index.document["name"] in existing:
                continue
            with database_call(build_deadline_s):
                created.setdefault(name, []).extend(await collection.create_indexes([index]))
    return created


async def init_database(database: AsyncDatabase[Doc], *, build_deadline_s: float) -> None:
    """Create the missing indexes of each collection (see :func:`ensure_indexes`)."""
    await ensure_indexes(database, COLLECTIONS, build_deadline_s=build_deadline_s)


async def insert_ignoring_duplicates(
    collection: AsyncCollection[Doc], documents: list[Doc]
) -> set[int]:
    """Insert ``documents`` unordered; the indexes refused as duplicates (already stored).

    Any other refusal is raised (and classified by :func:`database_call`).
    """
    if not documents:
        return set()
    try:
        await collection.insert_many(documents, ordered=False)
    except BulkWriteError as error:
        write_errors = error.details.get("writeErrors", [])
        if error.details.get("writeConcernErrors") or any(
            item.get("code") != DUPLICATE_KEY for item in write_errors
        ):
            raise
        return {int(item["index"]) for item in write_errors}
    return set()
