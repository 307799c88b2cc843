"""Idempotent post-start setup: Kafka topics and the S3 archive bucket.

Client libraries are imported inside the functions so `ca4 devstack env` starts fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ca4_provision.devstack.health import UnhealthyError, psql, quiet_kafka_client

EXTENSION_TIMEOUT_S = 120.0  # DocumentDB's CASCADE creates six extensions; seconds on 2 cores
_KAFKA_OK = 0
_KAFKA_TOPIC_ALREADY_EXISTS = 36


class ProvisioningError(RuntimeError):
    """A topic or bucket could not be created."""


async def ensure_topics(
    bootstrap_servers: str, topics: Sequence[str], *, partitions: int
) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # heavy: imported on use

    with quiet_kafka_client():
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10000)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [name for name in topics if name not in existing]
            if not missing:
                return []
            new_topics = [NewTopic(name, partitions, replication_factor=1) for name in missing]
            response: Any = await admin.create_topics(new_topics)
        finally:
            await admin.close()
    for topic_error in response.topic_errors:
        name, code = topic_error[0], topic_error[1]
        if code not in {_KAFKA_OK, _KAFKA_TOPIC_ALREADY_EXISTS}:
            raise ProvisioningError(f"creating Kafka topic {name} failed: {topic_error!r}")
    return missing


async def ensure_bucket(
    endpoint_url: str, bucket: str, *, access_key_id: str, secret_access_key: str
) -> bool:
    """Create the bucket unless it exists; True if it was created."""
    import aioboto3  # heavy (botocore): imported on use
    from botocore.exceptions import ClientError

    session = aioboto3.Session(
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        region_name="us-east-1",
    )
    async with session.client("s3", endpoint_url=endpoint_url) as s3:
        try:
            await s3.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket"}:
                raise ProvisioningError(f"checking bucket {bucket} failed: {exc}") from exc
        else:
            return False
        try:
            await s3.create_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise ProvisioningError(f"creating bucket {bucket} failed: {exc}") from exc
            return False
    return True


async def ensure_documentdb(url: str, *, psql_program: str | Path) -> str | None:
    """``CREATE EXTENSION documentdb CASCADE`` unless it exists; a note when it was created."""
    try:
        exists = await psql(
            url,
            "SELECT count(*) FROM pg_extension WHERE extname = 'documentdb'",
            psql_program=psql_program,
        )
        if exists == "1":
            return None
        await psql(
            url,
            "CREATE EXTENSION IF NOT EXISTS documentdb CASCADE",
            psql_program=psql_program,
            timeout_s=EXTENSION_TIMEOUT_S,
        )
    except UnhealthyError as exc:
        raise ProvisioningError(f"creating the documentdb extension failed: {exc}") from exc
    return "created extension documentdb"
