"""The archive bucket on S3 (MinIO locally) through aioboto3."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ca4_worker.application.ports import UnavailableError
from ca4_worker.core.config import Settings

_NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket"}
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
ATTEMPTS = 2


class S3ObjectStore:
    """One bucket; open with ``async with`` (one client for the process)."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self._bucket = bucket
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        # Each call's deadline: every attempt's connect and read timeouts. botocore's own
        # timeouts do not bound a PutObject to a server that accepts and never answers (it
        # waited for good), so every call runs under this one as well.
        self.deadline_s = ATTEMPTS * (connect_timeout_s + read_timeout_s)
        self._endpoint_url = endpoint_url
        self._region = region
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._stack = AsyncExitStack()
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, *, bucket: str | None = None) -> S3ObjectStore:
        """The store the settings describe."""
        secret = settings.s3_secret_access_key
        return cls(
            bucket=bucket or settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
        )

    async def __aenter__(self) -> S3ObjectStore:
        session = aioboto3.Session()
        self._client = await self._stack.enter_async_context(
            session.client(
                "s3",
                endpoint_url=self._endpoint_url,
                region_name=self._region,
                aws_access_key_id=self._access_key_id,
                aws_secret_access_key=self._secret_access_key,
                config=Config(
                    connect_timeout=self._connect_timeout_s,
                    read_timeout=self._read_timeout_s,
                    retries={"max_attempts": ATTEMPTS, "mode": "standard"},
                    s3={"addressing_style": "path"},
                ),
            )
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (dev and tests; production uses Terraform)."""
        try:
            async with self._deadline("head bucket"):
                await self._client.head_bucket(Bucket=self._bucket)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in _NOT_FOUND:
                raise UnavailableError(f"S3 error: {error}") from error
            async with self._deadline("create bucket"):
                await self._client.create_bucket(Bucket=self._bucket)
        except BotoCoreError as error:
            raise UnavailableError(f"S3 unreachable: {error}") from error

    async def put(self, key: str, data: bytes) -> None:
        """Upload one object."""
        try:
            async with self._deadline(f"put {key}"):
                await self._client.put_object(
                    Bucket=self._bucket,
                    Key=key,
                    Body=data,
                    ContentType="application/x-ndjson",
                    ContentEncoding="gzip",
                )
        except (BotoCoreError, ClientError) as error:
            raise UnavailableError(f"S3 put {key} failed: {error}") from error

    async def get(self, key: str) -> bytes:
        """Download one object."""
        try:
            async with self._deadline(f"get {key}"):
                response = await self._client.get_object(Bucket=self._bucket, Key=key)
                async with response["Body"] as body:
                    data: bytes = await body.read()
                    return data
        except (BotoCoreError, ClientError) as error:
            raise UnavailableError(f"S3 get {key} failed: {error}") from error

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, sorted."""
        keys: list[str] = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            pages = aiter(paginator.paginate(Bucket=self._bucket, Prefix=prefix))
            while True:
                async with self._deadline(f"list {prefix}"):
                    page = await anext(pages, None)
                if page is None:
                    break
                keys.extend(item["Key"] for item in page.get("Contents", []))
        except (BotoCoreError, ClientError) as error:
            raise UnavailableError(f"S3 list {prefix} failed: {error}") from error
        return sorted(keys)

    @asynccontextmanager
    async def _deadline(self, what: str) -> AsyncIterator[None]:
        """Run one call within :attr:`deadline_s`; past it :class:`UnavailableError` (an
        outage: the archive retries, an operator command fails with one line)."""
        try:
            async with asyncio.timeout(self.deadline_s):
                yield
        except TimeoutError as error:
            raise UnavailableError(f"S3 {what}: no answer within {self.deadline_s:g} s") from error
