"""The dev stack's S3 server: put and get through aioboto3."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from typing import Any

import aioboto3
import pytest

from tests.support.services import Endpoints

pytestmark = [pytest.mark.s3]


@pytest.fixture
async def s3(services: Endpoints) -> AsyncIterator[Any]:
    session = aioboto3.Session(
        aws_access_key_id=services.s3_access_key_id,
        aws_secret_access_key=services.s3_secret_access_key,
        region_name="us-east-1",
    )
    async with session.client("s3", endpoint_url=services.s3_endpoint_url) as client:
        yield client


@pytest.fixture
async def bucket(s3: Any, bucket_name: str) -> AsyncIterator[str]:
    await s3.create_bucket(Bucket=bucket_name)
    try:
        yield bucket_name
    finally:
        listing = await s3.list_objects_v2(Bucket=bucket_name)
        for item in listing.get("Contents", []):
            await s3.delete_object(Bucket=bucket_name, Key=item["Key"])
        await s3.delete_bucket(Bucket=bucket_name)


async def test_put_and_get_gzip_json_lines(s3: Any, bucket: str) -> None:
    key = "raw/gpu-metadata/dt=2026-01-01/partition=0/gpu-metadata+0+0.jsonl.gz"
    body = gzip.compress(b'{"event_id": "e-1"}\n{"event_id": "e-2"}\n')

    await s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-ndjson")
    got = await s3.get_object(Bucket=bucket, Key=key)
    data = await got["Body"].read()
    listing = await s3.list_objects_v2(Bucket=bucket, Prefix="raw/gpu-metadata/")

    assert gzip.decompress(data).splitlines() == [b'{"event_id": "e-1"}', b'{"event_id": "e-2"}']
    assert [item["Key"] for item in listing["Contents"]] == [key]


async def test_archive_bucket_exists(s3: Any) -> None:
    buckets = await s3.list_buckets()
    assert "ca4-archive" in {b["Name"] for b in buckets["Buckets"]}
