"""Against the real broker, frozen: while Kafka answers nothing, a tenant's reports waiting for
it are bounded (``429`` past its share, at once), another tenant is still let in, and what was
let in is published once Kafka answers again."""

from __future__ import annotations

import asyncio
import hashlib
import json

import httpx
import pytest
from ca4_processor.body import body_weight

from tests.integration.processor.conftest import start_processor
from tests.support.devstack import DevstackControl
from tests.support.kafka import TopicReader
from tests.support.reports import make_report
from tests.support.services import Endpoints

pytestmark = [pytest.mark.kafka, pytest.mark.disruptive, pytest.mark.slow]

KEYS = {"alice": "alice-key-0123456789", "bob": "bob-key-0123456789ab"}
KEY_HASHES = ",".join(
    f"{key_id}:{hashlib.sha256(key.encode()).hexdigest()}:tests-{key_id}"
    for key_id, key in KEYS.items()
)


def _body(session_id: str) -> bytes:
    return json.dumps(make_report(session_id=session_id)).encode()


def _headers(key_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[key_id]}", "Content-Type": "application/json"}


async def test_reports_waiting_for_a_stalled_kafka_are_bounded_per_tenant(
    services: Endpoints, topic_name: str, devstack: DevstackControl
) -> None:
    run = topic_name[-8:]  # session claims outlive the test: ids of this run's own
    weight = body_weight(_body(f"session-a0-{run}"))
    lifespan, client = await start_processor(
        services,
        topic_name,
        API_KEY_HASHES=KEY_HASHES,
        PUBLISH_TIMEOUT_S=60.0,
        MAX_WAITING_WEIGHT_PER_TENANT=2 * weight + weight // 2,
    )
    try:
        warm_up = await _post(client, "bob", f"session-warm-{run}")
        async with devstack.paused("kafka"):
            waiting = [
                asyncio.create_task(_post(client, "alice", f"session-a{n}-{run}")) for n in range(2)
            ]
            waiting.append(asyncio.create_task(_post(client, "bob", f"session-b0-{run}")))
            await asyncio.sleep(1.0)
            # Answered at once: before the bound, it waited with the others.
            over_share = await asyncio.wait_for(_post(client, "alice", f"session-a2-{run}"), 5)
            stalled = not any(task.done() for task in waiting)
        answered = await asyncio.wait_for(asyncio.gather(*waiting), timeout=60)
        after = await _post(client, "alice", f"session-a3-{run}")
    finally:
        await client.aclose()
        await asyncio.wait_for(lifespan.__aexit__(None, None, None), timeout=30)

    assert warm_up.status_code == 202, warm_up.text
    assert stalled, "a report was answered while Kafka was stopped"
    assert over_share.status_code == 429, over_share.text
    assert over_share.json()["detail"].startswith(
        f"tenant 'tests-alice' already has reports weighing {2 * weight} bytes waiting for "
        "Kafka here"
    )
    assert [response.status_code for response in answered] == [202, 202, 202]
    assert after.status_code == 202, after.text
    records = await TopicReader(services.kafka_bootstrap_servers, topic_name).read(
        expected=5, timeout_s=30
    )
    sessions = sorted(json.loads(record.value)["session_id"] for record in records)
    expected = ["session-a0", "session-a1", "session-a3", "session-b0", "session-warm"]
    assert sessions == [f"{session}-{run}" for session in expected]


async def _post(client: httpx.AsyncClient, key_id: str, session_id: str) -> httpx.Response:
    return await client.post("/v1/metadata", content=_body(session_id), headers=_headers(key_id))
