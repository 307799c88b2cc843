"""Where the real services are: env vars first, then testcontainers, else a loud failure.

Integration tests never skip. When no ``CA4_*`` endpoint is set and no Docker engine answers,
they fail with the one command that starts the local stack.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import cache

START_HINT = (
    "No CA4 services found. Start the local stack with `uv run ca4 devstack up` and export its "
    'endpoints (`eval "$(uv run ca4 devstack env)"`), or run everything with `make test`.'
)


@dataclass(frozen=True)
class Endpoints:
    """The real services the integration tests talk to."""

    kafka_bootstrap_servers: str
    mongo_url: str
    s3_endpoint_url: str
    s3_access_key_id: str
    s3_secret_access_key: str
    prometheus_url: str | None


def _docker_engine_answers() -> bool:
    """True when a Docker engine answers on its socket (the client alone is not enough)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True
    path = host.removeprefix("unix://")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"OK" in sock.recv(256)
    except OSError:
        return False


@cache
def endpoints() -> Endpoints:
    """Resolve the service endpoints once per test session."""
    env = os.environ
    if (
        env.get("CA4_KAFKA_BOOTSTRAP_SERVERS")
        and env.get("CA4_MONGO_URL")
        and env.get("CA4_S3_ENDPOINT_URL")
    ):
        return Endpoints(
            kafka_bootstrap_servers=env["CA4_KAFKA_BOOTSTRAP_SERVERS"],
            mongo_url=env["CA4_MONGO_URL"],
            s3_endpoint_url=env["CA4_S3_ENDPOINT_URL"],
            s3_access_key_id=env.get("CA4_S3_ACCESS_KEY_ID", "ca4dev"),
            s3_secret_access_key=env.get("CA4_S3_SECRET_ACCESS_KEY", "ca4dev-secret"),
            prometheus_url=env.get("CA4_PROMETHEUS_URL"),
        )
    if _docker_engine_answers():
        return _start_testcontainers()
    raise RuntimeError(START_HINT)


def _start_testcontainers() -> Endpoints:
    """Start Kafka, MongoDB and MinIO with testcontainers (only where a Docker engine runs)."""
    from testcontainers.kafka import KafkaContainer
    from testcontainers.minio import MinioContainer
    from testcontainers.mongodb import MongoDbContainer

    kafka = KafkaContainer("apache/kafka:3.9.1").with_kraft()
    mongo = MongoDbContainer("mongo:7.0")
    minio = MinioContainer("minio/minio:RELEASE.2025-04-22T22-12-26Z")
    for container in (kafka, mongo, minio):
        container.start()
    minio_config = minio.get_config()
    return Endpoints(
        kafka_bootstrap_servers=kafka.get_bootstrap_server(),
        mongo_url=mongo.get_connection_url(),
        s3_endpoint_url=f"http://{minio_config['endpoint']}",
        s3_access_key_id=minio_config["access_key"],
        s3_secret_access_key=minio_config["secret_key"],
        prometheus_url=None,
    )
