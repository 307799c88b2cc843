"""Reports waiting for Kafka are bounded per key and per process: while Kafka answers slowly,
a key holder cannot make the processor hold more than its share of decoded reports, and other
keys are still served."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from typing import Any

import httpx
from ca4_processor.body import body_weight

from tests.support.reports import make_report
from tests.unit.processor.conftest import FakePublisher, FakeSessionClaims

KEYS = {"alice": "alice-key-0123456789", "bob": "bob-key-0123456789ab"}
KEY_HASHES = ",".join(
    f"{key_id}:{hashlib.sha256(key.encode()).hexdigest()}:{key_id}-tenant"
    for key_id, key in KEYS.items()
)


def _headers(key_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[key_id]}", "Content-Type": "application/json"}


def _headers_dev() -> dict[str, str]:
    return {"Authorization": "Bearer ca4-dev-key", "Content-Type": "application/json"}


def _report_body(session_id: str) -> bytes:
    return json.dumps(make_report(session_id=session_id)).encode()


WEIGHT = body_weight(_report_body("session-00"))
"""The weight of one report of the tests' shape (session ids of the same length)."""


def _bounded(make_client: Callable[..., Any], *, per_key: int, total: int) -> Any:
    """The app with both keys, no rate limit, and room for ``per_key`` reports of one key and
    ``total`` of both to wait (half a report more, so small differences in size don't matter)."""
    return make_client(
        API_KEY_HASHES=KEY_HASHES,
        RATE_LIMIT_PER_SECOND=0,
        MAX_WAITING_WEIGHT_PER_TENANT=per_key * WEIGHT + WEIGHT // 2,
        MAX_WAITING_WEIGHT=total * WEIGHT + WEIGHT // 2,
    )


def _post(client: httpx.AsyncClient, key_id: str, session_id: str) -> asyncio.Task[Any]:
    return asyncio.create_task(
        client.post("/v1/metadata", content=_report_body(session_id), headers=_headers(key_id))
    )


