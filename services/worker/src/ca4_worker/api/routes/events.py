"""Events: whether one is stored and projected yet (read-your-writes for clients)."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter

from ca4_worker.api.deps import ProjectionsDep, ReadTenantDep, StoreDep
from ca4_worker.api.routes import READ_ERRORS
from ca4_worker.application.views import EventStatus

router = APIRouter(prefix="/v1/events", tags=["events"], responses=READ_ERRORS)


@router.get("/{event_id}", response_model=EventStatus)
async def read_event(
    event_id: UUID, store: StoreDep, projections: ProjectionsDep, tenant: ReadTenantDep
) -> EventStatus:
    """The event and its status: ``stored`` once the event store has it, ``projected`` once
    ``/v1/sessions`` and ``/v1/gpus`` show it (poll ``projected`` before reading those back).

    Another tenant's event answers ``stored: false``, exactly like one not stored (yet).
    """
    stored = await store.get(str(event_id), tenant=tenant)
    if stored is None:
        return EventStatus(event_id=str(event_id), stored=False, projected=False)
    applied = await projections.applied_offset(stored.event.session_id, stored.position.partition)
    return EventStatus(
        event_id=str(event_id),
        stored=True,
        projected=applied is not None and applied >= stored.position.offset,
        partition=stored.position.partition,
        offset=stored.position.offset,
        session_id=stored.event.session_id,
        received_at=stored.event.received_at,
        event=stored.event.model_dump(mode="json"),
    )
