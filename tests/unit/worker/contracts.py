"""Contract tests every ``EventStore`` and ``Projections`` adapter must pass.

Subclasses provide the ``store``/``projections`` fixtures: the in-memory fakes in unit tests,
the MongoDB adapters against FerretDB in integration tests.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from ca4_schemas import LEGACY_TENANT
from ca4_worker.application.ports import EventStore, Projections
from ca4_worker.application.views import GpuQuery, Page, SessionQuery, UnknownCursorError
from ca4_worker.domain.projection import SESSION_MAX_GPU_MODELS, SESSION_MAX_GPUS
from ca4_worker.domain.records import Position, PositionedEvent, event_weight

from tests.unit.worker.factories import (
    BASE_TIME,
    TENANT_A,
    TENANT_B,
    dated_ahead,
    gpu_sample,
    positioned,
    session_stream,
)


async def snapshot(projections: Projections) -> tuple[list[object], list[object]]:
    """Every session and GPU view, for equality checks."""
    sessions = (await projections.sessions(SessionQuery(tenant=None, limit=500))).items
    gpus = (await projections.gpus(GpuQuery(tenant=None, limit=500))).items
    return list(sessions), list(gpus)


class EventStoreContract:
    """What every event store does."""

    async def test_append_stores_new_events(self, store: EventStore) -> None:
        events = [positioned(0, 0), positioned(0, 1)]
        outcome = await store.append(events)
        assert outcome.stored == events
        assert await store.count() == 2
        fetched = await store.get(events[1].event_id, tenant=None)
        assert fetched is not None
        assert fetched.position == Position(0, 1)
        assert fetched.event == events[1].event

    async def test_redelivery_is_told_apart_from_a_duplicate(self, store: EventStore) -> None:
        first = positioned(0, 5)
        await store.append([first])
        redelivered = PositionedEvent(first.event, Position(0, 5))
        republished = PositionedEvent(first.event, Position(0, 9))
        outcome = await store.append([redelivered, republished, positioned(0, 10)])
        assert outcome.redelivered == [redelivered]
        assert outcome.duplicates == [republished]
        assert len(outcome.stored) == 1
        assert await store.count() == 2

    async def test_another_tenants_copy_of_an_event_id_is_a_conflict(
        self, store: EventStore
    ) -> None:
        # Event ids are unique across tenants: a report of tenant B under an id tenant A's
        # event holds was counted as a duplicate and dropped with no trace.
        theirs = positioned(0, 5, tenant=TENANT_A)
        await store.append([theirs])
        mine = positioned(0, 6, tenant=TENANT_B, event_id=theirs.event_id)
        own_again = PositionedEvent(theirs.event, Position(0, 7))
        outcome = await store.append([mine, own_again])
        assert (outcome.conflicts, outcome.duplicates, outcome.stored) == ([mine], [own_again], [])
        stored = await store.get(theirs.event_id, tenant=None)
        assert stored is not None
        assert stored.event.tenant == TENANT_A

    async def test_a_copy_of_a_pre_tenancy_event_is_a_duplicate_not_a_conflict(
        self, store: EventStore
    ) -> None:
        # The same report sent again across the upgrade (stored as the legacy tenant's).
        legacy = positioned(0, 5, tenant=LEGACY_TENANT)
        await store.append([legacy])
        again = positioned(0, 6, tenant=TENANT_A, event_id=legacy.event_id)
        outcome = await store.append([again])
        assert (outcome.conflicts, outcome.duplicates) == ([], [again])

    async def test_scan_orders_by_partition_and_offset(self, store: EventStore) -> None:
        events = [positioned(1, 3), positioned(0, 7), positioned(1, 1), positioned(0, 2)]
        await store.append(events)
        pages = [page async for page in store.scan(batch_size=3)]
        positions = [item.position for page in pages for item in page]
        assert positions == [Position(0, 2), Position(0, 7), Position(1, 1), Position(1, 3)]

    async def test_scan_pages_end_once_they_weigh_max_bytes(self, store: EventStore) -> None:
        """A replay reads pages of a thousand events: crafted reports that decode to many times
        their bytes must not make one page gigabytes."""
        events = [positioned(0, offset, occurred_at=BASE_TIME) for offset in range(5)]
        await store.append(events)
        weight = event_weight(events[0].event)
        pages = [page async for page in store.scan(batch_size=100, max_bytes=2 * weight)]
        assert [len(page) for page in pages] == [2, 2, 1]
        positions = [item.position for page in pages for item in page]
        assert positions == [item.position for item in events]

    async def test_scan_filters_by_received_at(self, store: EventStore) -> None:
        early = positioned(0, 0, occurred_at=BASE_TIME)
        late = positioned(0, 1, occurred_at=BASE_TIME + timedelta(hours=2))
        await store.append([early, late])
        since = BASE_TIME + timedelta(hours=1)
        found = [item async for page in store.scan(since=since) for item in page]
        assert [item.event_id for item in found] == [late.event_id]

    async def test_a_windowed_scan_skips_partitions_without_events_in_the_window(
        self, store: EventStore
    ) -> None:
        early = [positioned(0, offset, occurred_at=BASE_TIME) for offset in range(3)]
        late = [
            positioned(partition, 5, occurred_at=BASE_TIME + timedelta(hours=2))
            for partition in (1, 3)
        ]
        await store.append([*early, *late])
        since = BASE_TIME + timedelta(hours=1)
        pages = [page async for page in store.scan(since=since, batch_size=1)]
        assert [[item.event_id for item in page] for page in pages] == [
            [item.event_id] for item in late
        ]

    async def test_canonical_and_stored_positions(self, store: EventStore) -> None:
        """What the projection stage asks the store: where each event id was stored from, and
        which record positions hold a stored event."""
        first, other = positioned(0, 4), positioned(2, 9)
        await store.append([first, other, PositionedEvent(first.event, Position(1, 6))])
        missing = "00000000-0000-0000-0000-000000000000"
        assert await store.positions([first.event_id, other.event_id, missing]) == {
            first.event_id: Position(0, 4),
            other.event_id: Position(2, 9),
        }
        asked = {Position(0, 4), Position(1, 6), Position(2, 9), Position(2, 10)}
        assert await store.stored_positions(asked) == {Position(0, 4), Position(2, 9)}

    async def test_missing_event_is_none(self, store: EventStore) -> None:
        assert await store.get("00000000-0000-0000-0000-000000000000", tenant=None) is None

    async def test_get_is_confined_to_the_tenant(self, store: EventStore) -> None:
        mine, theirs = positioned(0, 0, tenant=TENANT_A), positioned(0, 1, tenant=TENANT_B)
        await store.append([mine, theirs])

        own = await store.get(mine.event_id, tenant=TENANT_A)
        assert own is not None
        assert (own.event.tenant, own.event.key_id) == (TENANT_A, f"{TENANT_A}-key")
        assert await store.get(theirs.event_id, tenant=TENANT_A) is None
        every = await store.get(theirs.event_id, tenant=None)
        assert every is not None
        assert every.event.tenant == TENANT_B


class ProjectionsContract:
    """What every projections adapter does."""

    async def test_session_aggregates(self, projections: Projections) -> None:
        events = [
            positioned(
                0,
                0,
                session_id="s1",
                occurred_at=BASE_TIME,
                gpus=[gpu_sample(0, utilization=20.0, memory_used=500.0)],
            ),
            positioned(
                0,
                1,
                session_id="s1",
                occurred_at=BASE_TIME + timedelta(seconds=10),
                gpus=[
                    gpu_sample(0, utilization=40.0, memory_used=900.0),
                    gpu_sample(1, name="NVIDIA A100", utilization=None, memory_used=None),
                ],
                labels={"run": "r2"},
            ),
        ]
        await projections.apply(events)
        view = await projections.session("s1", tenant=None)
        assert view is not None
        assert view.sample_count == 2
        assert view.first_seen == BASE_TIME
        assert view.last_seen == BASE_TIME + timedelta(seconds=10)
        assert view.gpu_models == ["NVIDIA A100", "Tesla T4"]
        assert view.peak_memory_used_mib == 900.0
        assert view.mean_utilization_pct == 30.0
        assert view.labels == {"run": "r2"}
        assert await projections.applied_offset("s1", 0) == 1

    async def test_repeated_apply_counts_once(self, projections: Projections) -> None:
        events = session_stream(sessions=3, events_per_session=10)
        await projections.apply(events)
        once = await snapshot(projections)
        await projections.apply(events)
        await projections.apply(events[5:20])
        assert await snapshot(projections) == once
        assert sum(view.sample_count for view in once[0]) == 30  # type: ignore[attr-defined]

    async def test_redelivery_after_partial_apply_adds_only_the_rest(
        self, projections: Projections
    ) -> None:
        events = session_stream(sessions=4, events_per_session=15)
        await projections.apply(events[:23])
        await projections.apply(events)  # a redelivered, larger batch
        partial_then_full = await snapshot(projections)
        await projections.reset()
        await projections.apply(events)
        assert await snapshot(projections) == partial_then_full

    async def test_a_session_on_several_partitions_counts_each_event_once(
        self, projections: Projections
    ) -> None:
        events = [
            positioned(partition, offset, session_id="moved", occurred_at=BASE_TIME)
            for partition in range(3)
            for offset in range(4)
        ]
        await projections.apply(events[:5])
        await projections.apply(events)
        await projections.apply(events)
        view = await projections.session("moved", tenant=None)
        assert view is not None
        assert view.sample_count == 12
        assert [await projections.applied_offset("moved", p) for p in range(3)] == [3, 3, 3]

    async def test_a_fleet_of_sessions_with_several_gpus_counts_exactly(
        self, projections: Projections
    ) -> None:
        events = session_stream(sessions=60, events_per_session=4, gpus_per_event=4)
        await projections.apply(events[:100])
        await projections.apply(events)  # a redelivery overlapping the first batch
        sessions = (await projections.sessions(SessionQuery(tenant=None, limit=500))).items
        gpus = (await projections.gpus(GpuQuery(tenant=None, limit=500))).items
        assert len(sessions) == 60
        assert all(view.sample_count == 4 for view in sessions)
        assert len(gpus) == 240
        newest = {}
        for item in events:
            for gpu in item.event.payload.gpus:
                newest[gpu.uuid] = max(newest.get(gpu.uuid, ""), str(item.event.event_id))
        assert {gpu.gpu_uuid for gpu in gpus} == set(newest)

    async def test_gpu_models_stop_at_the_cap_and_the_rest_is_counted(
        self, projections: Projections
    ) -> None:
        for report in range(5):  # one apply per report: the cap holds across writes
            await projections.apply(
                [
                    positioned(
                        0,
                        report,
                        session_id="bloat",
                        occurred_at=BASE_TIME + timedelta(seconds=report),
                        gpus=[gpu_sample(i, name=f"model-{report}-{i:02d}") for i in range(64)],
                    )
                ]
            )
        view = await projections.session("bloat", tenant=None)
        assert view is not None
        assert len(view.gpu_models) == SESSION_MAX_GPU_MODELS
        assert view.gpu_models == sorted(f"model-0-{i:02d}" for i in range(64))
        assert view.gpu_models_dropped == 4 * 64
        assert view.sample_count == 5

    async def test_which_gpu_models_and_gpus_fit_under_their_caps_does_not_depend_on_batching(
        self, projections: Projections
    ) -> None:
        # Names and UUIDs whose sorted order is not the order they are met in: 3 x 40 passes
        # both caps, and the later reports repeat the first one's GPU 0, which stays.
        def gpu(report: int, i: int) -> dict[str, object]:
            tag = f"{chr(ord('z') - i % 26)}-{report}-{i:02d}"
            return gpu_sample(i, name=tag, uuid_=f"GPU-{tag}")

        events = [
            positioned(
                0,
                report,
                session_id="many",
                occurred_at=BASE_TIME + timedelta(seconds=report),
                gpus=[gpu(report, i) for i in range(40)]
                + ([gpu_sample(40, name="z-0-00", uuid_="GPU-z-0-00")] if report else []),
            )
            for report in range(3)
        ]
        await projections.apply(events)
        all_at_once = await snapshot(projections)
        await projections.reset()
        for item in events:
            await projections.apply([item])
        assert await snapshot(projections) == all_at_once
        (session,), gpus = all_at_once
        assert len(session.gpu_models) == SESSION_MAX_GPU_MODELS
        assert len(gpus) == SESSION_MAX_GPUS
        kept = {gpu.gpu_uuid for gpu in gpus}
        assert {"GPU-z-0-00", "GPU-c-1-23"} <= kept  # the 64th met, though not the 64th sorted
        assert "GPU-b-1-24" not in kept
        assert {"z-0-00", "c-1-23"} <= set(session.gpu_models)
        assert (session.gpu_models_dropped, session.gpus_dropped) == (56, 56)

    async def test_a_session_rotating_gpu_uuids_creates_at_most_its_cap_of_gpu_documents(
        self, projections: Projections
    ) -> None:
        # A key holder rotating the UUIDs of 64 GPUs in every report of a known session: each
        # UUID was a new GPU document, which costs the worker several updates' worth.
        def rotated(report: int) -> PositionedEvent:
            return positioned(
                0,
                report,
                session_id="rotating",
                occurred_at=BASE_TIME + timedelta(seconds=report),
                gpus=[gpu_sample(i, uuid_=f"GPU-{report}-{i:02d}") for i in range(64)],
            )

        for report in range(5):  # one apply per report: the cap holds across writes
            await projections.apply([rotated(report)])
        await projections.apply([rotated(4)])  # a redelivery counts nothing twice
        later = positioned(
            0,
            5,
            session_id="rotating",
            occurred_at=BASE_TIME + timedelta(seconds=5),
            gpus=[gpu_sample(0, uuid_="GPU-0-00", utilization=99.0), gpu_sample(1, uuid_="GPU-9")],
        )
        other = positioned(0, 6, session_id="other", gpus=[gpu_sample(0, uuid_="GPU-4-00")])
        await projections.apply([later, other])

        gpus = (await projections.gpus(GpuQuery(tenant=None, limit=500))).items
        by_session: dict[str, set[str]] = {}
        for gpu in gpus:
            by_session.setdefault(gpu.session_id, set()).add(gpu.gpu_uuid)
        assert by_session == {
            "rotating": {f"GPU-0-{i:02d}" for i in range(64)},
            "other": {"GPU-4-00"},  # the cap is per session
        }
        newest = await projections.gpu("GPU-0-00", tenant=None)
        assert newest is not None
        assert newest.sample["utilization_gpu_pct"] == 99.0  # a kept GPU still follows
        view = await projections.session("rotating", tenant=None)
        assert view is not None
        assert (view.gpus_dropped, view.sample_count) == (4 * 64 + 1, 6)

    async def test_a_page_of_sessions_weighs_them_without_their_kept_gpus(
        self, projections: Projections
    ) -> None:
        # 64 GPUs of 90-character UUIDs: about 6.5 KB of bookkeeping per session document.
        await projections.apply(
            [
                positioned(
                    0,
                    index,
                    session_id=f"wide-{index}",
                    gpus=[
                        gpu_sample(i, uuid_=f"GPU-{index}-{i:02d}-{'x' * 80}") for i in range(64)
                    ],
                )
                for index in range(2)
            ]
        )
        page = await projections.sessions(SessionQuery(tenant=None, limit=10, max_bytes=4096))
        assert [view.session_id for view in page.items] == ["wide-0", "wide-1"]

    async def test_a_session_is_never_seen_past_its_receipt(self, projections: Projections) -> None:
        # A client clock 4:59 ahead would list the session as seen in the future (seen_since).
        await projections.apply([dated_ahead()])
        view = await projections.session("s", tenant=None)
        assert view is not None
        assert (view.first_seen, view.last_seen) == (BASE_TIME, BASE_TIME)

    async def test_any_batching_gives_the_same_result(self, projections: Projections) -> None:
        events = session_stream(sessions=5, events_per_session=12)
        await projections.apply(events)
        all_at_once = await snapshot(projections)
        await projections.reset()
        for start in range(0, len(events), 7):
            await projections.apply(events[start : start + 7])
        assert await snapshot(projections) == all_at_once

    async def test_gpu_keeps_latest_sample_whatever_the_order(
        self, projections: Projections
    ) -> None:
        older = positioned(
            0, 0, session_id="s1", occurred_at=BASE_TIME, gpus=[gpu_sample(0, utilization=1.0)]
        )
        newer = positioned(
            1,
            0,
            session_id="s2",
            occurred_at=BASE_TIME + timedelta(minutes=1),
            gpus=[gpu_sample(0, utilization=99.0)],
        )
        await projections.apply([newer])
        await projections.apply([older])
        gpu = await projections.gpu("GPU-00000000-test", tenant=None)
        assert gpu is not None
        assert gpu.session_id == "s2"
        assert gpu.sample["utilization_gpu_pct"] == 99.0
        assert gpu.last_seen == BASE_TIME + timedelta(minutes=1)

    async def test_pagination_and_filters(self, projections: Projections) -> None:
        events = [
            positioned(
                0,
                index,
                session_id=f"s{index}",
                labels={"project": "even" if index % 2 == 0 else "odd"},
                gpus=[gpu_sample(0, uuid_=f"GPU-{index}")],
            )
            for index in range(5)
        ]
        await projections.apply(events)
        first = await projections.sessions(SessionQuery(tenant=None, limit=2))
        assert [view.session_id for view in first.items] == ["s0", "s1"]
        assert first.next_cursor == "s1"
        rest = await projections.sessions(
            SessionQuery(tenant=None, limit=10, after=first.next_cursor)
        )
        assert [view.session_id for view in rest.items] == ["s2", "s3", "s4"]
        assert rest.next_cursor is None
        even = await projections.sessions(SessionQuery(tenant=None, label=("project", "even")))
        assert [view.session_id for view in even.items] == ["s0", "s2", "s4"]
        gpus = await projections.gpus(GpuQuery(tenant=None, session_id="s3"))
        assert [view.gpu_uuid for view in gpus.items] == ["GPU-3"]

    async def test_pages_end_once_their_documents_weigh_max_bytes(
        self, projections: Projections
    ) -> None:
        gpus = [gpu_sample(index, uuid_=f"GPU-{index}") for index in range(5)]
        for sample in gpus:
            sample["processes"] = [{"pid": pid, "name": "p" * 100} for pid in range(100)]
        await projections.apply(
            [positioned(0, index, session_id=f"s{index}", gpus=[gpus[index]]) for index in range(5)]
        )
        # About 15 KiB a GPU document: a page ends with the document that reaches 40 KiB.
        pages: list[list[str]] = []
        after = None
        while True:
            page = await projections.gpus(
                GpuQuery(tenant=TENANT_A, after=after, limit=500, max_bytes=40 * 1024)
            )
            pages.append([view.gpu_uuid for view in page.items])
            if page.next_cursor is None:
                break
            after = page.next_cursor
        assert pages == [["GPU-0", "GPU-1", "GPU-2"], ["GPU-3", "GPU-4"]]
        one_each = await projections.sessions(SessionQuery(tenant=TENANT_A, max_bytes=1))
        assert ([view.session_id for view in one_each.items], one_each.next_cursor) == (
            ["s0"],
            "s0",
        )

    async def test_a_read_all_cursor_naming_no_tenant_nor_document_is_refused(
        self, projections: Projections
    ) -> None:
        await projections.apply([positioned(0, 0, gpus=[gpu_sample(0, uuid_="GPU-0")])])
        with pytest.raises(UnknownCursorError):
            await projections.gpus(GpuQuery(tenant=None, after="GPU-0"))
        page = await projections.gpus(GpuQuery(tenant=None, after=f"{TENANT_A}/GPU-0"))
        assert page.items == []

    async def test_a_read_all_document_id_is_never_shadowed_by_a_uuid_spelling_it(
        self, projections: Projections
    ) -> None:
        # A reports a GPU; later B reports one whose UUID spells A's document id (UUIDs may hold
        # "/": MIG devices). A read:all key asking for A's document id gets A's document, not
        # B's newer one; B's is still found by its UUID, or its own document id.
        spelled = f"{TENANT_A}/GPU-victim-0001"
        await projections.apply(
            [
                positioned(
                    0,
                    0,
                    session_id="victim",
                    tenant=TENANT_A,
                    occurred_at=BASE_TIME,
                    gpus=[gpu_sample(0, uuid_="GPU-victim-0001", utilization=10.0)],
                ),
                positioned(
                    1,
                    0,
                    session_id="shadow",
                    tenant=TENANT_B,
                    occurred_at=BASE_TIME + timedelta(minutes=1),
                    gpus=[gpu_sample(0, uuid_=spelled, utilization=90.0)],
                ),
            ]
        )

        by_id = await projections.gpu(spelled, tenant=None)
        by_uuid = await projections.gpu("GPU-victim-0001", tenant=None)
        shadow = await projections.gpu(f"{TENANT_B}/{spelled}", tenant=None)
        own = await projections.gpu(spelled, tenant=TENANT_B)

        assert by_id is not None
        assert (by_id.tenant, by_id.gpu_uuid, by_id.session_id) == (
            TENANT_A,
            "GPU-victim-0001",
            "victim",
        )
        assert by_uuid is not None
        assert (by_uuid.tenant, by_uuid.session_id) == (TENANT_A, "victim")
        assert shadow is not None
        assert (shadow.tenant, shadow.gpu_uuid) == (TENANT_B, spelled)
        assert own is not None
        assert (own.tenant, own.gpu_uuid) == (TENANT_B, spelled)
        assert await projections.gpu(spelled, tenant=TENANT_A) is None

    async def test_reads_are_confined_to_the_tenant(self, projections: Projections) -> None:
        shared_gpu = "GPU-shared-by-two-tenants"
        await projections.apply(
            [
                positioned(
                    0,
                    0,
                    session_id="a1",
                    tenant=TENANT_A,
                    occurred_at=BASE_TIME,
                    gpus=[gpu_sample(0, uuid_=shared_gpu, utilization=10.0)],
                ),
                positioned(
                    1,
                    0,
                    session_id="b1",
                    tenant=TENANT_B,
                    occurred_at=BASE_TIME + timedelta(minutes=1),
                    gpus=[gpu_sample(0, uuid_=shared_gpu, utilization=90.0)],
                ),
                positioned(0, 1, session_id="a2", tenant=TENANT_A, gpus=[]),
            ]
        )

        own = await projections.sessions(SessionQuery(tenant=TENANT_A))
        assert [(view.session_id, view.tenant) for view in own.items] == [
            ("a1", TENANT_A),
            ("a2", TENANT_A),
        ]
        every = await projections.sessions(SessionQuery(tenant=None))
        assert [view.session_id for view in every.items] == ["a1", "a2", "b1"]
        assert await projections.session("b1", tenant=TENANT_A) is None
        assert await projections.session("b1", tenant=None) is not None
        assert await projections.session_owners(["a1", "b1", "nope"]) == {
            "a1": TENANT_A,
            "b1": TENANT_B,
        }
        # B reported A's GPU UUID later: A still sees its own sample, B its own.
        mine = await projections.gpu(shared_gpu, tenant=TENANT_A)
        assert mine is not None
        assert (mine.tenant, mine.session_id, mine.sample["utilization_gpu_pct"]) == (
            TENANT_A,
            "a1",
            10.0,
        )
        newest = await projections.gpu(shared_gpu, tenant=None)
        assert newest is not None
        assert (newest.tenant, newest.session_id) == (TENANT_B, "b1")
        gpus_a = await projections.gpus(GpuQuery(tenant=TENANT_A))
        assert [(view.gpu_uuid, view.tenant) for view in gpus_a.items] == [(shared_gpu, TENANT_A)]
        assert await projections.gpus(GpuQuery(tenant=TENANT_A, session_id="b1")) == Page(items=[])
        all_gpus = await projections.gpus(GpuQuery(tenant=None, limit=1))
        assert len(all_gpus.items) == 1
        rest = await projections.gpus(GpuQuery(tenant=None, after=all_gpus.next_cursor))
        assert {view.tenant for view in [*all_gpus.items, *rest.items]} == {TENANT_A, TENANT_B}


Batches = list[list[PositionedEvent]]
"""A projection scenario: the batches ``apply`` is called with, in order."""


def _past_the_caps() -> Batches:
    """A session reporting new GPU models and rotating GPU UUIDs, in batches that cut its
    reports mid-way, and redelivered."""
    events = [
        positioned(
            0,
            report,
            session_id="bloat",
            occurred_at=BASE_TIME + timedelta(seconds=report),
            gpus=[
                gpu_sample(i, name=f"model-{report}-{i:02d}", uuid_=f"GPU-{report * 15 + i:03d}")
                for i in range(30)
            ],
        )
        for report in range(6)
    ]
    return [events[:2], events[1:4], events, events[4:]]


def _several_partitions() -> Batches:
    events = [
        positioned(partition, offset, session_id="moved", occurred_at=BASE_TIME)
        for partition in range(3)
        for offset in range(4)
    ]
    return [events[:5], events, events]


def _out_of_order_gpu_samples() -> Batches:
    older = positioned(
        0, 0, session_id="s1", occurred_at=BASE_TIME, gpus=[gpu_sample(0, utilization=1.0)]
    )
    newer = positioned(
        1,
        0,
        session_id="s2",
        occurred_at=BASE_TIME + timedelta(minutes=1),
        gpus=[gpu_sample(0, utilization=99.0, memory_used=None)],
    )
    return [[newer], [older]]


def _gpu_sample_dated_ahead() -> Batches:
    """A report dated minutes past its receipt, then the real reports after its receipt."""
    ahead = dated_ahead()
    real = [
        positioned(
            0,
            offset,
            session_id="s",
            occurred_at=BASE_TIME + timedelta(seconds=offset),
            gpus=[gpu_sample(0, utilization=60.0 + offset)],
        )
        for offset in (1, 2)
    ]
    return [[ahead], real[:1], [*real, ahead]]


def _two_tenants() -> Batches:
    shared = "GPU-shared-by-two-tenants"
    return [
        [
            positioned(0, 0, session_id="a1", tenant=TENANT_A, gpus=[gpu_sample(0, uuid_=shared)]),
            positioned(1, 0, session_id="b1", tenant=TENANT_B, gpus=[gpu_sample(0, uuid_=shared)]),
            positioned(0, 1, session_id="a2", tenant=TENANT_A, gpus=[]),
        ]
    ]


def _fields_that_change_and_go_missing() -> Batches:
    """Labels replaced, then a report without utilisation or memory (``None`` never wins)."""
    return [
        [
            positioned(
                0,
                0,
                session_id="s",
                occurred_at=BASE_TIME,
                labels={"run": "r1"},
                gpus=[gpu_sample(0, memory_used=700.0)],
            )
        ],
        [
            positioned(
                0,
                1,
                session_id="s",
                occurred_at=BASE_TIME - timedelta(seconds=5),
                labels={},
                gpus=[gpu_sample(0, name="NVIDIA A100", utilization=None, memory_used=None)],
            ),
            positioned(0, 2, session_id="s", occurred_at=BASE_TIME, gpus=[]),
        ],
    ]


def _driver_upgrade() -> Batches:
    """The driver changes mid-session; the latest report's version is the one kept."""
    return [
        [positioned(0, 0, session_id="s", driver_version="535.104.05")],
        [
            positioned(0, 1, session_id="s", driver_version="550.54.15"),
            positioned(0, 2, session_id="other"),
        ],
    ]


def _in_batches(events: list[PositionedEvent], size: int) -> Batches:
    return [events[start : start + size] for start in range(0, len(events), size)]


def projection_scenarios() -> dict[str, Batches]:
    """Every projection scenario, fresh events each call (run one against two adapters)."""
    stream = session_stream(sessions=4, events_per_session=15)
    fleet = session_stream(sessions=30, events_per_session=3, gpus_per_event=3)
    return {
        "one-batch": [session_stream(sessions=3, events_per_session=5)],
        "repeated": [stream, stream, stream[5:20]],
        "partial-then-redelivered": [stream[:23], stream],
        "batches-of-7": _in_batches(stream, 7),
        "several-partitions": _several_partitions(),
        "fleet-with-overlap": [fleet[:40], fleet],
        "gpu-models-and-gpus-past-the-caps": _past_the_caps(),
        "gpu-samples-out-of-order": _out_of_order_gpu_samples(),
        "gpu-sample-dated-ahead": _gpu_sample_dated_ahead(),
        "two-tenants": _two_tenants(),
        "fields-change-and-go-missing": _fields_that_change_and_go_missing(),
        "driver-upgrade": _driver_upgrade(),
    }
