"""Defence in depth: a session's projection only ever folds its owner's events.

The processor refuses a report of another tenant's session, so this never triggers in normal
operation; it covers whatever got past the processor (a producer with direct Kafka access, a
pre-tenancy session reported after the upgrade). Such an event is dead-lettered with
:data:`ERROR_FOREIGN_TENANT`, never stored or projected, and so never lost either.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping

from ca4_schemas import LEGACY_TENANT

from ca4_worker.domain.records import PositionedEvent

ERROR_FOREIGN_TENANT = "foreign_tenant"
"""Dead-letter error class of an event whose session belongs to another tenant."""
ERROR_EVENT_ID_CONFLICT = "event_id_conflict"
"""Dead-letter error class of an event whose id another tenant's stored event already has."""


def split_by_owner(
    events: Iterable[PositionedEvent], owners: MutableMapping[str, str]
) -> tuple[list[PositionedEvent], list[PositionedEvent]]:
    """Events of their session's owner, and the others (in position order).

    ``owners`` maps session ids to their owner; a session it does not hold belongs to the
    tenant of its first event by position (the one the projection will create it with), and
    is added.
    """
    own: list[PositionedEvent] = []
    foreign: list[PositionedEvent] = []
    for positioned in sorted(events, key=lambda item: item.position):
        event = positioned.event
        owner = owners.setdefault(event.session_id, event.tenant)
        (own if owner == event.tenant else foreign).append(positioned)
    return own, foreign


def foreign_reason(positioned: PositionedEvent, owner: str) -> str:
    """The dead letter's message (owner and sender: operators read the DLQ, tenants do not)."""
    event = positioned.event
    return (
        f"session {event.session_id!r} belongs to tenant {owner!r}; this event came from "
        f"tenant {event.tenant!r} (key {event.key_id!r}) and was not stored or projected"
    )


def is_event_id_conflict(positioned: PositionedEvent, holder: str) -> bool:
    """Whether ``positioned`` repeats the event id of an event of tenant ``holder`` that is not
    its own. A pre-tenancy copy (the legacy tenant's) is the same report sent again across the
    upgrade: a duplicate."""
    return holder not in (positioned.event.tenant, LEGACY_TENANT)


def event_id_conflict_reason(positioned: PositionedEvent) -> str:
    """The dead letter's message for an event whose id another tenant's event already has."""
    event = positioned.event
    return (
        f"event id {positioned.event_id} is already stored for another tenant; this event "
        f"of tenant {event.tenant!r} (key {event.key_id!r}, session {event.session_id!r}) was "
        "not stored or projected: send it again with a new event_id"
    )
