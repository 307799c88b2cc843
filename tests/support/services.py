"""Where the real services are: env vars first, then testcontainers, else a loud failure.

Integration tests never skip. When no ``CA4_*`` endpoint is set and no Docker engine answers,
they fail with the one command that starts the local stack.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from ca4_provision.devstack.versions import IMAGE_TAGS

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kafka_container(host_port: int) -> DockerContainer:
    """The official Apache Kafka image at the dev stack's version, single-node KRaft.

    testcontainers' ``KafkaContainer`` drives Confluent's image scripts (its ``with_kraft()``
    rejects any tag below Confluent's 7.0.0), so the Apache image is configured directly. The
    host listener is bound to a fixed host port and advertises it, so clients stay on it after
    bootstrap.
    """
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    return (
        DockerContainer(f"apache/kafka:{IMAGE_TAGS['kafka']}")
        .with_bind_ports(9092, host_port)
        .with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS="HOST://:9092,CONTROLLER://:9093",
            KAFKA_ADVERTISED_LISTENERS=f"HOST://localhost:{host_port}",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="HOST:PLAINTEXT,CONTROLLER:PLAINTEXT",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_INTER_BROKER_LISTENER_NAME="HOST",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
            KAFKA_NUM_PARTITIONS="3",
        )
        .waiting_for(LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(120))
    )


def _start_testcontainers() -> Endpoints:
    """Start Kafka, MongoDB and MinIO with testcontainers (only where a Docker engine runs)."""
    from testcontainers.minio import MinioContainer
    from testcontainers.mongodb import MongoDbContainer

    kafka_port = _free_port()
    kafka = kafka_container(kafka_port)
    mongo = MongoDbContainer(f"mongo:{IMAGE_TAGS['mongo']}")
    minio = MinioContainer(f"minio/minio:{IMAGE_TAGS['minio']}")
    for container in (kafka, mongo, minio):
        container.start()
    minio_config = minio.get_config()
    return Endpoints(
        kafka_bootstrap_servers=f"localhost:{kafka_port}",
        mongo_url=mongo.get_connection_url(),
        s3_endpoint_url=f"http://{minio_config['endpoint']}",
        s3_access_key_id=minio_config["access_key"],
        s3_secret_access_key=minio_config["secret_key"],
        prometheus_url=None,
    )
