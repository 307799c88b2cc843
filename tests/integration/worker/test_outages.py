"""Outages: the database or S3 goes away (a TCP proxy the test cuts, so the shared dev stack
keeps running for everyone else) and the worker delays but loses and duplicates nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from ca4_worker.core.config import Settings
from ca4_worker.persistence.documents import Doc
from ca4_worker.persistence.s3 import S3ObjectStore
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.worker.checks import archived_positions, projected_sample_total
from tests.integration.worker.support import produce, running_worker, wait_for
from tests.integration.worker.test_worker_pipeline import good_events
from tests.support.kafka import read_topic
from tests.support.proxy import TcpProxy, proxy_to

pytestmark = [pytest.mark.kafka, pytest.mark.mongo, pytest.mark.s3, pytest.mark.slow]


@pytest.fixture
async def db_proxy(worker_settings: Settings) -> AsyncIterator[TcpProxy]:
    async with proxy_to(worker_settings.mongo_url) as proxy:
        yield proxy


@pytest.fixture
async def s3_proxy(worker_settings: Settings) -> AsyncIterator[TcpProxy]:
    async with proxy_to(worker_settings.s3_endpoint_url or "") as proxy:
        yield proxy


async def test_database_down_20s_delays_but_loses_nothing(
    worker_settings: Settings,
    database: AsyncDatabase[Doc],
    bucket: S3ObjectStore,
    db_proxy: TcpProxy,
) -> None:
    settings = worker_settings.model_copy(
        update={"mongo_url": f"mongodb://127.0.0.1:{db_proxy.port}/?directConnection=true"}
    )
    bootstrap, topic = settings.kafka_bootstrap_servers, settings.kafka_topic
    first, second = good_events(200), good_events(200)
    await produce(bootstrap, topic, first)
    async with running_worker(settings):
        await wait_for(lambda: _projected(database, 200), timeout_s=60, what="first 200 projected")
        await db_proxy.cut()
        await produce(bootstrap, topic, second)
        # While the database is away the archive (S3) still takes every record.
        await wait_for(
            lambda: _archived(bucket, topic, 400), timeout_s=30, what="archive during DB outage"
        )
        await asyncio.sleep(15)  # 20 s of outage in all
        assert await database["events"].count_documents({}) == 200
        await db_proxy.restore()
        await wait_for(lambda: _projected(database, 400), timeout_s=60, what="all 400 projected")
    assert await database["events"].count_documents({}) == 400
    assert await projected_sample_total(database) == 400
    # An outage is waited out, never mistaken for poison: nothing was dead-lettered.
    assert await read_topic(bootstrap, settings.kafka_dlq_topic) == []


async def test_s3_down_delays_only_the_archive(
    worker_settings: Settings,
    database: AsyncDatabase[Doc],
    bucket: S3ObjectStore,
    s3_proxy: TcpProxy,
) -> None:
    settings = worker_settings.model_copy(
        update={"s3_endpoint_url": f"http://127.0.0.1:{s3_proxy.port}"}
    )
    bootstrap, topic = settings.kafka_bootstrap_servers, settings.kafka_topic
    first, second = good_events(150), good_events(250)
    await produce(bootstrap, topic, first)
    async with running_worker(settings) as api:
        await wait_for(lambda: _archived(bucket, topic, 150), timeout_s=60, what="first archive")
        await s3_proxy.cut()
        await produce(bootstrap, topic, second)
        await wait_for(lambda: _projected(database, 400), timeout_s=60, what="store keeps going")

        async def archive_lag_shows() -> bool:
            metrics = (await api.get("/metrics")).text
            return any(
                line.startswith("ca4_worker_archive_lag{") and not line.endswith(" 0.0")
                for line in metrics.splitlines()
            )

        await wait_for(archive_lag_shows, timeout_s=30, what="archive lag > 0")
        assert sum((await archived_positions(bucket, topic)).values()) == 150
        await s3_proxy.restore()
        await wait_for(lambda: _archived(bucket, topic, 400), timeout_s=60, what="catch-up")
    archived = await archived_positions(bucket, topic)
    assert len(archived) == 400
    assert set(archived.values()) == {1}


async def _projected(database: AsyncDatabase[Doc], count: int) -> bool:
    return await projected_sample_total(database) >= count


async def _archived(objects: S3ObjectStore, topic: str, count: int) -> bool:
    return sum((await archived_positions(objects, topic)).values()) >= count


async def test_the_read_api_answers_503_while_the_database_is_away_or_slow(
    worker_settings: Settings, database: AsyncDatabase[Doc], db_proxy: TcpProxy
) -> None:
    """A read the database cannot answer was a 500 after the driver's 30 s socket timeout."""
    settings = worker_settings.model_copy(
        update={"mongo_url": f"mongodb://127.0.0.1:{db_proxy.port}/?directConnection=true"}
    )
    async with running_worker(settings) as client:
        assert (await client.get("/v1/sessions")).status_code == 200
        await db_proxy.cut()
        away = await client.get("/v1/sessions")
        await db_proxy.restore()
        back = await client.get("/v1/sessions")
    async with running_worker(settings.model_copy(update={"read_timeout_s": 1e-6})) as client:
        slow = await client.get("/v1/sessions")

    assert (away.status_code, away.headers["retry-after"]) == (503, "5")
    assert away.json() == {
        "detail": "the database is unreachable; retry after the Retry-After seconds"
    }
    assert back.status_code == 200
    assert slow.status_code == 503
    assert slow.json() == {
        "detail": "the database did not answer within 1e-06 s; retry after the Retry-After seconds"
    }
