"""Worker processes end to end: 10,000 events through the processor, SIGKILL mid-stream,
two workers in one group with one killed; nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest
from ca4_worker.core.config import Settings
from ca4_worker.persistence.documents import Doc
from ca4_worker.persistence.s3 import S3ObjectStore
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.worker.checks import archived_positions, projected_sample_total
from tests.integration.worker.conftest import bucket, database, topic, worker_settings
from tests.integration.worker.support import produce, wait_for
from tests.unit.worker.factories import event_body, gpu_sample

__all__ = ["bucket", "database", "topic", "worker_settings"]
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.kafka, pytest.mark.mongo]

DEV_KEY = secrets.token_urlsafe(32)
"""A throw-away API key for this run (the processor refuses the public dev key here)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CA4_")}
    secret = settings.s3_secret_access_key
    for name, value in settings.model_dump(exclude_none=True).items():
        text = secret.get_secret_value() if name == "s3_secret_access_key" and secret else value
        env[f"CA4_{name.upper()}"] = str(text)
    return env


def _processor_env(settings: Settings, **extra: str) -> dict[str, str]:
    """A processor on this test's topic and database (session claims), with its own key and
    a rate limit no test reaches."""
    digest = hashlib.sha256(DEV_KEY.encode()).hexdigest()
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CA4_")},
        "CA4_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "CA4_KAFKA_TOPIC": settings.kafka_topic,
        "CA4_API_KEY_HASHES": f"e2e:{digest}",
        "CA4_MONGO_URL": settings.mongo_url,
        "CA4_MONGO_DB": settings.mongo_db,
        "CA4_RATE_LIMIT_PER_SECOND": "1000000",
        "CA4_RATE_LIMIT_BURST": "1000000",
        **extra,
    }


