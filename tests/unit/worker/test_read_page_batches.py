"""How many documents a page of the read API fetches a round trip (``MongoReadModels``): the
driver decodes a whole reply before the first document is read, so a batch is what one read
holds in memory however early the page's byte bound cuts it."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any, Self, cast

import bson
import pytest
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from ca4_worker.application.views import GpuQuery
from ca4_worker.persistence.documents import GPUS, SESSIONS, Doc
from ca4_worker.persistence.memory import InMemoryProjections
from ca4_worker.persistence.queries import PAGE_FETCH_BATCH, MongoReadModels, page_fetch_batch
from pymongo.asynchronous.database import AsyncDatabase

from tests.unit.worker.factories import TENANT_A, gpu_sample, positioned

PAGE_MAX_BYTES = 1024 * 1024
"""``CA4_READ_PAGE_MAX_BYTES``'s default."""
HEAVY_BYTES = 163_000
"""About the BSON of a crafted GPU document (many processes with long names)."""


class FakeCursor:
    """A find cursor that replies as the driver fetches: ``batch_size`` documents a round trip
    (fewer where the limit leaves fewer), the whole reply at once."""

    def __init__(self, docs: list[RawBSONDocument], replies: list[list[int]]) -> None:
        self._docs = docs
        self._limit = 0
        self._batch = 0
        self._replies = replies

    def sort(self, *_: Any) -> Self:
        return self

    def limit(self, limit: int) -> Self:
        self._limit = limit
        return self

    def batch_size(self, batch: int) -> Self:
        self._batch = batch
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[RawBSONDocument]:
        return self._rows()

    async def _rows(self) -> AsyncIterator[RawBSONDocument]:
        sent = 0
        wanted = min(self._limit, len(self._docs))
        while sent < wanted:
            reply = self._docs[sent : sent + min(self._batch or wanted, wanted - sent)]
            self._replies.append([len(doc.raw) for doc in reply])  # decoded before the first
            for doc in reply:
                yield doc
            sent += len(reply)


class FakeCollection:
    """The ``gpus`` collection of ``docs`` in id order, recording each reply's documents."""

    def __init__(self, docs: list[Doc]) -> None:
        self.codec_options: CodecOptions[Any] = CodecOptions(tz_aware=True)
        self.docs = [
            RawBSONDocument(bson.encode(doc)) for doc in sorted(docs, key=lambda d: d["_id"])
        ]
        self.replies: list[list[int]] = []
        """Per round trip, the byte size of each document in its reply."""

    def with_options(self, **_: Any) -> Self:
        return self

    def find(self, _conditions: Doc, _projection: Doc | None = None) -> FakeCursor:
        return FakeCursor(self.docs, self.replies)


async def _gpu_docs(count: int, pad_bytes: int) -> list[Doc]:
    """``count`` GPU documents of one tenant, each padded to about ``pad_bytes`` of BSON."""
    projections = InMemoryProjections()
    events = [
        positioned(
            0,
            index,
            session_id=f"s{index}",
            tenant=TENANT_A,
            gpus=[gpu_sample(0, uuid_=f"GPU-{index:04d}")],
        )
        for index in range(count)
    ]
    await projections.apply(events)
    return [doc | {"pad": "x" * pad_bytes} for doc in projections.gpu_docs.values()]


def _models(gpus: FakeCollection) -> MongoReadModels:
    database = {GPUS: gpus, SESSIONS: FakeCollection([])}
    return MongoReadModels(cast(AsyncDatabase[Doc], database))


@pytest.mark.parametrize(
    ("limit", "batch"), [(1, 2), (5, 6), (15, 16), (16, 16), (50, 16), (500, 16)]
)
def test_a_pages_round_trips_ask_for_few_documents(limit: int, batch: int) -> None:
    assert page_fetch_batch(limit) == batch <= PAGE_FETCH_BATCH


async def test_a_page_of_heavy_gpus_decodes_a_small_batch_not_fifty() -> None:
    """A first batch of 50 crafted GPU documents decoded 8 MB for a page that the byte bound
    cut at about 6 of them."""
    gpus = FakeCollection(await _gpu_docs(60, HEAVY_BYTES))
    page = await _models(gpus).gpus(GpuQuery(tenant=TENANT_A, limit=50, max_bytes=PAGE_MAX_BYTES))

    assert len(page.items) == math.ceil(PAGE_MAX_BYTES / HEAVY_BYTES)
    assert page.next_cursor is not None
    assert [len(reply) for reply in gpus.replies] == [16]
    assert sum(gpus.replies[0]) < 3 * 1024 * 1024


async def test_a_full_page_of_light_gpus_takes_a_bounded_number_of_round_trips() -> None:
    gpus = FakeCollection(await _gpu_docs(600, 1_000))
    default = await _models(gpus).gpus(GpuQuery(tenant=TENANT_A, limit=50))
    default_trips = len(gpus.replies)
    gpus.replies.clear()
    largest = await _models(gpus).gpus(
        GpuQuery(tenant=TENANT_A, limit=500, max_bytes=PAGE_MAX_BYTES)
    )

    assert (len(default.items), default_trips) == (50, 4)  # 51 documents: 16, 16, 16, 3
    assert (len(largest.items), len(gpus.replies)) == (500, 32)
    assert max(len(reply) for reply in gpus.replies) == PAGE_FETCH_BATCH
