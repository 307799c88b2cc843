"""The archive's S3 calls against a server that accepts connections and never answers (a black
hole): each must fail as an outage within the store's deadline, never wait for good."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from ca4_worker.application.ports import UnavailableError
from ca4_worker.persistence.s3 import S3ObjectStore


@pytest.fixture
async def black_hole() -> AsyncIterator[str]:
    """``http://host:port`` of a listener that accepts and then neither reads nor writes."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.transport.abort()
        server.close()


CALLS: dict[str, Callable[[S3ObjectStore], Awaitable[object]]] = {
    "put": lambda store: store.put("audit/object.ndjson.gz", b"x"),
    "get": lambda store: store.get("audit/object.ndjson.gz"),
    "list": lambda store: store.list_keys("audit/"),
    "ensure_bucket": lambda store: store.ensure_bucket(),
}


@pytest.mark.parametrize("call", sorted(CALLS))
async def test_an_s3_call_to_a_black_hole_fails_as_an_outage_within_its_deadline(
    black_hole: str, call: str
) -> None:
    """``put`` waited for good here although botocore's read timeout was 0.3 s (the archive
    stopped, with no retry logged); each call now has a deadline of every attempt's connect and
    read timeouts."""
    store = S3ObjectStore(
        bucket="audit",
        endpoint_url=black_hole,
        region="us-east-1",
        access_key_id="audit",
        secret_access_key="audit-secret",
        connect_timeout_s=0.2,
        read_timeout_s=0.3,
    )
    assert store.deadline_s == pytest.approx(1.0)
    async with store:
        started = time.monotonic()
        calling = asyncio.ensure_future(CALLS[call](store))
        done, _ = await asyncio.wait([calling], timeout=10)
        assert done, f"{call} still waiting after 10 s"
        with pytest.raises(UnavailableError):
            calling.result()
    assert time.monotonic() - started < 5