class Processes:
    """Starts uvicorn subprocesses and always stops them."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._children: list[subprocess.Popen[bytes]] = []
        self._logs: list[BinaryIO] = []

    def start(
        self, app: str, env: dict[str, str], name: str
    ) -> tuple[subprocess.Popen[bytes], int]:
        port = _free_port()
        log = (self._log_dir / f"{name}.log").open("ab")
        self._logs.append(log)
        child = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._children.append(child)
        return child, port

    def stop_all(self) -> None:
        for child in self._children:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(timeout=15)
        for log in self._logs:
            log.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    yield running
    running.stop_all()


async def _ready(port: int) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


def _events(count: int, sessions: int = 40) -> list[dict[str, object]]:
    return [
        event_body(
            session_id=f"e2e-{index % sessions}",
            gpus=[
                gpu_sample(0, uuid_=f"GPU-e2e-{index % sessions}", utilization=float(index % 97))
            ],
        )
        for index in range(count)
    ]


def _counter(database: AsyncDatabase[Doc], count: int) -> Callable[[], object]:
    async def at_least() -> bool:
        return await database["events"].count_documents({}) >= count

    return at_least


@pytest.fixture
def e2e_settings(worker_settings: Settings) -> Settings:
    return worker_settings.model_copy(
        update={"archive_max_records": 2000, "archive_max_age_s": 2.0, "lag_poll_interval_s": 2}
    )


async def test_10k_events_through_the_processor_with_a_worker_killed_mid_stream(
    e2e_settings: Settings,
    database: AsyncDatabase[Doc],
    bucket: S3ObjectStore,
    processes: Processes,
) -> None:
    processor_env = _processor_env(e2e_settings, CA4_PUBLISH_TIMEOUT_S="30")
    _, processor_port = processes.start("ca4_processor.main:app", processor_env, "processor")
    worker_env = _worker_env(e2e_settings)
    worker, worker_port = processes.start("ca4_worker.main:app", worker_env, "worker-1")
    await wait_for(lambda: _ready(processor_port), timeout_s=60, what="processor ready")
    await wait_for(lambda: _ready(worker_port), timeout_s=60, what="worker ready")

    events = _events(10_000)
    stamped = {"received_at", "key_id", "tenant"}  # the processor's to set, never the body's
    reports = [
        {**{k: v for k, v in event.items() if k not in stamped}, "schema_version": 1}
        for event in events
    ]
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{processor_port}",
        headers={"Authorization": f"Bearer {DEV_KEY}"},
        timeout=30,
    ) as client:
        in_flight = asyncio.Semaphore(4)

        async def post(chunk: list[dict[str, object]]) -> None:
            async with in_flight:
                for _ in range(10):  # retry a 503 with the same event ids, as the SDK does
                    response = await client.post("/v1/metadata/batch", json={"reports": chunk})
                    if response.status_code != 503:
                        break
                    await asyncio.sleep(1)
                assert response.status_code == 202, response.text

        chunks = [reports[start : start + 100] for start in range(0, len(reports), 100)]
        await asyncio.gather(*(post(chunk) for chunk in chunks[:40]))
        await wait_for(_counter(database, 1000), timeout_s=60, what="1,000 stored")  # type: ignore[arg-type]
        worker.send_signal(signal.SIGKILL)  # mid-stream: no shutdown, no commit
        await asyncio.to_thread(worker.wait, 10)
        posting = asyncio.gather(*(post(chunk) for chunk in chunks[40:]))
        _, worker_port = processes.start("ca4_worker.main:app", worker_env, "worker-1-restarted")
        await posting

    await wait_for(_counter(database, 10_000), timeout_s=120, what="10,000 stored")  # type: ignore[arg-type]

    async def projected() -> bool:
        return await projected_sample_total(database) >= 10_000

    await wait_for(projected, timeout_s=60, what="10,000 projected")

    async def archived() -> bool:
        return sum((await archived_positions(bucket, e2e_settings.kafka_topic)).values()) >= 10_000

    await wait_for(archived, timeout_s=120, what="10,000 archived")
    assert await database["events"].count_documents({}) == 10_000
    assert await projected_sample_total(database) == 10_000
    sessions = [doc async for doc in database["sessions"].find({})]
    assert len(sessions) == 40
    assert {doc["sample_count"] for doc in sessions} == {250}
    positions = await archived_positions(bucket, e2e_settings.kafka_topic)
    assert len(positions) == 10_000
    assert set(positions.values()) == {1}


async def test_two_workers_in_one_group_one_killed(
    e2e_settings: Settings,
    database: AsyncDatabase[Doc],
    processes: Processes,
) -> None:
    settings = e2e_settings.model_copy(update={"archive_enabled": False})
    env = _worker_env(settings)
    first, first_port = processes.start("ca4_worker.main:app", env, "worker-a")
    _, second_port = processes.start("ca4_worker.main:app", env, "worker-b")
    await wait_for(lambda: _ready(first_port), timeout_s=60, what="worker a ready")
    await wait_for(lambda: _ready(second_port), timeout_s=60, what="worker b ready")
    events = _events(4000, sessions=30)
    await produce(settings.kafka_bootstrap_servers, settings.kafka_topic, events[:2000])
    await wait_for(_counter(database, 500), timeout_s=60, what="500 stored")  # type: ignore[arg-type]
    first.send_signal(signal.SIGKILL)
    await produce(settings.kafka_bootstrap_servers, settings.kafka_topic, events[2000:])
    await wait_for(_counter(database, 4000), timeout_s=120, what="4,000 stored")  # type: ignore[arg-type]

    async def projected() -> bool:
        return await projected_sample_total(database) >= 4000

    await wait_for(projected, timeout_s=60, what="4,000 projected")
    assert await database["events"].count_documents({}) == 4000
    assert await projected_sample_total(database) == 4000


FLEET_REPORTS = int(os.environ.get("CA4_TEST_FLEET_REPORTS", "50000"))
FLEET_SESSIONS = 500


async def test_a_fleet_of_500_sessions_at_full_speed_is_stored_and_projected_exactly(
    e2e_settings: Settings,
    database: AsyncDatabase[Doc],
    processes: Processes,
    tmp_path: Path,
) -> None:
    """``ca4 send`` as a user runs it: 500 sessions of several GPUs each, as fast as it goes."""
    processor_env = _processor_env(e2e_settings)
    _, processor_port = processes.start("ca4_processor.main:app", processor_env, "processor")
    worker_settings = e2e_settings.model_copy(update={"archive_enabled": False})
    _, worker_port = processes.start("ca4_worker.main:app", _worker_env(worker_settings), "worker")
    await wait_for(lambda: _ready(processor_port), timeout_s=60, what="processor ready")
    await wait_for(lambda: _ready(worker_port), timeout_s=60, what="worker ready")

    began = time.monotonic()
    sent = await asyncio.to_thread(
        subprocess.run,
        [
            str(Path(sys.executable).parent / "ca4"), "send",
            "--count", str(FLEET_REPORTS), "--rate", "0", "--sessions", str(FLEET_SESSIONS),
            "--batch-size", "100", "--concurrency", "8", "--seed", "10",
            "--url", f"http://127.0.0.1:{processor_port}", "--api-key", DEV_KEY,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr
    sending_s = time.monotonic() - began
    await wait_for(
        _counter(database, FLEET_REPORTS),  # type: ignore[arg-type]
        timeout_s=600,
        what=f"{FLEET_REPORTS} stored",
    )

    async def projected() -> bool:
        return await projected_sample_total(database) >= FLEET_REPORTS

    await wait_for(projected, timeout_s=300, what=f"{FLEET_REPORTS} projected")
    took_s = time.monotonic() - began

    per_session: Counter[str] = Counter()
    async for doc in database["events"].find({}, {"session_id": 1}):
        per_session[doc["session_id"]] += 1
    sessions = {doc["_id"]: doc async for doc in database["sessions"].find({})}
    assert sum(per_session.values()) == FLEET_REPORTS
    assert len(sessions) == FLEET_SESSIONS
    assert {key: doc["sample_count"] for key, doc in sessions.items()} == dict(per_session)
    gpus = await database["gpus"].count_documents({})
    assert gpus >= 2 * FLEET_SESSIONS  # several GPUs each
    worker_log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "database call timed out" not in worker_log
    assert "refused, isolating the poison" not in worker_log
    print(
        f"fleet: {FLEET_REPORTS} reports from {FLEET_SESSIONS} sessions ({gpus} GPUs) sent in "
        f"{sending_s:.0f} s, all stored and projected {took_s:.0f} s after the first was sent"
    )