async def test_a_key_over_its_waiting_share_gets_429_and_other_keys_are_still_served(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    fake_publisher.acknowledging.clear()  # Kafka answers nothing for now
    async with _bounded(make_client, per_key=3, total=5) as (client, app):
        waiting = [_post(client, "alice", f"session-a{n}") for n in range(3)]
        await fake_publisher.holding(3)
        over_share = await client.post(
            "/v1/metadata", content=_report_body("session-a3"), headers=_headers("alice")
        )
        other_key = _post(client, "bob", "session-b0")
        # Bob's report waiting for Kafka too, however long its way there took (a fixed 0.1 s
        # read the weight before it was added on a loaded machine).
        await fake_publisher.holding(4)
        held = app.state.waiting.total

        fake_publisher.acknowledging.set()
        answered = [await task for task in [*waiting, other_key]]
        after = await client.post(
            "/v1/metadata", content=_report_body("session-a4"), headers=_headers("alice")
        )

    assert over_share.status_code == 429
    assert over_share.headers["retry-after"] == "5"
    assert over_share.json() == {
        "detail": f"tenant 'alice-tenant' already has reports weighing {3 * WEIGHT} bytes "
        "waiting for Kafka here, and this request's "
        f"{WEIGHT} would take it over MAX_WAITING_WEIGHT_PER_TENANT ({3 * WEIGHT + WEIGHT // 2}, "
        "all its keys together); nothing was accepted, retry after the Retry-After seconds"
    }
    assert held == 4 * WEIGHT
    assert [response.status_code for response in answered] == [202] * 4
    assert after.status_code == 202
    published = {event.session_id for event in fake_publisher.published}
    assert published == {"session-a0", "session-a1", "session-a2", "session-b0", "session-a4"}


async def test_past_the_process_wide_bound_every_key_gets_503(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    fake_publisher.acknowledging.clear()
    async with _bounded(make_client, per_key=3, total=4) as (client, app):
        waiting = [_post(client, "alice", f"session-a{n}") for n in range(3)]
        waiting.append(_post(client, "bob", "session-b0"))
        await asyncio.sleep(0.1)
        full = await client.post(
            "/v1/metadata", content=_report_body("session-b1"), headers=_headers("bob")
        )
        fake_publisher.acknowledging.set()
        answered = [await task for task in waiting]
        registry = app.state.metrics.registry
        outcomes = {
            outcome: registry.get_sample_value("ca4_ingest_events_total", {"outcome": outcome})
            for outcome in ("accepted", "rejected", "unavailable")
        }

    assert full.status_code == 503
    assert full.headers["retry-after"] == "5"
    assert full.json() == {
        "detail": f"this processor already holds reports weighing {4 * WEIGHT} bytes waiting "
        f"for Kafka (MAX_WAITING_WEIGHT {4 * WEIGHT + WEIGHT // 2}); nothing was accepted, "
        "retry after the Retry-After seconds"
    }
    assert [response.status_code for response in answered] == [202] * 4
    assert "session-b1" not in {event.session_id for event in fake_publisher.published}
    # A slow Kafka is our side, not the client's: counted as unavailable, like its other 503s,
    # so CA4IngestUnavailableRatioHigh sees it (as rejected it raised the rejection alert).
    assert outcomes == {"accepted": 4, "rejected": 0, "unavailable": 1}


async def test_a_batch_heavier_than_the_bounds_is_taken_when_nothing_else_waits(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    """The bounds refuse what comes on top of other waiting reports, never one body for good:
    a batch heavier than both still goes through when it waits alone."""
    reports = [make_report(session_id=f"session-{n:02}") for n in range(20)]
    async with make_client(
        RATE_LIMIT_PER_SECOND=0,
        MAX_WAITING_WEIGHT_PER_TENANT=WEIGHT,
        MAX_WAITING_WEIGHT=WEIGHT,
    ) as (client, app):
        response = await client.post(
            "/v1/metadata/batch", json={"reports": reports}, headers=_headers_dev()
        )
        left = app.state.waiting.total

    assert response.status_code == 202, response.text
    assert len(fake_publisher.published) == 20
    assert left == 0


async def test_every_way_a_waiting_request_ends_gives_its_weight_back(
    make_client: Callable[..., Any], fake_publisher: FakePublisher, fake_claims: FakeSessionClaims
) -> None:
    fake_claims.owners["theirs"] = "another-tenant"
    async with make_client(RATE_LIMIT_PER_SECOND=0) as (client, app):
        forbidden = await client.post(
            "/v1/metadata", json=make_report(session_id="theirs"), headers=_headers_dev()
        )
        fake_claims.available = False
        owners_down = await client.post("/v1/metadata", json=make_report(), headers=_headers_dev())
        fake_claims.available = True
        fake_publisher.available = False
        kafka_down = await client.post(
            "/v1/metadata/batch", json={"reports": [make_report()]}, headers=_headers_dev()
        )
        fake_publisher.available = True
        fake_publisher.max_message_bytes = 10
        too_large = await client.post("/v1/metadata", json=make_report(), headers=_headers_dev())
        left = app.state.waiting.total

    assert [forbidden.status_code, owners_down.status_code] == [403, 503]
    assert [kafka_down.status_code, too_large.status_code] == [503, 413]
    assert left == 0


async def test_a_batch_refused_for_waiting_pays_for_its_reports_only_when_retried(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    """A refused batch is retried as it is (the SDK does): it pays the weight of what was read
    and validated, but its reports only once it may wait, so the retry fits the bucket the
    first try left."""
    token_weight = 16 * 1024
    first = json.dumps({"reports": [make_report(session_id=f"first-{n}") for n in range(5)]})
    second = json.dumps({"reports": [make_report(session_id=f"second-{n}") for n in range(40)]})
    first_cost = max(5, -(-body_weight(first.encode()) // token_weight))
    second_weight_cost = max(1, -(-body_weight(second.encode()) // token_weight))
    second_cost = max(40, second_weight_cost)
    fake_publisher.acknowledging.clear()
    async with make_client(
        RATE_LIMIT_PER_SECOND=0.001,
        RATE_LIMIT_BURST=first_cost + second_weight_cost + second_cost,
        MAX_WAITING_WEIGHT_PER_TENANT=body_weight(first.encode()),
    ) as (client, _app):
        batch = "/v1/metadata/batch"
        held = asyncio.create_task(client.post(batch, content=first, headers=_headers_dev()))
        await asyncio.sleep(0.1)
        refused = await client.post(batch, content=second, headers=_headers_dev())
        fake_publisher.acknowledging.set()
        accepted_first = await held
        retried = await client.post(batch, content=second, headers=_headers_dev())

    assert second_cost > second_weight_cost
    assert refused.status_code == 429, refused.text
    assert (accepted_first.status_code, retried.status_code) == (202, 202)
