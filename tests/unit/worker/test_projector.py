"""The projection stage on the in-memory adapters: it never passes the store, projects exactly
what the store kept, and gives the same read models with or without the store's handoff."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiokafka import TopicPartition
from ca4_schemas import record_weight
from ca4_worker.application.ingest import IngestService, decode_record
from ca4_worker.application.projector import (
    NOT_HANDED_OVER,
    ProjectionService,
    StoredEventUnreadableError,
    StoreHandoff,
)
from ca4_worker.domain.records import PositionedEvent, RawRecord
from ca4_worker.messaging.store_progress import StoreWatermark
from ca4_worker.persistence.memory import (
    InMemoryDeadLetters,
    InMemoryEventStore,
    InMemoryProjections,
)

from tests.unit.worker.factories import TENANT_A, TENANT_B, event_body, gpu_sample, record
from tests.unit.worker.stages import next_offsets


def mixed_batch() -> list[RawRecord]:
    """Several sessions of several GPUs, with a client retry, another tenant's event for an
    owned session, an unreadable record and a redelivery of the first record."""
    bodies = [
        event_body(
            session_id=f"s{index % 4}",
            tenant=TENANT_A,
            gpus=[gpu_sample(gpu) for gpu in range(1 + index % 3)],
        )
        for index in range(24)
    ]
    records = [record(body, offset=offset) for offset, body in enumerate(bodies)]
    records.append(record(bodies[5], offset=24))  # client retry: same event id, later offset
    records.append(record(event_body(session_id="s1", tenant=TENANT_B), offset=25))
    records.append(record(b"{not json", offset=26))
    return records


async def stored_then_projected(
    records: list[RawRecord], *, handoff: StoreHandoff | None
) -> tuple[InMemoryProjections, InMemoryDeadLetters]:
    store, projections, letters = InMemoryEventStore(), InMemoryProjections(), InMemoryDeadLetters()
    ingest = IngestService(
        store=store, projections=projections, dead_letters=letters, max_backoff_s=0.01
    )
    watermark = StoreWatermark(store_group="ca4-store")
    projector = ProjectionService(
        store=store,
        projections=projections,
        dead_letters=letters,
        progress=watermark,
        handoff=handoff,
        max_backoff_s=0.01,
    )
    for start in (0, 10):  # two store batches, then one projection round over all of them
        part = records[start : start + 10] if start == 0 else records[start:]
        outcome = await ingest.handle_batch(part)
        if handoff is not None:
            handoff.put(part, outcome.to_project)
        watermark.advance(next_offsets(part))
    await projector.handle_batch(records)
    return projections, letters


async def test_the_handoff_and_the_lookup_give_the_same_read_models() -> None:
    """What the store stage hands over in-process and what the projection stage works out on
    its own (another worker stored it, or after a restart) project identically."""
    records = mixed_batch()
    handoff = StoreHandoff(max_bytes=1024 * 1024, max_positions=1000)
    with_handoff, letters = await stored_then_projected(records, handoff=handoff)
    looked_up, _ = await stored_then_projected(records, handoff=None)
    assert with_handoff.documents() == looked_up.documents()
    assert len(handoff) == 0  # every decision taken once
    sessions = {doc["_id"]: doc["sample_count"] for doc in with_handoff.documents()["sessions"]}
    assert sessions == {"s0": 6, "s1": 6, "s2": 6, "s3": 6}
    assert sorted(letter.error_class for letter in letters.letters) == [
        "foreign_tenant",
        "invalid_json",
    ]


async def test_a_round_waits_until_the_store_has_handled_its_records() -> None:
    store, projections, letters = InMemoryEventStore(), InMemoryProjections(), InMemoryDeadLetters()
    watermark = StoreWatermark(store_group="ca4-store")
    projector = ProjectionService(
        store=store, projections=projections, dead_letters=letters, progress=watermark
    )
    ingest = IngestService(store=store, projections=projections, dead_letters=letters)
    records = [record(event_body(session_id="w"), offset=offset) for offset in range(5)]
    round_ = asyncio.create_task(projector.handle_batch(records))
    await ingest.handle_batch(records[:3])
    watermark.advance(next_offsets(records[:3]))
    await asyncio.sleep(0.05)
    assert not round_.done()  # two of its records are not handled by the store yet
    assert await projections.session("w", tenant=None) is None
    await ingest.handle_batch(records[3:])
    watermark.advance({TopicPartition(records[0].topic, 0): 5})
    outcome = await asyncio.wait_for(round_, 5)
    assert outcome.projected == 5
    view = await projections.session("w", tenant=None)
    assert view is not None
    assert view.sample_count == 5


async def test_a_full_handoff_keeps_the_oldest_decisions_and_turns_new_ones_away() -> None:
    handoff = StoreHandoff(max_bytes=1024 * 1024, max_positions=3)
    records = [record(event_body(), offset=offset) for offset in range(5)]
    handoff.put(records, [])
    assert len(handoff) == 3
    assert handoff.take(records[4].position) is NOT_HANDED_OVER  # turned away
    assert handoff.take(records[0].position) is None  # handled, nothing to project


async def test_a_projection_stage_far_behind_still_takes_most_decisions() -> None:
    """After an outage the store stage runs far ahead of the projection stage. The projection
    stage reads in order, so a handoff that evicted its oldest decisions to make room for new
    ones lost every decision before it was taken, and each record was decoded twice."""
    handoff = StoreHandoff(max_bytes=1024 * 1024, max_positions=100)
    records = [record(event_body(), offset=offset) for offset in range(1000)]
    taken = 0
    for batch in range(10):  # the store handles 100 records per round, the projection 50
        handoff.put(records[batch * 100 : batch * 100 + 100], [])
        for item in records[batch * 50 : batch * 50 + 50]:
            taken += handoff.take(item.position) is not NOT_HANDED_OVER
    assert taken >= 250  # half: the handoff holds 100 records, the lag reaches 500


async def test_the_handoff_keeps_only_the_partitions_this_process_projects() -> None:
    """Another worker projects a partition this one stores: decisions kept for it would never
    be taken and would fill the handoff for good."""
    projected = {0, 1}
    handoff = StoreHandoff(max_bytes=1024 * 1024, max_positions=100, projected=lambda: projected)
    records = [
        record(event_body(), offset=offset, partition=partition)
        for partition in range(3)
        for offset in range(10)
    ]
    handoff.put(records, [])
    assert len(handoff) == 20
    assert handoff.take(records[25].position) is NOT_HANDED_OVER  # partition 2
    projected.discard(1)  # a rebalance gave partition 1 to another worker
    handoff.put([], [])
    assert len(handoff) == 10
    assert handoff.take(records[15].position) is NOT_HANDED_OVER
    assert handoff.take(records[5].position) is None


async def test_the_handoff_holds_at_most_its_bytes_of_kept_events() -> None:
    """Decoded, an event takes several times its weight: large events must not pile up."""
    store = InMemoryEventStore()
    ingest = IngestService(
        store=store,
        projections=InMemoryProjections(),
        dead_letters=InMemoryDeadLetters(),
        max_backoff_s=0.01,
    )
    gpus = [gpu_sample(index) for index in range(64)]
    records = [
        record(event_body(session_id=f"s{offset}", gpus=gpus), offset=offset)
        for offset in range(20)
    ]
    first_five = sum(record_weight(r.value) for r in records[:5])
    handoff = StoreHandoff(max_bytes=first_five, max_positions=1000)
    handoff.put(records, (await ingest.handle_batch(records)).to_project)
    assert handoff.held_weight == first_five
    assert all(handoff.take(r.position) is NOT_HANDED_OVER for r in records[5:])  # no room
    kept = [handoff.take(r.position) for r in records[:5]]
    assert [item.position.offset for item in kept if isinstance(item, PositionedEvent)] == [
        0, 1, 2, 3, 4
    ]  # fmt: skip
    assert handoff.held_weight == 0
    assert len(handoff) == 0


async def test_a_batch_handled_twice_is_counted_once_in_the_handoff() -> None:
    """A redelivered batch (a rebalance that gave the partition back) replaces its decisions."""
    store = InMemoryEventStore()
    ingest = IngestService(
        store=store,
        projections=InMemoryProjections(),
        dead_letters=InMemoryDeadLetters(),
        max_backoff_s=0.01,
    )
    records = [record(event_body(session_id=f"s{offset}"), offset=offset) for offset in range(4)]
    handoff = StoreHandoff(max_bytes=1024 * 1024, max_positions=1000)
    handoff.put(records, (await ingest.handle_batch(records)).to_project)
    once = handoff.held_weight
    handoff.put(records, (await ingest.handle_batch(records)).to_project)
    assert len(handoff) == 4
    assert handoff.held_weight in {once, 0}  # the second pass kept its events, or found them stored
    for item in records:
        handoff.take(item.position)
    assert handoff.held_weight == 0


async def test_a_stored_event_this_worker_cannot_read_fails_the_round_instead_of_a_skip() -> None:
    """A rolling upgrade: a newer worker stored an event of a schema version this one does not
    know. Skipping it would leave it unprojected for good; a dead-lettered unreadable record,
    which the store does not hold, is skipped."""
    store, projections, letters = InMemoryEventStore(), InMemoryProjections(), InMemoryDeadLetters()
    watermark = StoreWatermark(store_group="ca4-store")
    projector = ProjectionService(
        store=store, projections=projections, dead_letters=letters, progress=watermark
    )
    newer = json.dumps({**event_body(session_id="n"), "schema_version": 99}).encode()
    stored_by_a_newer_worker = record(newer, offset=0)
    dead_lettered = record(newer, offset=1)
    # What the newer worker stored at offset 0 (this worker cannot build it from the bytes).
    what_it_stored = decode_record(record(event_body(session_id="n"), offset=0))
    assert isinstance(what_it_stored, PositionedEvent)
    await store.append([what_it_stored])
    watermark.advance(next_offsets([stored_by_a_newer_worker, dead_lettered]))

    with pytest.raises(StoredEventUnreadableError, match="upgrade this worker"):
        await projector.handle_batch([stored_by_a_newer_worker, dead_lettered])
    outcome = await projector.handle_batch([dead_lettered])
    assert (outcome.projected, outcome.skipped) == (0, 1)
