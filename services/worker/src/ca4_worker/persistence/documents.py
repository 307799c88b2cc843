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
            IndexModel([("last_seen", ASCENDING)], name="last_seen")
        ]


class GpuDocument(Document):
    """The ``gpus`` projection: one document per GPU UUID with its latest sample."""

    id: str  # type: ignore[assignment]
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
            IndexModel([("session_id", ASCENDING)], name="session_id")
        ]


DOCUMENT_MODELS: list[type[Document]] = [EventDocument, SessionDocument, GpuDocument]
