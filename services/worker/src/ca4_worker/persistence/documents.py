"""The stored shape of each read model and of events: one mapping per collection.

Each projection's document, the state read back from it and the update statement that merges a
delta into it are all built from the state type's fields and their :class:`Merge` kinds
(:mod:`ca4_worker.domain.projection`), so the in-memory fake, the database and the read API
cannot disagree about a field. The contract test compares whole documents from both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from ca4_schemas import LEGACY_TENANT, decode_event

from ca4_worker.domain.projection import (
    GpuLatest,
    Merge,
    SessionDelta,
    SessionState,
    applied_key,
    merge_kinds,
)
from ca4_worker.domain.records import Position, PositionedEvent

Doc = dict[str, Any]

EVENTS: Final = "events"
SESSIONS: Final = "sessions"
GPUS: Final = "gpus"


def event_document(positioned: PositionedEvent, *, topic: str, stored_at: datetime) -> Doc:
    """The stored form of an event: ``_id`` is the event id, so the primary key is the
    uniqueness check (one index per insert instead of two)."""
    return {
        "_id": positioned.event_id,
        "session_id": positioned.event.session_id,
        "topic": topic,
        "partition": positioned.position.partition,
        "offset": positioned.position.offset,
        "received_at": positioned.event.received_at,
        "stored_at": stored_at,
        # As JSON: microsecond timestamps kept (BSON dates keep milliseconds); without the
        # optional fields the report left out, which read back as absent (about half the bytes
        # of a sparse sample; tests/unit/schemas/test_roundtrip.py).
        "event": positioned.event.model_dump(mode="json", exclude_none=True),
    }


def positioned_from_document(doc: Doc) -> PositionedEvent:
    """The event (upcast to the latest version) and its position from a stored document."""
    return PositionedEvent(
        event=decode_event(doc["event"]),
        position=Position(doc["partition"], doc["offset"]),
    )


SESSION_FIELDS: Final = merge_kinds(SessionState)
SESSION_NOT_READ: Final = ("gpu_uuids",)
"""Session fields the read API leaves out of its reads: the GPUs kept under the cap (up to
64 UUIDs) are the projection's bookkeeping, and would only make pages hold fewer sessions."""
_OPERATORS: Final = {
    Merge.LATEST: "$set",
    Merge.MIN: "$min",
    Merge.MAX: "$max",
    Merge.SUM: "$inc",
    Merge.UNION: "$addToSet",
}


def session_document(session_id: str, applied: dict[str, int], state: SessionState) -> Doc:
    """A session document: its id, the last offset applied per partition (``p<partition>``),
    and the state's fields."""
    return {
        "_id": session_id,
        "applied": applied,
        **{name: getattr(state, name) for name in SESSION_FIELDS},
    }


def session_state(doc: Doc) -> SessionState:
    """The state a session document holds (a field it lacks reads as the field's default)."""
    return SessionState(**{name: doc[name] for name in SESSION_FIELDS if name in doc})


def new_session_document(delta: SessionDelta) -> Doc:
    """The document of a session first seen in ``delta``."""
    return session_document(
        delta.session_id,
        {applied_key(delta.partition): delta.last_offset},
        delta.state.capped_against(),
    )


def session_update(delta: SessionDelta, stored: Doc) -> Doc:
    """The update statement that merges ``delta`` into a stored session, of which ``stored``
    holds at least ``gpu_models`` and ``gpu_uuids`` (what :meth:`SessionState.apply` does, as
    ``$set/$min/$max/$inc/...``)."""
    capped = delta.state.capped_against(stored.get("gpu_models", ()), stored.get("gpu_uuids", ()))
    update: Doc = {"$set": {f"applied.{applied_key(delta.partition)}": delta.last_offset}}
    for name, how in SESSION_FIELDS.items():
        value = getattr(capped, name)
        if how is Merge.FIRST or (value is None and how in {Merge.MIN, Merge.MAX}):
            continue
        if how is Merge.UNION:
            if value:
                update.setdefault("$addToSet", {})[name] = {"$each": value}
            continue
        update.setdefault(_OPERATORS[how], {})[name] = value
    return update


def session_guard(session_id: str, partition: int, offset: int) -> Doc:
    """Matches the session only while ``offset`` is past its last applied one on
    ``partition``: a repeat matches nothing."""
    field = f"applied.{applied_key(partition)}"
    return {"_id": session_id, "$or": [{field: {"$lt": offset}}, {field: {"$exists": False}}]}


def gpu_document(state: GpuLatest) -> Doc:
    """A GPU document, by :func:`~ca4_worker.domain.projection.gpu_document_id`."""
    return {
        "_id": state.document_id,
        "gpu_uuid": state.gpu_uuid,
        "tenant": state.tenant,
        "gpu_name": state.gpu_name,
        "session_id": state.session_id,
        "last_seen": state.occurred_at,
        "event_id": state.event_id,
        "partition": state.partition,
        "offset": state.offset,
        "sample": state.sample,
    }


def gpu_state(doc: Doc) -> GpuLatest:
    """The state a GPU document holds (documents from before tenancy have the bare UUID as
    their id and no tenant)."""
    return GpuLatest(
        gpu_uuid=str(doc.get("gpu_uuid", doc["_id"])),
        tenant=doc.get("tenant", LEGACY_TENANT),
        gpu_name=doc["gpu_name"],
        session_id=doc["session_id"],
        occurred_at=doc["last_seen"],
        event_id=doc["event_id"],
        partition=doc.get("partition", -1),
        offset=doc.get("offset", -1),
        sample=doc["sample"],
    )


def gpu_update(state: GpuLatest) -> Doc:
    """The update statement that makes a GPU document hold ``state``."""
    document = gpu_document(state)
    del document["_id"]
    return {"$set": document}


def gpu_guard(state: GpuLatest) -> Doc:
    """Matches the GPU document only while its sample is older than ``state``'s."""
    return {
        "_id": state.document_id,
        "$or": [
            {"last_seen": {"$lt": state.occurred_at}},
            {"last_seen": state.occurred_at, "event_id": {"$lt": state.event_id}},
        ],
    }
