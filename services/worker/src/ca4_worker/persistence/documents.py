"""Beanie documents: collection names, shapes and indexes of the worker's database.

Adapters write through the raw pymongo collections (bulk writes with a per-document guard are
not something an ODM models), but ``init_beanie`` owns the collections and their indexes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from beanie import Document
from pymongo import ASCENDING, IndexModel


class EventDocument(Document):
    """One stored event. ``_id`` is the event id, so the primary key is the unique index
    on ``event_id`` (one index per insert instead of two)."""

    id: str  # type: ignore[assignment]
    session_id: str
    topic: str
    partition: int
    offset: int
    received_at: datetime
    stored_at: datetime
    event: dict[str, Any]
    """The event as JSON (microsecond timestamps kept; BSON dates keep milliseconds)."""

    class Settings:
        name = "events"
        indexes: ClassVar[list[IndexModel]] = [
            IndexModel([("partition", ASCENDING), ("offset", ASCENDING)], name="position"),
            IndexModel([("session_id", ASCENDING)], name="session_id"),
        ]


class SessionDocument(Document):
    """The ``sessions`` projection; ``applied`` maps ``p<partition>`` to the last offset."""

    id: str  # type: ignore[assignment]
    tenant: str
    """The owner: the tenant of the session's first event (documents from before tenancy have
    none and read as the legacy tenant)."""
    applied: dict[str, int]
    first_seen: datetime
    last_seen: datetime
    sample_count: int
    gpu_models: list[str]
    gpu_models_dropped: int = 0
    peak_memory_used_mib: float | None = None
    utilization_sum_millipct: int
    utilization_samples: int
    labels: dict[str, str]
    runtime: str
    hostname: str

    class Settings:
        name = "sessions"
        indexes: ClassVar[list[IndexModel]] = [
            IndexModel([("last_seen", ASCENDING)], name="last_seen"),
            # A tenant's list filters on tenant and pages by _id.
            IndexModel([("tenant", ASCENDING), ("_id", ASCENDING)], name="tenant"),
        ]


class GpuDocument(Document):
    """The ``gpus`` projection: one document per tenant and GPU UUID with its latest sample;
    ``_id`` is ``<tenant>/<gpu uuid>`` (:func:`~ca4_worker.domain.projection.gpu_document_id`)."""

    id: str  # type: ignore[assignment]
    gpu_uuid: str
    tenant: str
    gpu_name: str
    session_id: str
    last_seen: datetime
    event_id: str
    partition: int
    offset: int
    sample: dict[str, Any]

    class Settings:
        name = "gpus"
        indexes: ClassVar[list[IndexModel]] = [
            IndexModel([("session_id", ASCENDING)], name="session_id"),
            IndexModel([("tenant", ASCENDING), ("_id", ASCENDING)], name="tenant"),
            # GET /v1/gpus/{uuid} with a read:all key looks across tenants.
            IndexModel([("gpu_uuid", ASCENDING)], name="gpu_uuid"),
        ]


DOCUMENT_MODELS: list[type[Document]] = [EventDocument, SessionDocument, GpuDocument]
