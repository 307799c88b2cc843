"""The read API and replay on the in-memory adapters, through the worker's composition seam:
status codes, exact error bodies, pagination and tenancy scoping."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from ca4_auth.http import INVALID_KEY, MISSING_KEY
from ca4_schemas import record_weight
from ca4_worker.api.routes import health
from ca4_worker.application.replay import replay_from_archive, replay_from_store
from ca4_worker.bootstrap import WorkerAdapters, in_memory_adapters
from ca4_worker.core.config import Settings
from ca4_worker.domain.archive import archive_key, encode_archive_object
from ca4_worker.domain.records import PositionedEvent, RawRecord, event_weight
from ca4_worker.persistence.documents import GPUS, SESSIONS
from ca4_worker.persistence.memory import InMemoryProjections

from tests.support.keys import key_entry
from tests.support.worker_app import read_api
from tests.unit.worker.factories import (
    BASE_TIME,
    TENANT_A,
    TENANT_B,
    event_body,
    gpu_sample,
    positioned,
    record,
)

KEY_HASHES = ",".join(
    [
        key_entry("a-reader", "k-a", TENANT_A, "read"),
        key_entry("a-writer", "k-write", TENANT_A, "write"),
        key_entry("ops", "k-ops", "platform", "read:all"),
    ]
)
A = {"Authorization": "Bearer k-a"}
OPS = {"Authorization": "Bearer k-ops"}


@dataclass
class Worker:
    adapters: WorkerAdapters
    client: httpx.AsyncClient

    @property
    def projections(self) -> InMemoryProjections:
        projections = self.adapters.projections
        assert isinstance(projections, InMemoryProjections)
        return projections


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    """The worker app built by ``create_app`` with the fakes instead of ``bootstrap``."""
    adapters = in_memory_adapters()
    async with read_api(Settings(api_key_hashes=KEY_HASHES), adapters) as client:
        yield Worker(adapters, client)


async def _fill(worker: Worker, sessions: int, tenant: str = TENANT_A) -> None:
    events = [
        positioned(
            0,
            index,
            session_id=f"{tenant}-s{index}",
            tenant=tenant,
            occurred_at=BASE_TIME + timedelta(seconds=index),
            labels={"parity": "even" if index % 2 == 0 else "odd"},
            gpus=[gpu_sample(0, uuid_=f"GPU-{tenant}-{index}")],
        )
        for index in range(sessions)
    ]
    await worker.adapters.store.append(events)
    await worker.adapters.projections.apply(events)


async def test_sessions_page_through_with_the_cursor(worker: Worker) -> None:
    await _fill(worker, 5)

    first = await worker.client.get("/v1/sessions", params={"limit": 2}, headers=A)
    assert first.status_code == 200
    assert [item["session_id"] for item in first.json()["items"]] == [
        f"{TENANT_A}-s0",
        f"{TENANT_A}-s1",
    ]
    assert first.json()["next_cursor"] == f"{TENANT_A}-s1"
    rest = await worker.client.get(
        "/v1/sessions", params={"limit": 3, "cursor": first.json()["next_cursor"]}, headers=A
    )
    assert [item["session_id"] for item in rest.json()["items"]] == [
        f"{TENANT_A}-s{index}" for index in (2, 3, 4)
    ]
    assert rest.json()["next_cursor"] is None


async def test_gpus_page_through_with_an_opaque_cursor(worker: Worker) -> None:
    await _fill(worker, 3)

    first = await worker.client.get("/v1/gpus", params={"limit": 2}, headers=A)
    assert first.status_code == 200
    body = first.json()
    assert [item["gpu_uuid"] for item in body["items"]] == [
        f"GPU-{TENANT_A}-0",
        f"GPU-{TENANT_A}-1",
    ]
    assert body["next_cursor"] == f"{TENANT_A}/GPU-{TENANT_A}-1"
    rest = await worker.client.get("/v1/gpus", params={"cursor": body["next_cursor"]}, headers=A)
    assert rest.json() == {
        "items": [rest.json()["items"][0]],
        "next_cursor": None,
    }
    assert rest.json()["items"][0]["gpu_uuid"] == f"GPU-{TENANT_A}-2"


async def test_filters_and_one_session(worker: Worker) -> None:
    await _fill(worker, 4)

    even = await worker.client.get("/v1/sessions", params={"label": "parity:even"}, headers=A)
    one = await worker.client.get(f"/v1/sessions/{TENANT_A}-s3", headers=A)
    by_session = await worker.client.get(
        "/v1/gpus", params={"session_id": f"{TENANT_A}-s3"}, headers=A
    )

    assert [item["session_id"] for item in even.json()["items"]] == [
        f"{TENANT_A}-s0",
        f"{TENANT_A}-s2",
    ]
    assert one.status_code == 200
    assert (one.json()["sample_count"], one.json()["labels"]) == (1, {"parity": "odd"})
    assert [item["gpu_uuid"] for item in by_session.json()["items"]] == [f"GPU-{TENANT_A}-3"]


async def test_a_read_key_sees_its_tenant_and_read_all_sees_every_one(worker: Worker) -> None:
    await _fill(worker, 1, TENANT_A)
    await _fill(worker, 1, TENANT_B)

    own = await worker.client.get("/v1/sessions", headers=A)
    every = await worker.client.get("/v1/sessions", headers=OPS)
    theirs = await worker.client.get(f"/v1/gpus/GPU-{TENANT_B}-0", headers=A)

    assert [item["session_id"] for item in own.json()["items"]] == [f"{TENANT_A}-s0"]
    assert [item["session_id"] for item in every.json()["items"]] == [
        f"{TENANT_A}-s0",
        f"{TENANT_B}-s0",
    ]
    assert (theirs.status_code, theirs.json()) == (404, {"detail": "GPU not found"})


@pytest.mark.parametrize(
    ("path", "params", "status", "detail"),
    [
        ("/v1/sessions/nope", {}, 404, "Session not found"),
        ("/v1/gpus/GPU-nope", {}, 404, "GPU not found"),
    ],
)
async def test_exact_error_bodies(
    worker: Worker, path: str, params: dict[str, str], status: int, detail: str
) -> None:
    response = await worker.client.get(path, params=params, headers=A)

    assert (response.status_code, response.json()) == (status, {"detail": detail})


async def test_out_of_range_limit_malformed_label_and_event_id_are_422(worker: Worker) -> None:
    too_many = await worker.client.get("/v1/sessions", params={"limit": 501}, headers=A)
    no_colon = await worker.client.get("/v1/sessions", params={"label": "no-colon"}, headers=A)
    not_a_uuid = await worker.client.get("/v1/events/not-a-uuid", headers=A)

    assert too_many.status_code == 422
    assert [error["loc"] for error in too_many.json()["detail"]] == [["query", "limit"]]
    assert no_colon.status_code == 422
    assert [error["loc"] for error in no_colon.json()["detail"]] == [["query", "label"]]
    assert not_a_uuid.status_code == 422
    assert [error["loc"] for error in not_a_uuid.json()["detail"]] == [["path", "event_id"]]


@pytest.mark.parametrize(
    ("headers", "status", "detail"),
    [
        ({}, 401, MISSING_KEY),
        ({"Authorization": "Bearer wrong"}, 401, INVALID_KEY),
        ({"Authorization": "Bearer k-write"}, 403, "API key 'a-writer' lacks the 'read' scope"),
    ],
)
async def test_keys_are_checked_on_every_read_route(
    worker: Worker, headers: dict[str, str], status: int, detail: str
) -> None:
    for path in ("/v1/sessions", "/v1/gpus", f"/v1/events/{event_body()['event_id']}"):
        response = await worker.client.get(path, headers=headers)
        assert (response.status_code, response.json()) == (status, {"detail": detail}), path


async def test_an_event_is_stored_then_projected(worker: Worker) -> None:
    event = positioned(2, 7, session_id="s", tenant=TENANT_A)
    path = f"/v1/events/{event.event_id}"

    missing = await worker.client.get(path, headers=A)
    await worker.adapters.store.append([event])
    stored = await worker.client.get(path, headers=A)
    await worker.adapters.projections.apply([event])
    projected = await worker.client.get(path, headers=A)

    assert missing.json() == {
        "event_id": event.event_id,
        "stored": False,
        "projected": False,
        "partition": None,
        "offset": None,
        "session_id": None,
        "received_at": None,
        "event": None,
    }
    assert (stored.json()["stored"], stored.json()["projected"]) == (True, False)
    assert (projected.json()["stored"], projected.json()["projected"]) == (True, True)
    assert (projected.json()["partition"], projected.json()["offset"]) == (2, 7)


async def test_readiness_follows_the_database(worker: Worker) -> None:
    ready = await worker.client.get("/readyz")
    worker.projections.outage.down = True
    down = await worker.client.get("/readyz")

    assert (ready.status_code, ready.json()) == (
        200,
        {"status": "ready", "checks": {"database": True}},
    )
    assert (down.status_code, down.json()["checks"]) == (503, {"database": False})


async def test_replay_from_the_store_rebuilds_the_live_documents(worker: Worker) -> None:
    await _fill(worker, 4)
    live = worker.projections.documents()

    outcome = await replay_from_store(
        worker.adapters.store, worker.projections, rebuild=True, batch_size=3
    )

    assert (outcome.events, outcome.skipped) == (4, 0)
    assert worker.projections.documents() == live


def _bodies(count: int) -> list[dict[str, Any]]:
    """``count`` reports of one session, a second apart."""
    return [
        event_body(session_id="s", tenant=TENANT_A, occurred_at=BASE_TIME + timedelta(seconds=i))
        for i in range(count)
    ]


async def _archived(adapters: WorkerAdapters, records: list[RawRecord]) -> list[RawRecord]:
    """``records`` put into the archive as one object."""
    assert adapters.objects is not None
    await adapters.objects.put(
        archive_key("raw", "gpu-metadata", records[0]), encode_archive_object(records)
    )
    return records


async def test_replays_apply_pages_that_end_once_they_weigh_max_bytes(worker: Worker) -> None:
    """An archive object holds thousands of records and a store page a thousand events: read
    whole, crafted reports that decode to many times their bytes made them gigabytes."""
    adapters = in_memory_adapters()
    records = await _archived(
        adapters, [record(body, offset=offset) for offset, body in enumerate(_bodies(5))]
    )
    applied: list[int] = []
    apply = adapters.projections.apply

    async def recording(events: Sequence[PositionedEvent]) -> None:
        applied.append(len(events))
        await apply(events)

    adapters.projections.apply = recording  # type: ignore[method-assign]
    lightest = min(record_weight(item.value) for item in records)

    outcome = await replay_from_archive(
        adapters.objects,
        adapters.projections,
        prefix="raw",
        topic="gpu-metadata",
        rebuild=True,
        max_bytes=2 * lightest,
    )
    assert outcome.events == 5
    assert applied == [2, 2, 1]

    await _fill(worker, 5)
    applied.clear()
    stored = [item async for page in worker.adapters.store.scan() for item in page]
    outcome = await replay_from_store(
        worker.adapters.store,
        adapters.projections,
        rebuild=True,
        max_bytes=2 * min(event_weight(item.event) for item in stored),
    )
    assert outcome.events == 5
    assert applied == [2, 2, 1]


async def test_replay_from_the_archive_counts_each_event_once_and_skips_poison() -> None:
    adapters = in_memory_adapters()
    bodies = _bodies(3)
    await _archived(
        adapters,
        [
            *(record(body, offset=offset) for offset, body in enumerate(bodies)),
            record(bodies[0], offset=3),  # a client retry: the same event id again
            record(b"\xffpoison", offset=4),
        ],
    )

    outcome = await replay_from_archive(
        adapters.objects, adapters.projections, prefix="raw", topic="gpu-metadata", rebuild=True
    )

    assert (outcome.events, outcome.skipped) == (3, 2)
    view = await adapters.projections.session("s", tenant=TENANT_A)
    assert view is not None
    assert view.sample_count == 3
    assert isinstance(adapters.projections, InMemoryProjections)
    assert len(adapters.projections.documents()[SESSIONS]) == 1
    assert len(adapters.projections.documents()[GPUS]) == 1


async def test_metrics_are_rendered_off_the_event_loop(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of GPU series with long labels took over a second to render, which on the
    event loop stalled both stages."""
    rendered_in: list[threading.Thread] = []

    def render(registry: Any) -> bytes:
        rendered_in.append(threading.current_thread())
        return b"# rendered\n"

    monkeypatch.setattr(health, "generate_latest", render)
    response = await worker.client.get("/metrics")

    assert response.status_code == 200
    assert response.content == b"# rendered\n# rendered\n"
    assert rendered_in
    assert threading.main_thread() not in rendered_in
