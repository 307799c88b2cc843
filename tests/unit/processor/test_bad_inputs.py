"""Table-driven: each bad request gets the right 4xx and a clear message; nothing is published."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.unit.processor.bad_inputs import (
    BAD_REQUESTS,
    KEY_HASHES,
    MAX_BODY_BYTES,
    MAX_BODY_WEIGHT,
    BadRequest,
    error_text,
)
from tests.unit.processor.conftest import FakePublisher


@pytest.fixture
async def keyed_client(make_client: Callable[..., Any]) -> AsyncIterator[httpx.AsyncClient]:
    """An app that accepts only the table's key."""
    async with make_client(
        API_KEY_HASHES=KEY_HASHES,
        RATE_LIMIT_PER_SECOND=0,
        MAX_BODY_BYTES=MAX_BODY_BYTES,
        MAX_BODY_WEIGHT=MAX_BODY_WEIGHT,
    ) as (client, _app):
        yield client


async def send(client: httpx.AsyncClient, case: BadRequest) -> httpx.Response:
    """Send one table case the way a (misbehaving) client would."""
    if case.stream:

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(case.body), 64 * 1024):
                yield case.body[start : start + 64 * 1024]

        return await client.post(case.path, content=chunks(), headers=case.request_headers())
    return await client.post(case.path, content=case.body, headers=case.request_headers())


def test_the_table_is_big_enough() -> None:
    assert len(BAD_REQUESTS) >= 25


@pytest.mark.parametrize("case", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
async def test_bad_request_is_refused_and_nothing_is_published(
    keyed_client: httpx.AsyncClient, fake_publisher: FakePublisher, case: BadRequest
) -> None:
    response = await send(keyed_client, case)

    assert response.status_code == case.status, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    assert case.expect in error_text(response.json()), error_text(response.json())
    assert fake_publisher.published == []
