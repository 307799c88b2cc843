"""The store and projection stages with in-memory adapters: decode, dead-letter, store,
project."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

import pytest
from ca4_worker.persistence.memory import (
    InMemoryDeadLetters,
    InMemoryEventStore,
    InMemoryProjections,
)

from tests.unit.worker.factories import TENANT_A, TENANT_B, event_body, record, v1_body
from tests.unit.worker.stages import StoreThenProject


@pytest.fixture
def parts() -> tuple[InMemoryEventStore, InMemoryProjections, InMemoryDeadLetters]:
    return InMemoryEventStore(), InMemoryProjections(), InMemoryDeadLetters()


def service(
    parts: tuple[InMemoryEventStore, InMemoryProjections, InMemoryDeadLetters],
) -> StoreThenProject:
    return StoreThenProject(*parts)


async def test_poison_is_dead_lettered_and_good_events_flow(parts) -> None:  # type: ignore[no-untyped-def]
    _, projections, letters = parts
    good = [event_body(session_id="s1") for _ in range(3)]
    records = [
        record(good[0], offset=0),
        record(b"{oops", offset=1),
        record(good[1], offset=2),
        record(json.dumps({**good[2], "schema_version": 7}).encode(), offset=3),
        record(json.dumps({**good[2], "labels": {"$bad": "x"}}).encode(), offset=4),
        record(None, offset=5),
    ]
    outcome = await service(parts).handle_batch(records)
    assert (outcome.stored, outcome.duplicate, outcome.dead_lettered) == (2, 0, 4)
    assert [letter.error_class for letter in letters.letters] == [
        "invalid_json",
        "unknown_schema_version",
        "schema_invalid",
        "invalid_event",
    ]
    assert letters.letters[0].record.value == b"{oops"
    view = await projections.session("s1", tenant=None)
    assert view is not None
    assert view.sample_count == 2


async def test_redelivered_batch_counts_once(parts) -> None:  # type: ignore[no-untyped-def]
    _, projections, _ = parts
    records = [record(event_body(session_id="s1"), offset=index) for index in range(5)]
    ingest = service(parts)
    await ingest.handle_batch(records)
    again = await ingest.handle_batch(records)
    assert (again.stored, again.duplicate) == (0, 5)
    view = await projections.session("s1", tenant=None)
    assert view is not None
    assert view.sample_count == 5


async def test_client_retry_inside_one_batch_is_one_event(parts) -> None:  # type: ignore[no-untyped-def]
    _, projections, _ = parts
    body = event_body(session_id="s1")
    outcome = await service(parts).handle_batch([record(body, offset=0), record(body, offset=1)])
    assert (outcome.stored, outcome.duplicate) == (1, 1)
    view = await projections.session("s1", tenant=None)
    assert view is not None
    assert view.sample_count == 1


async def test_crash_between_store_and_projection_is_repaired_on_redelivery(parts) -> None:  # type: ignore[no-untyped-def]
    store, projections, _ = parts
    records = [record(event_body(session_id="s1"), offset=index) for index in range(3)]
    projections.apply_outage.down = True
    ingest = service(parts)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ingest.handle_batch(records), timeout=0.3)
    assert await store.count() == 3  # stored, never projected: the "crash"
    projections.apply_outage.down = False
    await ingest.handle_batch(records)  # redelivery after restart
    view = await projections.session("s1", tenant=None)
    assert view is not None
    assert view.sample_count == 3


async def test_transient_store_failures_are_retried_not_dead_lettered(parts) -> None:  # type: ignore[no-untyped-def]
    store, _, letters = parts
    store.outage.failures_left = 3
    outcome = await service(parts).handle_batch([record(event_body(), offset=0)])
    assert outcome.stored == 1
    assert letters.letters == []


# Tenancy (issue 16): the store never projects another tenant's event into a session.


async def test_another_tenants_event_for_a_session_is_dead_lettered_not_projected(parts) -> None:  # type: ignore[no-untyped-def]
    store, projections, letters = parts
    ingest = service(parts)
    owner_first = event_body(session_id="s1", tenant=TENANT_A)
    intruder_same_batch = event_body(session_id="s1", tenant=TENANT_B)
    await ingest.handle_batch(
        [record(owner_first, offset=0), record(intruder_same_batch, offset=1)]
    )
    intruder_later = event_body(session_id="s1", tenant=TENANT_B, key_id="b-key")
    later = await ingest.handle_batch([record(intruder_later, offset=2)])

    assert (later.stored, later.dead_lettered) == (0, 1)
    assert [letter.error_class for letter in letters.letters] == ["foreign_tenant"] * 2
    assert letters.letters[1].record.offset == 2
    assert letters.letters[1].error_message == (
        "session 's1' belongs to tenant 'tenant-a'; this event came from tenant 'tenant-b' "
        "(key 'b-key') and was not stored or projected"
    )
    assert set(store.events) == {owner_first["event_id"]}
    view = await projections.session("s1", tenant=None)
    assert view is not None
    assert (view.tenant, view.sample_count) == (TENANT_A, 1)


async def test_a_pre_tenancy_session_belongs_to_the_legacy_tenant(parts) -> None:  # type: ignore[no-untyped-def]
    _, projections, letters = parts
    ingest = service(parts)
    await ingest.handle_batch([record(v1_body(event_body(session_id="old")), offset=0)])
    await ingest.handle_batch([record(event_body(session_id="old", tenant=TENANT_A), offset=1)])

    view = await projections.session("old", tenant=None)
    assert view is not None
    assert (view.tenant, view.sample_count) == ("legacy", 1)
    assert await projections.session("old", tenant=TENANT_A) is None
    assert [letter.error_class for letter in letters.letters] == ["foreign_tenant"]


async def test_an_event_id_another_tenant_holds_is_dead_lettered_not_dropped(
    parts: tuple[InMemoryEventStore, InMemoryProjections, InMemoryDeadLetters],
) -> None:
    # A duplicate is dropped in silence; one of another tenant's id was too, and /v1/events
    # said "not stored" to its sender for good. Now operators see it, with the reason.
    store, projections, letters = parts
    theirs = event_body(session_id="a-1", tenant=TENANT_A)
    mine = event_body(session_id="b-1", tenant=TENANT_B, event_id=theirs["event_id"])
    ingest = service(parts)
    await ingest.handle_batch([record(theirs, offset=0)])
    outcome = await ingest.handle_batch([record(mine, offset=1)])
    assert (outcome.stored, outcome.duplicate, outcome.dead_lettered) == (0, 0, 1)
    [letter] = letters.letters
    assert letter.error_class == "event_id_conflict"
    assert letter.record.offset == 1
    assert letter.error_message == (
        f"event id {theirs['event_id']} is already stored for another tenant; this event of "
        f"tenant {TENANT_B!r} (key {mine['key_id']!r}, session 'b-1') was not stored or "
        "projected: send it again with a new event_id"
    )
    assert store.events[theirs["event_id"]].event.tenant == TENANT_A
    assert await projections.session("b-1", tenant=None) is None


async def test_an_event_id_of_another_tenant_in_the_same_batch_is_dead_lettered_too(
    parts: tuple[InMemoryEventStore, InMemoryProjections, InMemoryDeadLetters],
) -> None:
    # A repeat within one batch is set aside before the store is asked: both copies arriving
    # close together (a store batch spans partitions) was the likely case, and it was dropped.
    _, _, letters = parts
    theirs = event_body(session_id="a-1", tenant=TENANT_A)
    mine = event_body(session_id="b-1", tenant=TENANT_B, event_id=theirs["event_id"])
    again = event_body(session_id="a-1", tenant=TENANT_A, event_id=theirs["event_id"])
    outcome = await service(parts).handle_batch(
        [record(theirs, offset=0), record(mine, offset=1), record(again, offset=2)]
    )
    assert (outcome.stored, outcome.duplicate, outcome.dead_lettered) == (1, 1, 1)
    assert [(letter.error_class, letter.record.offset) for letter in letters.letters] == [
        ("event_id_conflict", 1)
    ]


async def test_stored_sessions_are_claimed_for_their_owners_once(parts) -> None:  # type: ignore[no-untyped-def]
    """Where the processor checks owners: a no-op for the sessions it claimed, and what keeps
    another tenant from claiming a session first after the claims were lost with the database
    (the rewound workers store its events again)."""
    claims: list[dict[str, str]] = []

    async def claim(owners: Mapping[str, str]) -> None:
        claims.append(dict(owners))

    ingest = StoreThenProject(*parts, session_claims=claim)
    await ingest.handle_batch(
        [
            record(event_body(session_id="a", tenant=TENANT_A), offset=0),
            record(event_body(session_id="a", tenant=TENANT_B), offset=1),  # refused: A's
            record(event_body(session_id="b", tenant=TENANT_B), offset=2),
            record(b"{oops", offset=3),
        ]
    )
    await ingest.handle_batch(
        [
            record(event_body(session_id="a", tenant=TENANT_A), offset=4),
            record(event_body(session_id="c", tenant=TENANT_A), offset=5),
        ]
    )
    assert claims == [{"a": TENANT_A, "b": TENANT_B}, {"c": TENANT_A}]
