"""Tenant isolation against the real services: the processor (real Kafka, claims in the real
database) and the worker (real Kafka, FerretDB, MinIO) read the same mounted keys file.

Tenant A cannot write into or read B's sessions, GPUs and events (and the other way round), a
``read:all`` key reads both, the stored events carry the key id and tenant the processor
stamped, an event that gets past the processor is dead-lettered instead of projected, and a
key removed from the file stops working on both services within the reload interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from ca4_processor.core.config import Settings as ProcessorSettings
from ca4_processor.main import create_app as create_processor
from ca4_schemas.constants import HEADER_ERROR_CLASS
from ca4_worker.core.config import Settings as WorkerSettings
from ca4_worker.messaging.groups import rewind_groups
from ca4_worker.persistence.documents import Doc
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.worker.support import produce, running_worker, wait_for
from tests.support.kafka import read_topic
from tests.support.keys import key_entry
from tests.support.reports import make_report
from tests.support.services import Endpoints
from tests.unit.worker.factories import event_body, v1_body

pytestmark = [pytest.mark.kafka, pytest.mark.mongo, pytest.mark.s3]

RELOAD_INTERVAL_S = 0.2
SHARED_GPU = "GPU-on-both-tenants"
KEYS = {
    "k-tenant-a": ("a-writer", "tenant-a", "write+read"),
    "k-tenant-b": ("b-writer", "tenant-b", "write+read"),
    "k-operator": ("operator", "platform", "read:all"),
    "k-leaver": ("leaver", "tenant-c", "write+read"),
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def keys_text(keys: dict[str, tuple[str, str, str]]) -> str:
    lines = [
        key_entry(key_id, key, tenant, scopes) for key, (key_id, tenant, scopes) in keys.items()
    ]
    return "# the keys file both services mount\n" + "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def running_processor(
    services: Endpoints, topic: str, database_name: str, keys_file: Path, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_processor(
        ProcessorSettings(
            KAFKA_BOOTSTRAP_SERVERS=services.kafka_bootstrap_servers,
            KAFKA_TOPIC=topic,
            MONGO_URL=services.mongo_url,
            MONGO_DB=database_name,
            API_KEYS_FILE=keys_file,
            API_KEYS_RELOAD_INTERVAL_S=RELOAD_INTERVAL_S,
            **({"RATE_LIMIT_PER_SECOND": 0} | settings),
        )
    )
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://processor", timeout=30
        ) as client:
            yield client


@contextlib.asynccontextmanager
async def both_services(
    services: Endpoints, worker_settings: WorkerSettings, keys_file: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """The processor and the worker on one topic and database, reading one keys file."""
    async with (
        running_processor(
            services, worker_settings.kafka_topic, worker_settings.mongo_db, keys_file
        ) as processor,
        running_worker(worker_settings) as worker,
    ):
        yield processor, worker


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-keys"
    path.write_text(keys_text(KEYS))
    return path


@pytest.fixture
def tenancy_settings(worker_settings: WorkerSettings, keys_file: Path) -> WorkerSettings:
    return worker_settings.model_copy(
        update={
            "api_key_hashes": "",
            "api_keys_file": keys_file,
            "api_keys_reload_interval_s": RELOAD_INTERVAL_S,
        }
    )


def _report(session_id: str) -> dict[str, Any]:
    report = make_report(session_id=session_id)
    report["payload"]["gpus"][0]["uuid"] = SHARED_GPU
    return report


async def _post(processor: httpx.AsyncClient, key: str, session_id: str) -> httpx.Response:
    return await processor.post("/v1/metadata", json=_report(session_id), headers=bearer(key))


async def _wait_projected(worker: httpx.AsyncClient, event_ids: list[str]) -> None:
    async def projected() -> bool:
        for event_id in event_ids:
            status = await worker.get(f"/v1/events/{event_id}", headers=bearer("k-operator"))
            if not status.json()["projected"]:
                return False
        return True

    await wait_for(projected, timeout_s=60, what=f"{len(event_ids)} events projected")


async def _reads(worker: httpx.AsyncClient, key: str) -> dict[str, Any]:
    sessions = await worker.get("/v1/sessions", headers=bearer(key))
    gpus = await worker.get("/v1/gpus", headers=bearer(key))
    return {
        "sessions": sorted(item["session_id"] for item in sessions.json()["items"]),
        "gpus": sorted((item["gpu_uuid"], item["tenant"]) for item in gpus.json()["items"]),
    }


async def test_tenants_cannot_write_or_read_each_others_data(
    services: Endpoints,
    tenancy_settings: WorkerSettings,
    database: AsyncDatabase[Doc],
    keys_file: Path,
) -> None:
    topic = tenancy_settings.kafka_topic
    a_session, b_session = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    async with both_services(services, tenancy_settings, keys_file) as (processor, worker):
        a_created = await _post(processor, "k-tenant-a", a_session)
        b_intrudes = await _post(processor, "k-tenant-b", a_session)
        b_created = await _post(processor, "k-tenant-b", b_session)
        b_batch = await processor.post(
            "/v1/metadata/batch",
            json={"reports": [_report(b_session), _report(a_session)]},
            headers=bearer("k-tenant-b"),
        )
        assert (a_created.status_code, b_intrudes.status_code, b_created.status_code) == (
            202,
            403,
            202,
        )
        assert b_intrudes.json() == {
            "detail": f"session {a_session!r} belongs to another tenant; "
            "report under a session_id of your own (a session first reported before the "
            "tenancy upgrade belongs to tenant legacy, which no key holds; a rotated key must "
            "keep its key id or name the same tenant: key_id:<hash>:<tenant>)",
            "type": "session_forbidden",
        }
        assert b_batch.status_code == 207
        assert [item["status"] for item in b_batch.json()["results"]] == ["accepted", "rejected"]
        a_event, b_event = a_created.json()["event_id"], b_created.json()["event_id"]
        b_batch_event = b_batch.json()["results"][0]["receipt"]["event_id"]
        await _wait_projected(worker, [a_event, b_event, b_batch_event])

        # Reads: each tenant its own; read:all both.
        assert await _reads(worker, "k-tenant-a") == {
            "sessions": [a_session],
            "gpus": [(SHARED_GPU, "tenant-a")],
        }
        assert await _reads(worker, "k-tenant-b") == {
            "sessions": [b_session],
            "gpus": [(SHARED_GPU, "tenant-b")],
        }
        assert await _reads(worker, "k-operator") == {
            "sessions": sorted([a_session, b_session]),
            "gpus": [(SHARED_GPU, "tenant-a"), (SHARED_GPU, "tenant-b")],
        }
        foreign = await worker.get(f"/v1/sessions/{b_session}", headers=bearer("k-tenant-a"))
        assert (foreign.status_code, foreign.json()) == (404, {"detail": "Session not found"})
        foreign_event = await worker.get(f"/v1/events/{b_event}", headers=bearer("k-tenant-a"))
        assert foreign_event.json()["stored"] is False
        own_gpu = await worker.get(f"/v1/gpus/{SHARED_GPU}", headers=bearer("k-tenant-a"))
        assert own_gpu.json()["session_id"] == a_session
        b_sessions = await worker.get(
            "/v1/gpus", params={"session_id": a_session}, headers=bearer("k-tenant-b")
        )
        assert b_sessions.json()["items"] == []

        # What the processor stamped is what the store holds, whatever the body said.
        stored = await database["events"].find_one({"_id": a_event})
        assert stored is not None
        assert (stored["event"]["key_id"], stored["event"]["tenant"]) == ("a-writer", "tenant-a")
        b_session_count = (
            await worker.get(f"/v1/sessions/{b_session}", headers=bearer("k-tenant-b"))
        ).json()["sample_count"]
        assert b_session_count == 2

        # Defence in depth: an event forged straight onto the topic for A's session, as B.
        forged = event_body(session_id=a_session, tenant="tenant-b", key_id="b-writer")
        await produce(tenancy_settings.kafka_bootstrap_servers, topic, [forged])

        async def dead_lettered() -> bool:
            letters = await read_topic(
                tenancy_settings.kafka_bootstrap_servers, tenancy_settings.kafka_dlq_topic
            )
            return any(
                json.loads(letter.value)["event_id"] == forged["event_id"] for letter in letters
            )

        await wait_for(dead_lettered, timeout_s=60, what="the forged event dead-lettered")
        (letter,) = await read_topic(
            tenancy_settings.kafka_bootstrap_servers, tenancy_settings.kafka_dlq_topic
        )
        assert dict(letter.headers)[HEADER_ERROR_CLASS] == b"foreign_tenant"
        assert await database["events"].find_one({"_id": forged["event_id"]}) is None
        a_view = await worker.get(f"/v1/sessions/{a_session}", headers=bearer("k-tenant-a"))
        assert (a_view.json()["tenant"], a_view.json()["sample_count"]) == ("tenant-a", 1)


async def test_a_key_removed_from_the_file_stops_working_on_both_services_without_restart(
    services: Endpoints,
    tenancy_settings: WorkerSettings,
    database: AsyncDatabase[Doc],
    keys_file: Path,
) -> None:
    session_id = f"c-{uuid.uuid4().hex[:8]}"
    async with both_services(services, tenancy_settings, keys_file) as (processor, worker):
        before_write = await _post(processor, "k-leaver", session_id)
        before_read = await worker.get("/v1/sessions", headers=bearer("k-leaver"))
        assert (before_write.status_code, before_read.status_code) == (202, 200)

        remaining = keys_text({k: v for k, v in KEYS.items() if k != "k-leaver"})
        await asyncio.to_thread(keys_file.write_text, remaining)

        async def revoked_on_both() -> bool:
            write = await _post(processor, "k-leaver", session_id)
            read = await worker.get("/v1/sessions", headers=bearer("k-leaver"))
            return (write.status_code, read.status_code) == (401, 401)

        await wait_for(revoked_on_both, timeout_s=RELOAD_INTERVAL_S * 10, what="key revoked")
        read = await worker.get("/v1/sessions", headers=bearer("k-leaver"))
        assert read.json() == {"detail": "invalid or revoked API key"}
        still = await _post(processor, "k-tenant-a", f"a-{uuid.uuid4().hex[:8]}")
        assert still.status_code == 202


async def test_a_session_from_before_tenancy_is_refused_at_the_edge_not_dropped_later(
    services: Endpoints,
    tenancy_settings: WorkerSettings,
    keys_file: Path,
    database: AsyncDatabase[Doc],
) -> None:
    """A runtime reporting across the upgrade: its session belongs to the legacy tenant, so
    the processor must answer ``403``, not ``202`` for a report the worker would dead-letter."""
    # Projected before the upgrade, by a worker that knew no tenants; the second then claimed
    # by a processor of the first tenancy release for the tenant that reported it first.
    for session_id in ("projected-before-tenancy", "claimed-by-a-tenant-before"):
        await database["sessions"].insert_one({"_id": session_id, "applied": {}})
    await database["session_owners"].insert_one(
        {"_id": "claimed-by-a-tenant-before", "tenant": "tenant-a"}
    )
    async with both_services(services, tenancy_settings, keys_file) as (processor, worker):
        # Published by a processor from before tenancy while the new worker already runs.
        old = v1_body(event_body(session_id="reported-during-the-upgrade"))
        await produce(tenancy_settings.kafka_bootstrap_servers, tenancy_settings.kafka_topic, [old])

        async def stored() -> bool:
            status = await worker.get(f"/v1/events/{old['event_id']}", headers=bearer("k-operator"))
            return bool(status.json()["stored"])

        await wait_for(stored, timeout_s=60, what="the version-1 event stored")
        answers = {
            session_id: await _post(processor, "k-tenant-a", session_id)
            for session_id in (
                "projected-before-tenancy",
                "claimed-by-a-tenant-before",
                "reported-during-the-upgrade",
                "new-after-the-upgrade",
            )
        }
    assert {session_id: answer.status_code for session_id, answer in answers.items()} == {
        "projected-before-tenancy": 403,
        "claimed-by-a-tenant-before": 403,
        "reported-during-the-upgrade": 403,
        "new-after-the-upgrade": 202,
    }
    owners = {doc["_id"]: doc["tenant"] async for doc in database["session_owners"].find({})}
    assert owners == {
        "projected-before-tenancy": "legacy",
        "claimed-by-a-tenant-before": "legacy",
        "reported-during-the-upgrade": "legacy",
        "new-after-the-upgrade": "tenant-a",
    }


async def test_after_the_database_is_lost_a_restored_session_stays_its_owners(
    services: Endpoints,
    tenancy_settings: WorkerSettings,
    keys_file: Path,
    database: AsyncDatabase[Doc],
) -> None:
    """The processor's claims live in the database too: once it is lost, the rewound workers
    store B's session again and claim it for B, so A cannot claim it first at the edge, which
    would lock B out of its own session (every report ``403``)."""
    async with both_services(services, tenancy_settings, keys_file) as (processor, worker):
        reports = [await _post(processor, "k-tenant-b", "b-long-run") for _ in range(3)]
        await _wait_projected(worker, [answer.json()["event_id"] for answer in reports])

    await database.client.drop_database(database.name)  # the database is lost
    groups = [tenancy_settings.kafka_store_group, tenancy_settings.kafka_project_group]
    await rewind_groups(
        tenancy_settings.kafka_bootstrap_servers, tenancy_settings.kafka_topic, groups, to=None
    )
    async with both_services(services, tenancy_settings, keys_file) as (processor, worker):
        await _wait_projected(worker, [answer.json()["event_id"] for answer in reports])
        squatter = await _post(processor, "k-tenant-a", "b-long-run")
        owner = await _post(processor, "k-tenant-b", "b-long-run")
    assert (squatter.status_code, owner.status_code) == (403, 202)
    assert squatter.json()["detail"].startswith("session 'b-long-run' belongs to another tenant")


async def test_new_sessions_past_the_tenants_burst_are_refused_before_any_claim(
    services: Endpoints,
    worker_settings: WorkerSettings,
    keys_file: Path,
    database: AsyncDatabase[Doc],
) -> None:
    """Claims in the real database: a refused new session is never claimed, and a processor
    that starts afresh (an empty cache) does not count sessions claimed before as new."""
    limited = {"RATE_LIMIT_PER_SECOND": 1000, "RATE_LIMIT_NEW_SESSIONS_PER_SECOND": 0.001}
    limited |= {"RATE_LIMIT_NEW_SESSIONS_BURST": 2}
    topic, name = worker_settings.kafka_topic, worker_settings.mongo_db
    async with running_processor(services, topic, name, keys_file, **limited) as processor:
        first = [await _post(processor, "k-tenant-a", f"fresh-{i}") for i in range(3)]
    async with running_processor(services, topic, name, keys_file, **limited) as restarted:
        again = [await _post(restarted, "k-tenant-a", f"fresh-{i}") for i in range(2)]
        new = await _post(restarted, "k-tenant-a", "fresh-3")

    assert [answer.status_code for answer in first] == [202, 202, 429]
    assert [answer.status_code for answer in again] == [202, 202]
    assert new.status_code == 202  # the restarted processor's burst was whole
    claimed = await database["session_owners"].distinct("_id")
    assert sorted(claimed) == ["fresh-0", "fresh-1", "fresh-3"]


async def test_a_key_holder_rotating_gpu_uuids_makes_at_most_64_gpus_per_session(
    services: Endpoints,
    tenancy_settings: WorkerSettings,
    database: AsyncDatabase[Doc],
    keys_file: Path,
) -> None:
    """Every GPU UUID was a new GPU document (several updates' worth of the worker's time, for
    every tenant's reports behind them): a session now makes GPU documents for the first 64
    GPUs it reports, and counts the samples of the rest."""
    rotating = f"rotating-{uuid.uuid4().hex[:8]}"
    reports = []
    for rotation in range(3):
        report = make_report(session_id=rotating, gpus=64)
        for gpu in report["payload"]["gpus"]:
            gpu["uuid"] = f"GPU-{rotation}-{gpu['index']:02d}"
        reports.append(report)
    async with both_services(services, tenancy_settings, keys_file) as (processor, worker):
        sent = await processor.post(
            "/v1/metadata/batch", json={"reports": reports}, headers=bearer("k-tenant-a")
        )
        other = await _post(processor, "k-tenant-a", f"other-{uuid.uuid4().hex[:8]}")
        assert (sent.status_code, other.status_code) == (202, 202)
        event_ids = [item["receipt"]["event_id"] for item in sent.json()["results"]]
        await _wait_projected(worker, [*event_ids, other.json()["event_id"]])

        gpus = await worker.get("/v1/gpus", params={"limit": 500}, headers=bearer("k-tenant-a"))
        session = await worker.get(f"/v1/sessions/{rotating}", headers=bearer("k-tenant-a"))

    listed = sorted(item["gpu_uuid"] for item in gpus.json()["items"])
    assert listed == sorted([SHARED_GPU, *(f"GPU-0-{index:02d}" for index in range(64))])
    assert (session.json()["sample_count"], session.json()["gpus_dropped"]) == (3, 128)
    assert await database["events"].count_documents({"session_id": rotating}) == 3


async def test_a_read_all_key_reading_a_gpu_document_id_gets_that_document(
    services: Endpoints, tenancy_settings: WorkerSettings, keys_file: Path
) -> None:
    """A review: tenant B reporting a GPU whose UUID spells A's GPU document id
    (``tenant-a/<uuid>``; UUIDs may hold ``/``) later than A shadowed A's GPU for a ``read:all``
    key asking for that id (the newest of either match answered)."""
    victim = f"GPU-victim-{uuid.uuid4().hex[:8]}"
    spelled = f"tenant-a/{victim}"
    a_report = make_report(session_id=f"a-{uuid.uuid4().hex[:8]}")
    a_report["payload"]["gpus"][0]["uuid"] = victim
    b_report = make_report(session_id=f"b-{uuid.uuid4().hex[:8]}")
    b_report["payload"]["gpus"][0]["uuid"] = spelled
    async with both_services(services, tenancy_settings, keys_file) as (processor, worker):
        a_sent = await processor.post("/v1/metadata", json=a_report, headers=bearer("k-tenant-a"))
        b_sent = await processor.post("/v1/metadata", json=b_report, headers=bearer("k-tenant-b"))
        assert (a_sent.status_code, b_sent.status_code) == (202, 202)
        await _wait_projected(worker, [a_sent.json()["event_id"], b_sent.json()["event_id"]])

        by_id = await worker.get(f"/v1/gpus/{spelled}", headers=bearer("k-operator"))
        b_by_id = await worker.get(f"/v1/gpus/tenant-b/{spelled}", headers=bearer("k-operator"))
        b_own = await worker.get(f"/v1/gpus/{spelled}", headers=bearer("k-tenant-b"))
        a_asks = await worker.get(f"/v1/gpus/{spelled}", headers=bearer("k-tenant-a"))

    assert by_id.status_code == 200
    assert (by_id.json()["tenant"], by_id.json()["gpu_uuid"], by_id.json()["session_id"]) == (
        "tenant-a",
        victim,
        a_report["session_id"],
    )
    assert b_by_id.status_code == 200
    assert (b_by_id.json()["tenant"], b_by_id.json()["gpu_uuid"]) == ("tenant-b", spelled)
    assert (b_own.status_code, b_own.json()["tenant"]) == (200, "tenant-b")
    assert (a_asks.status_code, a_asks.json()) == (404, {"detail": "GPU not found"})
