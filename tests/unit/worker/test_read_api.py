"""The read API and replay on the in-memory adapters, through the worker's composition seam:
status codes, exact error bodies, pagination and tenancy scoping."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import bson
import httpx
import pytest
from ca4_auth.http import INVALID_KEY, MISSING_KEY
from ca4_schemas import record_weight
from ca4_worker.api.routes import health
from ca4_worker.application.ports import UnavailableError
from ca4_worker.application.replay import (
    AlreadyDeadLettered,
    replay_from_archive,
    replay_from_store,
)
from ca4_worker.application.views import GpuQuery, GpuView, Page
from ca4_worker.bootstrap import WorkerAdapters, in_memory_adapters, store_stage
from ca4_worker.core.config import Settings
from ca4_worker.domain.archive import archive_key, encode_archive_object
from ca4_worker.domain.records import PositionedEvent, RawRecord, event_weight
from ca4_worker.main import create_app
from ca4_worker.persistence.documents import GPUS, SESSIONS
from ca4_worker.persistence.memory import InMemoryProjections
from fastapi import FastAPI
from prometheus_client import REGISTRY

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


async def _heavy_gpus(worker: Worker, count: int) -> int:
    """``count`` GPUs of one session, each with 256 processes; what one document weighs."""
    gpus = [gpu_sample(index, uuid_=f"GPU-{index:03d}") for index in range(count)]
    for sample in gpus:
        sample["processes"] = [
            {"pid": pid, "name": "p" * 128, "used_memory_mib": 1.5} for pid in range(256)
        ]
    event = positioned(0, 0, session_id="heavy", tenant=TENANT_A, gpus=gpus)
    await worker.adapters.projections.apply([event])
    return max(len(bson.encode(doc)) for doc in worker.projections.gpu_docs.values())


async def _every_page(client: httpx.AsyncClient, path: str, **params: Any) -> list[list[str]]:
    """The ids on each page, following ``next_cursor`` to the end."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        response = await client.get(
            path, params={**params, **({"cursor": cursor} if cursor else {})}, headers=A
        )
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item.get("gpu_uuid", item.get("session_id")) for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_a_page_ends_early_once_its_documents_weigh_the_byte_bound() -> None:
    """500 GPUs of 256 processes each were one page of 23 MB and 130 MB of memory per read:
    a page now ends, with ``next_cursor``, once its documents weigh ``read_page_max_bytes``."""
    adapters = in_memory_adapters()
    probe = Worker(adapters, httpx.AsyncClient())
    weight = await _heavy_gpus(probe, 7)
    settings = Settings(api_key_hashes=KEY_HASHES, read_page_max_bytes=2 * weight)
    async with read_api(settings, adapters) as client:
        pages = await _every_page(client, "/v1/gpus", limit=500)
        counted = await _every_page(client, "/v1/gpus", limit=3)
        sessions = await _every_page(client, "/v1/sessions", limit=500)

    assert pages == [
        [f"GPU-{index:03d}" for index in group] for group in ([0, 1], [2, 3], [4, 5], [6])
    ]
    assert [len(page) for page in counted] == [2, 2, 2, 1]
    assert sessions == [["heavy"]]


async def test_a_single_document_heavier_than_the_bound_is_a_page_of_its_own() -> None:
    adapters = in_memory_adapters()
    await _heavy_gpus(Worker(adapters, httpx.AsyncClient()), 2)
    settings = Settings(api_key_hashes=KEY_HASHES, read_page_max_bytes=1024)
    async with read_api(settings, adapters) as client:
        pages = await _every_page(client, "/v1/gpus")

    assert pages == [["GPU-000"], ["GPU-001"]]


async def test_a_bare_gpu_uuid_cursor_pages_on_within_the_keys_tenant(worker: Worker) -> None:
    """Clients from before tenancy pass the last GPU's UUID (the cursor was the UUID): read
    as the key's tenant's GPU, not as a cursor before every document (page 1, forever)."""
    await _fill(worker, 3)

    response = await worker.client.get(
        "/v1/gpus", params={"cursor": f"GPU-{TENANT_A}-0", "limit": 1}, headers=A
    )

    assert response.status_code == 200
    assert [item["gpu_uuid"] for item in response.json()["items"]] == [f"GPU-{TENANT_A}-1"]
    assert response.json()["next_cursor"] == f"{TENANT_A}/GPU-{TENANT_A}-1"


