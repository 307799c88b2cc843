"""The processor's keys: revocation by keys-file reload, scopes, rate limits, prod/dev rules.

The key ring itself (file format, tenants, scopes) is tested in ``tests/unit/auth``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from ca4_auth import ApiKey, ApiKeyRing, Scope
from ca4_processor.body import body_weight
from ca4_processor.core.config import Settings
from ca4_processor.security import RateLimits, RateRefusal
from pydantic import ValidationError

from tests.support.reports import make_report
from tests.unit.processor.conftest import DEV_HEADERS, FakePublisher, FakeSessionClaims

JSON_HEADERS = {**DEV_HEADERS, "Content-Type": "application/json"}


def _entry(key_id: str, key: str) -> str:
    return f"{key_id}:{hashlib.sha256(key.encode()).hexdigest()}"


async def test_removing_a_key_from_the_file_revokes_it(
    tmp_path: Path, make_client: Callable[..., Any]
) -> None:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(
        f"# mounted secret\n{_entry('colab', 'k-colab')}\n{_entry('ci', 'k-ci')}\n"
    )
    async with make_client(API_KEYS_FILE=keys_file, API_KEYS_RELOAD_INTERVAL_S=0.05) as (
        client,
        app,
    ):
        before = await client.post(
            "/v1/metadata", json=make_report(), headers={"Authorization": "Bearer k-colab"}
        )
        keys_file.write_text(f"{_entry('ci', 'k-ci')}\n")
        await app.state.key_ring.reload()
        after = await client.post(
            "/v1/metadata", json=make_report(), headers={"Authorization": "Bearer k-colab"}
        )
        still = await client.post(
            "/v1/metadata",
            json=make_report(session_id="ci-session"),
            headers={"Authorization": "Bearer k-ci"},
        )

    assert before.status_code == 202
    assert after.status_code == 401
    assert after.json() == {"detail": "invalid or revoked API key"}
    assert still.status_code == 202


async def test_rate_limit_answers_429_with_retry_after(make_client: Callable[..., Any]) -> None:
    async with make_client(RATE_LIMIT_PER_SECOND=0.5, RATE_LIMIT_BURST=2) as (client, _app):
        statuses = [
            (
                await client.post(
                    "/v1/metadata",
                    json=make_report(),
                    headers={"Authorization": "Bearer ca4-dev-key"},
                )
            )
            for _ in range(3)
        ]

    assert [r.status_code for r in statuses] == [202, 202, 429]
    assert statuses[2].headers["retry-after"] == "2"
    assert "rate limit" in statuses[2].json()["detail"]


async def _post_batch(client: httpx.AsyncClient, reports: int) -> httpx.Response:
    return await client.post(
        "/v1/metadata/batch",
        json={"reports": [make_report() for _ in range(reports)]},
        headers=DEV_HEADERS,
    )


async def test_a_batch_costs_one_token_per_report(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    async with make_client(RATE_LIMIT_PER_SECOND=0.5, RATE_LIMIT_BURST=10) as (client, _app):
        batch = await _post_batch(client, 10)
        single = await client.post("/v1/metadata", json=make_report(), headers=DEV_HEADERS)

    assert batch.status_code == 202
    assert single.status_code == 429
    assert single.json()["detail"] == (
        "rate limit of 0.5 tokens/s for key 'dev' exceeded (this request costs 1: one per "
        "report, per 16384 bytes of body weight or per 4 GPUs, whichever is most); retry "
        "after the Retry-After seconds"
    )
    assert len(fake_publisher.published) == 10


async def test_a_batch_the_bucket_cannot_pay_yet_is_429_and_costs_nothing_more(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    async with make_client(RATE_LIMIT_PER_SECOND=0.5, RATE_LIMIT_BURST=10) as (client, _app):
        first = await _post_batch(client, 6)
        second = await _post_batch(client, 6)
        smaller = await _post_batch(client, 2)

    assert (first.status_code, second.status_code, smaller.status_code) == (202, 429, 202)
    # 4 tokens were left; the second paid 2 (its first, and one more for its weight of just
    # over 16 KiB) and needs 4 more: 4 s for those at 0.5/s, and 4 s for the 2 its retry pays
    # again (a Retry-After of 6 s sent a retry that could never fit while the bucket was short).
    assert second.headers["retry-after"] == "8"
    assert "this request costs 6:" in second.json()["detail"]
    assert len(fake_publisher.published) == 8


async def test_a_batch_larger_than_the_burst_is_413_never_429(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    async with make_client(RATE_LIMIT_PER_SECOND=0.5, RATE_LIMIT_BURST=10) as (client, _app):
        response = await _post_batch(client, 11)

    assert response.status_code == 413
    assert response.json() == {
        "detail": "11 reports in one request are more than the rate-limit burst of 10 reports "
        "for key 'dev'; send at most 10 per request"
    }
    assert "retry-after" not in response.headers
    assert fake_publisher.published == []


async def test_a_body_that_fails_validation_still_pays_for_its_weight(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    """A batch refused whole (here by an unknown top-level key, as by 501 reports) cost one
    token, whatever validating it cost: one key could keep a processor's event loop busy."""
    body = {"reports": [make_report() for _ in range(20)], "x": 1}
    settings = {"RATE_LIMIT_PER_SECOND": 0.5, "RATE_LIMIT_BURST": 40}
    async with make_client(RATE_LIMIT_TOKEN_WEIGHT=2048, **settings) as (client, _app):
        refused = await client.post("/v1/metadata/batch", json=body, headers=DEV_HEADERS)
        then = await _post_batch(client, 10)

    assert refused.status_code == 422
    assert then.status_code == 429
    assert fake_publisher.published == []


