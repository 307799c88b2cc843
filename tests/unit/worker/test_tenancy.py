"""Tenancy on the read side, against the in-memory adapters: the read API behind the shared
keys, and the store never projecting another tenant's event into a session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from ca4_worker.bootstrap import in_memory_adapters
from ca4_worker.core.config import Settings
from ca4_worker.main import create_app
from ca4_worker.persistence.memory import (
    InMemoryEventStore,
    InMemoryProjections,
)

from tests.support.keys import key_entry
from tests.support.worker_app import given
from tests.unit.worker.factories import (
    TENANT_A,
    TENANT_B,
    gpu_sample,
    positioned,
)

SHARED_GPU = "GPU-on-both-tenants"


KEYS = "\n".join(
    [
        key_entry("a-reader", "k-a", TENANT_A, "read"),
        key_entry("b-reader", "k-b", TENANT_B, "write+read"),
        key_entry("ops", "k-ops", "platform", "read:all"),
        key_entry("a-writer", "k-a-write", TENANT_A, "write"),
    ]
)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class ReadApi:
    """The worker app over in-memory adapters holding one session, GPU and event per tenant."""

    def __init__(self, keys_file: Path) -> None:
        self.store = InMemoryEventStore()
        self.projections = InMemoryProjections()
        self.events = {
            TENANT_A: positioned(
                0, 0, session_id="a-1", tenant=TENANT_A, gpus=[gpu_sample(0, uuid_=SHARED_GPU)]
            ),
            TENANT_B: positioned(
                1, 0, session_id="b-1", tenant=TENANT_B, gpus=[gpu_sample(0, uuid_=SHARED_GPU)]
            ),
        }
        adapters = in_memory_adapters()
        adapters.store, adapters.projections = self.store, self.projections
        self.app = create_app(
            Settings(api_keys_file=keys_file, api_keys_reload_interval_s=0.05),
            adapters=given(adapters),
            kafka_consumers=False,
        )

    async def fill(self) -> None:
        await self.store.append(list(self.events.values()))
        await self.projections.apply(list(self.events.values()))


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[ReadApi, httpx.AsyncClient]]:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(KEYS)
    read_api = ReadApi(keys_file)
    await read_api.fill()
    transport = httpx.ASGITransport(read_api.app)
    async with (
        LifespanManager(read_api.app),
        httpx.AsyncClient(transport=transport, base_url="http://worker") as client,
    ):
        yield read_api, client


async def _ids(client: httpx.AsyncClient, key: str) -> dict[str, Any]:
    sessions = await client.get("/v1/sessions", headers=bearer(key))
    gpus = await client.get("/v1/gpus", headers=bearer(key))
    assert (sessions.status_code, gpus.status_code) == (200, 200)
    return {
        "sessions": [item["session_id"] for item in sessions.json()["items"]],
        "gpus": [(item["gpu_uuid"], item["session_id"]) for item in gpus.json()["items"]],
    }


async def test_a_read_key_lists_only_its_own_tenant(api: Any) -> None:
    _, client = api

    assert await _ids(client, "k-a") == {"sessions": ["a-1"], "gpus": [(SHARED_GPU, "a-1")]}
    assert await _ids(client, "k-b") == {"sessions": ["b-1"], "gpus": [(SHARED_GPU, "b-1")]}


async def test_read_all_lists_every_tenant(api: Any) -> None:
    _, client = api

    assert await _ids(client, "k-ops") == {
        "sessions": ["a-1", "b-1"],
        "gpus": [(SHARED_GPU, "a-1"), (SHARED_GPU, "b-1")],
    }


async def test_another_tenants_resources_look_exactly_like_missing_ones(api: Any) -> None:
    read_api, client = api
    theirs = read_api.events[TENANT_B].event_id

    foreign_session = await client.get("/v1/sessions/b-1", headers=bearer("k-a"))
    missing_session = await client.get("/v1/sessions/nope", headers=bearer("k-a"))
    foreign_event = await client.get(f"/v1/events/{theirs}", headers=bearer("k-a"))
    filtered = await client.get("/v1/gpus", params={"session_id": "b-1"}, headers=bearer("k-a"))

    assert (foreign_session.status_code, foreign_session.json()) == (
        missing_session.status_code,
        missing_session.json(),
    )
    assert foreign_session.status_code == 404
    assert foreign_session.json() == {"detail": "Session not found"}
    assert foreign_event.json() == {
        "event_id": theirs,
        "stored": False,
        "projected": False,
        "partition": None,
        "offset": None,
        "session_id": None,
        "received_at": None,
        "event": None,
    }
    assert filtered.json() == {"items": [], "next_cursor": None}


async def test_each_tenant_reads_its_own_view_of_a_shared_gpu_uuid(api: Any) -> None:
    _, client = api

    mine = await client.get(f"/v1/gpus/{SHARED_GPU}", headers=bearer("k-a"))
    theirs = await client.get(f"/v1/gpus/{SHARED_GPU}", headers=bearer("k-b"))
    unknown = await client.get("/v1/gpus/GPU-nobody", headers=bearer("k-a"))

    assert (mine.json()["tenant"], mine.json()["session_id"]) == (TENANT_A, "a-1")
    assert (theirs.json()["tenant"], theirs.json()["session_id"]) == (TENANT_B, "b-1")
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "GPU not found"})


async def test_own_and_read_all_events_show_the_stamped_key_and_tenant(api: Any) -> None:
    read_api, client = api
    mine = read_api.events[TENANT_A].event_id

    own = await client.get(f"/v1/events/{mine}", headers=bearer("k-a"))
    ops = await client.get(f"/v1/events/{mine}", headers=bearer("k-ops"))

    for response in (own, ops):
        assert response.json()["stored"] is True
        assert (response.json()["event"]["key_id"], response.json()["event"]["tenant"]) == (
            f"{TENANT_A}-key",
            TENANT_A,
        )


NOT_BEARER_BODY = {
    "detail": "the Authorization header must be 'Bearer <key>': the word Bearer, a space, then "
    "the API key (no other scheme, such as Basic, is accepted)"
}
"""A key sent bare or under another scheme: not told it sent none (a review)."""


@pytest.mark.parametrize(
    ("headers", "status", "body"),
    [
        ({}, 401, {"detail": "missing API key: send 'Authorization: Bearer <key>'"}),
        ({"Authorization": "Bearer "}, 401, None),
        ({"Authorization": "Basic k-a"}, 401, NOT_BEARER_BODY),
        ({"Authorization": "k-a"}, 401, NOT_BEARER_BODY),
        (bearer("not-a-key"), 401, {"detail": "invalid or revoked API key"}),
        (bearer("k-a-write"), 403, {"detail": "API key 'a-writer' lacks the 'read' scope"}),
    ],
)
@pytest.mark.parametrize("path", ["/v1/sessions", "/v1/sessions/a-1", "/v1/gpus", "/v1/gpus/x"])
async def test_reads_need_a_key_with_a_read_scope(
    api: Any, path: str, headers: dict[str, str], status: int, body: dict[str, str] | None
) -> None:
    _, client = api

    response = await client.get(path, headers=headers)

    assert response.status_code == status
    assert response.json() == (
        body or {"detail": "missing API key: send 'Authorization: Bearer <key>'"}
    )


async def test_a_revoked_key_stops_reading_after_a_reload(api: Any, tmp_path: Path) -> None:
    read_api, client = api
    before = await client.get("/v1/sessions", headers=bearer("k-a"))

    (tmp_path / "api-keys").write_text(
        KEYS.replace(key_entry("a-reader", "k-a", TENANT_A, "read"), "")
    )
    await read_api.app.state.key_ring.reload()
    after = await client.get("/v1/sessions", headers=bearer("k-a"))

    assert (before.status_code, after.status_code) == (200, 401)
    assert after.json() == {"detail": "invalid or revoked API key"}


async def test_the_openapi_document_declares_the_bearer_scheme(api: Any) -> None:
    _, client = api

    document = (await client.get("/openapi.json")).json()

    assert document["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    for path in ("/v1/sessions", "/v1/sessions/{session_id}", "/v1/gpus", "/v1/events/{event_id}"):
        assert document["paths"][path]["get"]["security"] == [{"ApiKey": []}]
        assert {"401", "403"} <= set(document["paths"][path]["get"]["responses"])