async def test_a_bare_cursor_of_a_mig_device_with_slashes_pages_on_too(worker: Worker) -> None:
    """Older drivers name MIG devices ``MIG-GPU-<uuid>/<gi>/<ci>``: a slash does not make a
    UUID a tenant-qualified cursor (read as one, it sorted before every id: page 1 again)."""
    uuids = [f"MIG-GPU-0000/{index}/0" for index in range(3)]
    events = [
        positioned(0, index, session_id=f"mig-s{index}", gpus=[gpu_sample(0, uuid_=uuid)])
        for index, uuid in enumerate(uuids)
    ]
    await worker.adapters.store.append(events)
    await worker.adapters.projections.apply(events)

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        params = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = (await worker.client.get("/v1/gpus", params=params, headers=A)).json()
        seen += [item["gpu_uuid"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = seen[-1]  # what a client from before tenancy passes back

    assert seen == uuids
    for path in (uuids[1], uuids[1].replace("/", "%2F")):  # raw or encoded slashes
        one = await worker.client.get(f"/v1/gpus/{path}", headers=A)
        assert (one.status_code, one.json()["gpu_uuid"]) == (200, uuids[1]), path
    # A trailing slash is still the list (redirected, as /v1/sessions/ is), not a UUID "".
    for listing, location in (
        ("/v1/gpus/", "/v1/gpus?limit=1"),  # relative: see the test below
        ("/v1/sessions/", "/v1/sessions?limit=1"),  # Starlette's redirect_slashes, relative too
    ):
        slash = await worker.client.get(listing, params={"limit": 1}, headers=A)
        assert slash.status_code == 307, listing
        assert slash.headers["location"] == location


async def test_redirects_are_relative_so_they_keep_https() -> None:
    """``/v1/gpus/`` and ``/v1/sessions/`` redirected to an absolute URL built from the request
    as the worker saw it: ``http://`` behind a proxy that ends TLS, so ``curl -L`` sent the API
    key in clear."""
    app = create_app(Settings(api_key_hashes=KEY_HASHES))
    transport = httpx.ASGITransport(app)
    # What the worker sees of an https request once the proxy has ended TLS (the forwarded
    # scheme is not trusted), and an https request seen as such.
    proxied = A | {"X-Forwarded-Proto": "https"}
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://ca4.example") as behind_proxy,
        httpx.AsyncClient(transport=transport, base_url="https://ca4.example") as direct,
    ):
        params = {"limit": 5, "gpu_name": "A 100"}
        slash = await behind_proxy.get("/v1/gpus/", params=params, headers=proxied)
        https = await direct.get("/v1/gpus/", params={"limit": 5}, headers=A)
        bare = await direct.get("/v1/gpus/", headers=A)
        sessions = await behind_proxy.get("/v1/sessions/", params=params, headers=proxied)

    assert (sessions.status_code, sessions.headers["location"]) == (
        307,
        "/v1/sessions?limit=5&gpu_name=A+100",
    )
    assert slash.status_code == 307
    assert slash.headers["location"] == "/v1/gpus?limit=5&gpu_name=A+100"
    assert (https.status_code, https.headers["location"]) == (307, "/v1/gpus?limit=5")
    assert bare.headers["location"] == "/v1/gpus"


async def test_a_read_all_keys_bare_cursor_must_name_a_pre_tenancy_document(
    worker: Worker,
) -> None:
    """A bare id names no tenant; only documents from before tenancy (not rebuilt yet) have
    such ids, and paging on after one of them is right. Any other is refused, not page 1."""
    await _fill(worker, 2)
    legacy = dict(worker.projections.gpu_docs[f"{TENANT_A}/GPU-{TENANT_A}-0"])
    del legacy["tenant"]
    legacy["_id"] = legacy["gpu_uuid"] = "GPU-legacy"
    worker.projections.gpu_docs["GPU-legacy"] = legacy

    unknown = await worker.client.get("/v1/gpus", params={"cursor": "GPU-nope"}, headers=OPS)
    after_legacy = await worker.client.get("/v1/gpus", params={"cursor": "GPU-legacy"}, headers=OPS)

    assert (unknown.status_code, unknown.json()) == (
        422,
        {
            "detail": "cursor 'GPU-nope' names no tenant and no GPU document: a read:all key "
            "pages with the next_cursor it was given, '<tenant>/<gpu uuid>'"
        },
    )
    assert after_legacy.status_code == 200
    assert [item["gpu_uuid"] for item in after_legacy.json()["items"]] == [
        f"GPU-{TENANT_A}-0",
        f"GPU-{TENANT_A}-1",
    ]


class HeldReads(InMemoryProjections):
    """Projections whose GPU pages wait until released: reads in flight, on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.held = 0
        self.one_more = asyncio.Event()
        self.release = asyncio.Event()

    async def gpus(self, query: GpuQuery) -> Page[GpuView]:
        self.held += 1
        self.one_more.set()
        await self.release.wait()
        return await super().gpus(query)

    async def holding(self, count: int) -> None:
        """Return once ``count`` pages are held."""
        while self.held < count:
            self.one_more.clear()
            await asyncio.wait_for(self.one_more.wait(), 5)


async def test_reads_in_flight_are_capped_per_tenant_and_per_process() -> None:
    """16 concurrent 23 MB pages of one key took the worker past its memory limit, and other
    tenants' reads waited seconds: a tenant may have a few reads in flight, the process a few
    more, and past them (with no room to wait) a read answers ``429`` at once."""
    adapters = in_memory_adapters()
    held = HeldReads()
    adapters.projections = held
    keys = ",".join([KEY_HASHES, key_entry("b-reader", "k-b", TENANT_B, "read")])
    settings = Settings(
        api_key_hashes=keys,
        read_max_in_flight_per_tenant=2,
        read_max_in_flight=3,
        read_max_waiting_per_tenant=0,
    )
    async with read_api(settings, adapters) as client:
        reads = [asyncio.create_task(client.get("/v1/gpus", headers=A)) for _ in range(2)]
        await held.holding(2)
        third_of_key = await asyncio.wait_for(client.get("/v1/gpus", headers=A), 5)
        reads.append(asyncio.create_task(client.get("/v1/gpus", headers=OPS)))
        await held.holding(3)
        other_key = await asyncio.wait_for(
            client.get("/v1/sessions", headers={"Authorization": "Bearer k-b"}), 5
        )
        held.release.set()
        answered = await asyncio.gather(*reads)
        after = await client.get("/v1/gpus", headers=A)

    assert (third_of_key.status_code, third_of_key.json()) == (
        429,
        {
            "detail": "tenant 'tenant-a' already has 2 reads in flight here (0 more waiting); "
            "retry after the Retry-After seconds"
        },
    )
    assert (other_key.status_code, other_key.json()) == (
        429,
        {
            "detail": "this worker already has 3 reads in flight (0 more waiting); retry after "
            "the Retry-After seconds"
        },
    )
    assert third_of_key.headers["Retry-After"] == other_key.headers["Retry-After"] == "1"
    assert [response.status_code for response in answered] == [200, 200, 200]
    assert after.status_code == 200


class SlowReads(InMemoryProjections):
    """Projections whose GPU pages take a few milliseconds."""

    async def gpus(self, query: GpuQuery) -> Page[GpuView]:
        await asyncio.sleep(0.005)
        return await super().gpus(query)


async def test_many_small_reads_of_one_key_wait_their_turn_instead_of_429() -> None:
    """A client reading many things at once (written to the seed's API, which had no cap) is
    served in turn; only a read that waits past the read deadline is refused."""
    adapters = in_memory_adapters()
    adapters.projections = SlowReads()
    settings = Settings(api_key_hashes=KEY_HASHES, read_max_in_flight_per_tenant=2)
    async with read_api(settings, adapters) as client:
        answers = await asyncio.gather(*(client.get("/v1/gpus", headers=A) for _ in range(60)))
    assert [answer.status_code for answer in answers] == [200] * 60

    held = HeldReads()
    adapters.projections = held
    settings = Settings(
        api_key_hashes=KEY_HASHES, read_max_in_flight_per_tenant=1, read_timeout_s=0.2
    )
    async with read_api(settings, adapters) as client:
        first = asyncio.create_task(client.get("/v1/gpus", headers=A))
        await held.holding(1)
        late = await asyncio.wait_for(client.get("/v1/gpus", headers=A), 5)
        held.release.set()
        await first
    assert (late.status_code, late.json()) == (
        429,
        {
            "detail": "tenant 'tenant-a' already has 1 reads in flight here (none freed within "
            "0.2 s); retry after the Retry-After seconds"
        },
    )


async def test_what_many_keys_may_park_waiting_is_bounded_too() -> None:
    adapters = in_memory_adapters()
    held = HeldReads()
    adapters.projections = held
    keys = ",".join([KEY_HASHES, key_entry("b-reader", "k-b", TENANT_B, "read")])
    settings = Settings(
        api_key_hashes=keys, read_max_in_flight=1, read_max_waiting=1, read_timeout_s=5
    )
    async with read_api(settings, adapters) as client:
        reads = [asyncio.create_task(client.get("/v1/gpus", headers=A))]
        await held.holding(1)
        reads.append(asyncio.create_task(client.get("/v1/gpus", headers=A)))
        await asyncio.sleep(0.05)  # the second waits for the first's slot
        other_key = await asyncio.wait_for(
            client.get("/v1/gpus", headers={"Authorization": "Bearer k-b"}), 5
        )
        held.release.set()
        answered = await asyncio.gather(*reads)
    assert (other_key.status_code, other_key.json()["detail"]) == (
        429,
        "this worker already has 1 reads in flight (1 more of every tenant waiting); retry after "
        "the Retry-After seconds",
    )
    assert [response.status_code for response in answered] == [200, 200]


async def test_many_keys_of_one_tenant_share_its_slots_and_leave_room_for_another() -> None:
    """A hostile-tenant review: slots were counted per key, so four read keys of one tenant
    held all 16 of the worker's slots and all 1,024 places to wait, and another tenant's read
    was ``429`` at once. A tenant's reads now share its slots and its places to wait,
    whichever keys send them (here the defaults scaled down: 4 in flight and 8 waiting of 16)."""
    adapters = in_memory_adapters()
    held = HeldReads()
    adapters.projections = held
    a_keys = [key_entry(f"a{n}", f"k-a{n}", TENANT_A, "read") for n in range(4)]
    keys = ",".join([KEY_HASHES, *a_keys, key_entry("b-reader", "k-b", TENANT_B, "read")])
    settings = Settings(
        api_key_hashes=keys,
        read_max_waiting_per_tenant=8,
        read_max_waiting=16,
        read_timeout_s=2,
    )
    async with read_api(settings, adapters) as client:
        reads = [
            asyncio.create_task(client.get("/v1/gpus", headers={"Authorization": f"Bearer k-a{n}"}))
            for _ in range(6)
            for n in range(4)
        ]
        await held.holding(4)
        await asyncio.sleep(0.05)  # every read of tenant A is in flight, waiting or refused
        in_flight = held.held
        other = await asyncio.wait_for(
            client.get("/v1/sessions", headers={"Authorization": "Bearer k-b"}), 5
        )
        held.release.set()
        answered = await asyncio.gather(*reads)

    assert other.status_code == 200, other.json()
    assert in_flight == 4
    statuses = [response.status_code for response in answered]
    assert (statuses.count(200), statuses.count(429)) == (4 + 8, 12)
    refused = next(response for response in answered if response.status_code == 429)
    assert refused.json()["detail"] == (
        "tenant 'tenant-a' already has 4 reads in flight here (8 more waiting); retry after "
        "the Retry-After seconds"
    )


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


async def test_out_of_range_limit_and_event_id_are_422(worker: Worker) -> None:
    too_many = await worker.client.get("/v1/sessions", params={"limit": 501}, headers=A)
    not_a_uuid = await worker.client.get("/v1/events/not-a-uuid", headers=A)

    assert too_many.status_code == 422
    assert [error["loc"] for error in too_many.json()["detail"]] == [["query", "limit"]]
    assert not_a_uuid.status_code == 422
    assert [error["loc"] for error in not_a_uuid.json()["detail"]] == [["path", "event_id"]]


@pytest.mark.parametrize(
    ("name", "instant"),
    [("seen_since", "0001-01-01T00:00:00+01:00"), ("seen_until", "9999-12-31T23:59:59-01:00")],
)
async def test_an_instant_past_the_calendar_in_utc_is_422_not_500(
    worker: Worker, name: str, instant: str
) -> None:
    """The offset moves it before year 1 or after 9999 in UTC, where the database compares."""
    await _fill(worker, 2)
    response = await worker.client.get("/v1/sessions", params={name: instant}, headers=A)

    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": [
                {
                    "type": "value_error",
                    "loc": ["query", name],
                    "msg": "the instant is outside years 1 to 9999 in UTC",
                    "input": instant,
                }
            ]
        },
    )


@pytest.mark.parametrize(
    "label",
    ["no-colon", ":value", "a\x00b:y", "$where:y", "a.b:y", "9lives:y", "k" * 65 + ":y"],
)
async def test_a_bad_label_is_422_with_the_string_detail_clients_know(
    worker: Worker, label: str
) -> None:
    """NUL, ``$`` or ``.`` in the key reached the database as ``labels.<key>``: a ``500``.
    Clients from before tenancy read the ``detail`` as a string starting with this text."""
    await _fill(worker, 1)

    response = await worker.client.get("/v1/sessions", params={"label": label}, headers=A)

    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": "label must look like key:value, the key as in reports: 1-64 ASCII "
            "letters, digits, '_' or '-', starting with a letter or '_'"
        },
    )


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


async def test_storing_the_archive_again_restores_the_event_store_by_the_store_stages_rules() -> (
    None
):
    """``ca4 replay --source s3 --store-events`` after the database was lost: the archive holds
    the raw topic, so the store stage's rules decide again what it stores (another tenant's
    report into a session is refused, a retry counts once), and each session is claimed for
    its owner where the processor checks it."""
    adapters = in_memory_adapters()
    claims: list[dict[str, str]] = []

    async def claim(owners: Mapping[str, str]) -> None:
        claims.append(dict(owners))

    adapters.session_claims = claim
    bodies = _bodies(3)
    intruder = event_body(session_id="s", tenant=TENANT_B)
    own = event_body(session_id="t", tenant=TENANT_B)
    records = [
        *(record(body, offset=offset) for offset, body in enumerate(bodies)),
        record(bodies[0], offset=3),  # a client retry: the same event id again
        record(b"\xffpoison", offset=4),
        record(intruder, offset=5),
        record(own, offset=6),
    ]
    await _archived(adapters, records[:5])
    await _archived(adapters, records[3:])  # an overlapping object from a re-upload
    store_again = store_stage(Settings(), adapters, dead_letters=AlreadyDeadLettered())

    outcome = await replay_from_archive(
        adapters.objects,
        adapters.projections,
        prefix="raw",
        topic="gpu-metadata",
        store_again=store_again,
    )

    assert (outcome.stored, outcome.events, outcome.skipped) == (4, 4, 3)
    stored = [item.event_id async for page in adapters.store.scan() for item in page]
    assert stored == [*(body["event_id"] for body in bodies), own["event_id"]]
    views = [
        await adapters.projections.session(s, tenant=t)
        for s, t in [("s", TENANT_A), ("t", TENANT_B)]
    ]
    assert [(view.tenant, view.sample_count) for view in views if view] == [
        (TENANT_A, 3),
        (TENANT_B, 1),
    ]
    assert [sorted(owners.items()) for owners in claims] == [[("s", TENANT_A)], [("t", TENANT_B)]]

    again = await replay_from_archive(
        adapters.objects,
        adapters.projections,
        prefix="raw",
        topic="gpu-metadata",
        store_again=store_stage(Settings(), adapters, dead_letters=AlreadyDeadLettered()),
    )
    assert (again.stored, again.events) == (0, 4)  # stored before: applied as no-ops
    view = await adapters.projections.session("s", tenant=TENANT_A)
    assert view is not None
    assert view.sample_count == 3


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
    assert response.content.startswith(b"# rendered\n# rendered\n# HELP ca4_gpu_utilization_pct")
    assert rendered_in
    assert threading.main_thread() not in rendered_in


@dataclass
class FakeClock:
    """The read budget's clock: each GPU page takes 100 ms of it, and nothing else moves it."""

    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


class TimedReads(InMemoryProjections):
    """Projections whose GPU pages take ``seconds`` of ``clock`` (a heavy page, or a slow
    database), then fail with ``error`` when one is given (a database that is down)."""

    def __init__(
        self, clock: FakeClock, seconds: float = 0.1, error: Exception | None = None
    ) -> None:
        super().__init__()
        self.clock = clock
        self.seconds = seconds
        self.error = error

    async def gpus(self, query: GpuQuery) -> Page[GpuView]:
        self.clock.now += self.seconds
        await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        return await super().gpus(query)


def _budget_on(clock: FakeClock) -> Callable[[FastAPI], None]:
    def configure(app: FastAPI) -> None:
        app.state.read_budget.buckets.clock = clock

    return configure


B = {"Authorization": "Bearer k-b"}
KEYS_A_B = ",".join([KEY_HASHES, key_entry("b-reader", "k-b", TENANT_B, "read")])


async def test_a_tenant_that_keeps_the_read_api_busy_waits_and_others_do_not() -> None:
    """Reads were capped in number at once, not in time: one tenant asking again as soon as
    answered kept the event loop the consumers share busy (another tenant's read 41 to
    142-255 ms). Each read now pays the time it held its slot from its tenant's budget."""
    clock = FakeClock()
    adapters = in_memory_adapters()
    adapters.projections = TimedReads(clock)
    settings = Settings(
        api_key_hashes=KEYS_A_B, read_budget_per_tenant=0.1, read_budget_burst_s=0.15
    )
    async with read_api(settings, adapters, _budget_on(clock)) as client:
        before = _sample("ca4_worker_read_seconds_total", TENANT_A)
        answers = [(await client.get("/v1/gpus", headers=A)).status_code for _ in range(2)]
        refused = await client.get("/v1/gpus", headers=A)  # 0.15 - 0.2 + 0.01 s: in debt
        other_tenant = await client.get("/v1/gpus", headers=B)
        clock.now += 1.0  # 0.1 s refilled
        again = await client.get("/v1/gpus", headers=A)

    assert answers == [200, 200]  # 0.15 s saved: two 100 ms reads may start
    assert refused.status_code == 429
    assert refused.json() == {
        "detail": "tenant 'tenant-a' has spent its read time in this worker "
        "(CA4_READ_BUDGET_PER_TENANT: 0.1 s of reads per second, 0.15 s at once); retry after "
        "the Retry-After seconds"
    }
    assert refused.headers["Retry-After"] == "1"
    assert other_tenant.status_code == 200
    assert again.status_code == 200
    assert _sample("ca4_worker_read_seconds_total", TENANT_A) - before == pytest.approx(0.3)
    assert _sample("ca4_worker_reads_refused_total", TENANT_A) >= 1


async def test_reads_let_in_together_are_checked_again_once_they_have_a_slot() -> None:
    """The budget was checked only before a read queued for its slot: 40 reads sent at once
    all ran and left the tenant 27 times its budget in debt. A read is checked again once it
    has its slot, so reads let in together stop where the budget does."""
    clock = FakeClock()
    adapters = in_memory_adapters()
    adapters.projections = TimedReads(clock)
    settings = Settings(
        api_key_hashes=KEYS_A_B,
        read_budget_per_tenant=0.1,
        read_budget_burst_s=0.15,
        read_max_in_flight_per_tenant=1,
    )
    async with read_api(settings, adapters, _budget_on(clock)) as client:
        answers = await asyncio.gather(*(client.get("/v1/gpus", headers=A) for _ in range(8)))

    assert sorted(answer.status_code for answer in answers) == [200, 200] + [429] * 6


async def test_reads_failed_by_an_outage_do_not_spend_the_budget() -> None:
    """Every read waiting out an outage would have drained every tenant's budget, and the
    recovery would have been a storm of 429s."""
    clock = FakeClock()
    adapters = in_memory_adapters()
    adapters.projections = TimedReads(clock, 5.0, UnavailableError("database unreachable"))
    settings = Settings(
        api_key_hashes=KEYS_A_B, read_budget_per_tenant=0.1, read_budget_burst_s=0.15
    )
    async with read_api(settings, adapters, _budget_on(clock)) as client:
        during = [(await client.get("/v1/gpus", headers=A)).status_code for _ in range(3)]
        budget_left = await client.get("/v1/sessions", headers=A)

    assert during == [503, 503, 503]
    assert budget_left.status_code == 200


def _sample(name: str, tenant: str) -> float:
    return REGISTRY.get_sample_value(name, {"tenant": tenant}) or 0.0