async def test_a_body_heavier_than_the_burst_is_413_before_validation(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    body = httpx.Request("POST", "/", json={"reports": [make_report() for _ in range(4)]})
    settings = {"RATE_LIMIT_PER_SECOND": 0.5, "RATE_LIMIT_BURST": 10}
    async with make_client(RATE_LIMIT_TOKEN_WEIGHT=1024, **settings) as (client, _app):
        response = await client.post(
            "/v1/metadata/batch", content=body.read(), headers=JSON_HEADERS
        )

    assert response.status_code == 413
    assert response.json()["detail"].startswith("a body weighing ")
    assert response.json()["detail"].endswith(
        " tokens (one per 1024 bytes of weight), more than the rate-limit burst of 10 for key "
        "'dev'; send fewer reports per request"
    )
    assert fake_publisher.published == []


async def test_heavy_reports_cost_their_weight(make_client: Callable[..., Any]) -> None:
    """Four reports of about 2 KiB of weight each, at 1 KiB a token, cost their weight (more
    than four tokens), and the bucket is then empty."""
    body = json.dumps({"reports": [make_report() for _ in range(4)]}).encode()
    tokens = -(-body_weight(body) // 1024)
    assert tokens > 4
    async with make_client(
        RATE_LIMIT_PER_SECOND=0.5, RATE_LIMIT_BURST=tokens, RATE_LIMIT_TOKEN_WEIGHT=1024
    ) as (client, _app):
        first = await client.post("/v1/metadata/batch", content=body, headers=JSON_HEADERS)
        second = await client.post("/v1/metadata", json=make_report(), headers=DEV_HEADERS)

    assert first.status_code == 202
    assert second.status_code == 429


def _minimal_gpus(count: int) -> list[dict[str, Any]]:
    """GPUs with only the required fields: the lightest way to send many."""
    return [
        {key: value for key, value in gpu.items() if key in {"uuid", "name", "index"}}
        for gpu in make_report(gpus=count)["payload"]["gpus"]
    ]


async def test_a_report_pays_for_its_gpus_not_only_its_weight(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    """A 64-GPU report with only the required fields weighed two tokens, and cost the worker
    32 GPU documents and 5-6 ms of CPU per token: now one token per 4 GPUs."""
    report = make_report()
    report["payload"]["gpus"] = _minimal_gpus(64)
    body = json.dumps(report).encode()
    assert -(-body_weight(body) // (16 * 1024)) <= 2  # what it paid before
    async with make_client(RATE_LIMIT_PER_SECOND=0.5, RATE_LIMIT_BURST=16) as (client, _app):
        first = await client.post("/v1/metadata", content=body, headers=JSON_HEADERS)
        second = await client.post("/v1/metadata", json=make_report(), headers=DEV_HEADERS)

    assert first.status_code == 202
    assert second.status_code == 429  # the 64 GPUs took the whole bucket of 16
    assert len(fake_publisher.published) == 1


async def test_a_batch_pays_for_the_gpus_of_its_reports(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    reports = [make_report(gpus=1) for _ in range(3)]
    reports[0]["payload"]["gpus"] = _minimal_gpus(40)
    async with make_client(RATE_LIMIT_PER_SECOND=0.5, RATE_LIMIT_BURST=12) as (client, _app):
        response = await client.post(
            "/v1/metadata/batch", json={"reports": reports}, headers=DEV_HEADERS
        )

    # 42 GPUs cost 11 tokens: more than the 3 reports or the weight, within the burst
    assert response.status_code == 202
    async with make_client(RATE_LIMIT_PER_SECOND=0.5, RATE_LIMIT_BURST=10) as (client, _app):
        refused = await client.post(
            "/v1/metadata/batch", json={"reports": reports}, headers=DEV_HEADERS
        )

    assert refused.status_code == 413
    assert refused.json()["detail"] == (
        "reports of 42 GPUs in all cost 11 tokens (one per 4 GPUs), more than the rate-limit "
        "burst of 10 for key 'dev'; send fewer reports per request"
    )
    assert len(fake_publisher.published) == 3


class _StalledBody:
    """A request body that sends its first bytes, then waits for ``release``."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"reports": ['
        await self.release.wait()
        yield json.dumps(make_report()).encode() + b"]}"


@contextlib.asynccontextmanager
async def _stalled_uploads(client: Any, count: int) -> AsyncIterator[list[Any]]:
    """``count`` batch uploads of the dev key parked mid-body while the block runs; then
    released, and their answers in the yielded list."""
    stalled = [_StalledBody() for _ in range(count)]
    parked = [
        asyncio.create_task(client.post("/v1/metadata/batch", content=body, headers=JSON_HEADERS))
        for body in stalled
    ]
    await asyncio.sleep(0.1)
    answers: list[Any] = []
    try:
        yield answers
    finally:
        for body in stalled:
            body.release.set()
        answers.extend([await task for task in parked])


async def test_a_key_with_too_many_requests_in_flight_gets_429(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    async with make_client(MAX_REQUESTS_IN_FLIGHT_PER_TENANT=2) as (client, _app):
        async with _stalled_uploads(client, 2) as answered:
            third = await client.post("/v1/metadata", json=make_report(), headers=DEV_HEADERS)
        after = await client.post("/v1/metadata", json=make_report(), headers=DEV_HEADERS)

    assert third.status_code == 429
    assert third.json() == {
        "detail": "tenant 'dev' already has 2 requests in flight here "
        "(MAX_REQUESTS_IN_FLIGHT_PER_TENANT, all its keys together); retry after the "
        "Retry-After seconds"
    }
    assert third.headers["retry-after"] == "1"
    assert [response.status_code for response in answered] == [202, 202]
    assert after.status_code == 202
    assert len(fake_publisher.published) == 3


async def test_waiting_on_kafka_holds_no_in_flight_slot(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    """A shared team key: 32 notebooks reporting at once while Kafka takes 50 ms to
    acknowledge got 16 ``202`` and 16 ``429`` while the slot was held until the answer. The slot
    covers reading and validating the body only, which 17 stalled uploads still overfill."""
    fake_publisher.delay_s = 0.05
    async with make_client() as (client, _app):
        notebooks = await asyncio.gather(
            *(
                client.post(
                    "/v1/metadata", json=make_report(session_id=f"nb-{n}"), headers=DEV_HEADERS
                )
                for n in range(32)
            )
        )
        async with _stalled_uploads(client, 16) as uploaded:
            seventeenth = await client.post("/v1/metadata", json=make_report(), headers=DEV_HEADERS)

    assert [response.status_code for response in notebooks] == [202] * 32
    assert seventeenth.status_code == 429
    assert seventeenth.json() == {
        "detail": "tenant 'dev' already has 16 requests in flight here "
        "(MAX_REQUESTS_IN_FLIGHT_PER_TENANT, all its keys together); retry after the "
        "Retry-After seconds"
    }
    assert [response.status_code for response in uploaded] == [202] * 16
    assert len(fake_publisher.published) == 48


class _BrokenBody:
    """A request body whose connection breaks after its first bytes."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"reports": ['
        raise ConnectionResetError("peer went away")


async def test_every_way_a_request_ends_gives_its_in_flight_slot_back(
    make_client: Callable[..., Any], fake_publisher: FakePublisher, fake_claims: FakeSessionClaims
) -> None:
    fake_claims.owners["theirs"] = "another-tenant"
    async with make_client(MAX_REQUESTS_IN_FLIGHT_PER_TENANT=1) as (client, _app):
        statuses = [
            (await client.post("/v1/metadata", content=body, headers=JSON_HEADERS)).status_code
            for body in (b"{", b"[]", b"[" * 300_000)
        ]
        with pytest.raises(ConnectionResetError):
            await client.post("/v1/metadata/batch", content=_BrokenBody(), headers=JSON_HEADERS)
        forbidden = await client.post(
            "/v1/metadata", json=make_report(session_id="theirs"), headers=DEV_HEADERS
        )
        fake_publisher.available = False
        unavailable = await client.post("/v1/metadata", json=make_report(), headers=DEV_HEADERS)
        fake_publisher.available = True
        accepted = await client.post("/v1/metadata", json=make_report(), headers=DEV_HEADERS)

    assert statuses == [422, 422, 413]
    assert (forbidden.status_code, unavailable.status_code) == (403, 503)
    assert accepted.status_code == 202


async def test_a_body_not_received_in_time_is_408(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    async with make_client(BODY_READ_TIMEOUT_S=0.2) as (client, _app):
        stalled = _StalledBody()
        response = await client.post("/v1/metadata/batch", content=stalled, headers=JSON_HEADERS)
        stalled.release.set()

    assert response.status_code == 408
    assert response.json() == {"detail": "body not received within 0.2 s (13 bytes arrived)"}
    assert fake_publisher.published == []


def _key(key_id: str, tenant: str) -> ApiKey:
    return ApiKey(key_id, tenant, frozenset({Scope.WRITE}))


def test_token_bucket_refills_at_its_rate() -> None:
    limits = RateLimits.create(rate=10, burst=1, tenant_keys=2)
    key, other = _key("k", "t"), _key("other", "u")

    assert limits.try_acquire(key, now=100.0) is None
    refusal = limits.try_acquire(key, now=100.05)
    assert refusal == RateRefusal(pytest.approx(0.05), 10, "key 'k'")  # type: ignore[arg-type]
    assert limits.try_acquire(key, now=100.11) is None
    assert limits.try_acquire(other, now=100.1) is None


def test_a_tenants_keys_share_its_bucket_and_a_refusal_takes_from_neither() -> None:
    # Before the tenant bucket, each key a tenant was handed had a whole limit of its own: ten
    # keys, ten times the share of the processors and the worker.
    limits = RateLimits.create(rate=10, burst=4, tenant_keys=1.5)  # the tenant's: 15/s, 6
    first, second, third = _key("a", "t"), _key("b", "t"), _key("c", "t")

    assert limits.try_acquire(first, tokens=4, now=100.0) is None
    assert limits.try_acquire(second, tokens=2, now=100.0) is None
    refusal = limits.try_acquire(third, tokens=1, now=100.0)
    assert refusal == RateRefusal(
        pytest.approx(1 / 15),  # type: ignore[arg-type]
        15,
        "tenant 't' (all its keys together)",
    )
    assert limits.per_key.wait_for("c", 4, now=100.0) == 0  # the refused key paid nothing
    assert limits.try_acquire(_key("x", "other-tenant"), tokens=4, now=100.0) is None
    assert limits.try_acquire(third, tokens=1, now=100.07) is None


async def test_a_tenants_keys_share_its_rate_limit_and_in_flight_slots(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    keys = {"a": "key-a-0123456789", "b": "key-b-0123456789", "x": "key-x-0123456789"}
    tenants = {"a": "team", "b": "team", "x": "other"}
    hashes = ",".join(f"{_entry(k, v)}:{tenants[k]}" for k, v in keys.items())

    def headers(key_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys[key_id]}"}

    settings = {"RATE_LIMIT_PER_SECOND": 0.001, "RATE_LIMIT_BURST": 2}
    async with make_client(API_KEY_HASHES=hashes, RATE_LIMIT_TENANT_KEYS=1.5, **settings) as (
        client,
        _app,
    ):
        spent = [
            await client.post("/v1/metadata", json=make_report(session_id=f"s-{n}"), headers=h)
            for n, h in enumerate([headers("a"), headers("a"), headers("b")])
        ]
        over = await client.post("/v1/metadata", json=make_report(), headers=headers("b"))
        other = await client.post(
            "/v1/metadata", json=make_report(session_id="s-x"), headers=headers("x")
        )
    async with make_client(
        API_KEY_HASHES=hashes, RATE_LIMIT_PER_SECOND=0, MAX_REQUESTS_IN_FLIGHT_PER_TENANT=1
    ) as (client, _app):
        stalled = _StalledBody()
        parked = asyncio.create_task(
            client.post(
                "/v1/metadata/batch",
                content=stalled,
                headers={**headers("a"), "Content-Type": "application/json"},
            )
        )
        await asyncio.sleep(0.1)
        second_key = await client.post(
            "/v1/metadata", json=make_report(session_id="s-b"), headers=headers("b")
        )
        other_tenant = await client.post(
            "/v1/metadata", json=make_report(session_id="s-x2"), headers=headers("x")
        )
        stalled.release.set()
        await parked

    assert [response.status_code for response in spent] == [202] * 3
    assert over.status_code == 429  # key b has a token left, its tenant none
    assert over.json()["detail"].startswith(
        "rate limit of 0.0015 tokens/s for tenant 'team' (all its keys together) exceeded"
    )
    assert other.status_code == 202
    assert second_key.status_code == 429
    assert "tenant 'team' already has 1 requests in flight" in second_key.json()["detail"]
    assert other_tenant.status_code == 202


def test_prod_without_keys_refuses_to_start() -> None:
    with pytest.raises(ValidationError, match="CA4_ENVIRONMENT=prod needs API keys"):
        Settings(ENVIRONMENT="prod", API_KEY_HASHES="", API_KEYS_FILE=None)


def test_dev_without_keys_accepts_the_dev_key() -> None:
    settings = Settings(ENVIRONMENT="dev", API_KEY_HASHES="", API_KEYS_FILE=None)

    ring = ApiKeyRing.configured(
        environment=settings.ENVIRONMENT,
        inline_hashes=settings.API_KEY_HASHES,
        keys_file=settings.API_KEYS_FILE,
    )

    assert settings.uses_dev_key
    key = ring.identify("ca4-dev-key")
    assert key is not None
    assert (key.key_id, key.tenant, sorted(key.scopes)) == ("dev", "dev", ["read", "write"])


@pytest.mark.parametrize("placeholder", ["changethis", "ca4-dev-key", "secret"])
def test_placeholder_keys_are_refused(placeholder: str) -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(ENVIRONMENT="prod", API_KEY_HASHES=_entry("prod", placeholder))


def test_a_burst_that_cannot_pay_for_the_largest_report_is_flagged() -> None:
    # A report of 64 GPUs costs 16 tokens: a smaller burst makes it 413 for good.
    assert Settings(RATE_LIMIT_BURST=15).burst_short_of == 16
    assert Settings(RATE_LIMIT_BURST=16).burst_short_of is None
    assert Settings(RATE_LIMIT_BURST=15, RATE_LIMIT_GPUS_PER_TOKEN=8).burst_short_of is None
    assert Settings(RATE_LIMIT_BURST=1, RATE_LIMIT_PER_SECOND=0).burst_short_of is None
