"""A gzip body pays for what it decompresses to as it is decompressed: a few kilobytes on the
wire can decompress and weigh to megabytes, and that work used to cost one token when the body
was then refused."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any

from ca4_processor.body import GUNZIP_SLICE, body_weight

from tests.support.reports import make_report
from tests.unit.processor.conftest import DEV_HEADERS

GZIP_HEADERS = {**DEV_HEADERS, "Content-Type": "application/json", "Content-Encoding": "gzip"}
TOKEN_WEIGHT = 16 * 1024
SPACES = 6 * 1024 * 1024
"""A body of spaces (weight one per byte) past the 5 MiB decompressed cap: 5 KiB on the wire."""


async def test_a_body_refused_after_decompression_has_paid_for_what_was_decompressed(
    make_client: Callable[..., Any],
) -> None:
    bomb = gzip.compress(b" " * SPACES, compresslevel=9)
    async with make_client(RATE_LIMIT_PER_SECOND=1, RATE_LIMIT_BURST=400) as (client, _app):
        first = await client.post("/v1/metadata/batch", content=bomb, headers=GZIP_HEADERS)
        second = await client.post("/v1/metadata/batch", content=bomb, headers=GZIP_HEADERS)
        small = await client.post("/v1/metadata", json=make_report(), headers=DEV_HEADERS)

    assert len(bomb) < 10_000
    assert first.status_code == 413, first.text
    assert first.json()["detail"] == "decompressed body is over the 5242880-byte limit"
    # The first paid one token and then the 5 MiB and one byte it decompressed (321 tokens),
    # so the second finds the bucket short a few slices in; a small report still fits.
    assert second.status_code == 429, second.text
    assert "rate limit of 1 tokens/s for key 'dev' exceeded" in second.json()["detail"]
    assert small.status_code == 202


async def test_a_gzip_body_within_the_caps_costs_its_weight_once(
    make_client: Callable[..., Any],
) -> None:
    """Paying as it decompresses takes the same tokens as paying once after: a valid batch of
    several slices, with a bucket of exactly its cost, is accepted and leaves nothing."""
    reports = [make_report(session_id=f"gz-{n}", gpus=8) for n in range(200)]
    decompressed = json.dumps({"reports": reports}).encode()
    gpus = sum(len(report["payload"]["gpus"]) for report in reports)
    cost = max(len(reports), -(-body_weight(decompressed) // TOKEN_WEIGHT), -(-gpus // 4))
    async with make_client(RATE_LIMIT_PER_SECOND=0.001, RATE_LIMIT_BURST=cost) as (client, _app):
        accepted = await client.post(
            "/v1/metadata/batch", content=gzip.compress(decompressed), headers=GZIP_HEADERS
        )
        after = await client.post("/v1/metadata", json=make_report(), headers=DEV_HEADERS)

    assert len(decompressed) > 2 * GUNZIP_SLICE
    assert accepted.status_code == 202, accepted.text
    assert after.status_code == 429


async def test_a_body_that_ends_in_its_first_slice_pays_for_it_before_it_is_refused(
    make_client: Callable[..., Any],
) -> None:
    """289 bytes of gzip decompressing to 256 KiB of braces (21 MB of weight) paid one token
    for its 413 when slices were paid only before the next one."""
    braces = gzip.compress(b"{" * GUNZIP_SLICE, compresslevel=9)
    async with make_client(RATE_LIMIT_PER_SECOND=0.001, RATE_LIMIT_BURST=40) as (client, _app):
        answers = [
            await client.post("/v1/metadata/batch", content=braces, headers=GZIP_HEADERS)
            for _ in range(3)
        ]

    assert len(braces) < 1_000
    assert [answer.status_code for answer in answers] == [413, 413, 429]
    assert answers[0].json()["detail"].startswith("body weighs 21233664 bytes")
