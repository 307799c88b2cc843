"""The processor's keys: revocation by keys-file reload, scopes, rate limits, prod/dev rules.

The key ring itself (file format, tenants, scopes) is tested in ``tests/unit/auth``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from ca4_auth import ApiKeyRing
from ca4_processor.core.config import Settings
from ca4_processor.security import RateLimiter
from pydantic import ValidationError

from tests.support.reports import make_report
from tests.unit.processor.conftest import DEV_HEADERS, FakePublisher


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
    assert "rate limit of 0.5 reports/s" in single.json()["detail"]
    assert len(fake_publisher.published) == 10


async def test_a_batch_the_bucket_cannot_pay_yet_is_429_and_costs_nothing_more(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    async with make_client(RATE_LIMIT_PER_SECOND=0.5, RATE_LIMIT_BURST=10) as (client, _app):
        first = await _post_batch(client, 6)
        second = await _post_batch(client, 6)
        smaller = await _post_batch(client, 2)

    assert (first.status_code, second.status_code, smaller.status_code) == (202, 429, 202)
    # 4 tokens were left and authentication took one; the retry needs 6: 3 more at 0.5/s.
    assert second.headers["retry-after"] == "6"
    assert "this request carries 6" in second.json()["detail"]
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


def test_token_bucket_refills_at_its_rate() -> None:
    limiter = RateLimiter(rate=10, burst=1)

    assert limiter.try_acquire("k", now=100.0) == 0
    assert limiter.try_acquire("k", now=100.05) == pytest.approx(0.05)
    assert limiter.try_acquire("k", now=100.11) == 0
    assert limiter.try_acquire("other", now=100.1) == 0


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
