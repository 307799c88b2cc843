"""Clients the deploy tier runs inside a pod's namespaces (its /etc/hosts), printing one JSON line.

``python -m tests.deploy.clients topics BOOTSTRAP TOPIC...``: what the admin client says about
the cluster and the topics (partitions, replicas per partition, min.insync.replicas).

``python -m tests.deploy.clients tunnel TARGET...``: a developer's laptop. ``localhost`` is this
namespace's own loopback address; a small asyncio forwarder stands in for ``ssh -L``, listening on
``localhost:<advertised port of broker N>`` and forwarding to TARGET N (``host:port``, what the
bastion reaches: the broker's TUNNEL listener). A client bootstrapped on the first forward reports
the advertised brokers, produces a record and consumes it back.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType


async def describe_topics(bootstrap: str, topics: list[str]) -> dict[str, Any]:
    """The cluster's brokers and each topic's partitions, replication and min.insync.replicas."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        described = {t["topic"]: t for t in await admin.describe_topics(topics)}
        result: dict[str, Any] = {
            "brokers": sorted(b["node_id"] for b in cluster["brokers"]),
            "controller": cluster["controller_id"],
            "topics": {},
        }
        for topic in topics:
            resource = ConfigResource(
                ConfigResourceType.TOPIC, topic, configs={"min.insync.replicas": None}
            )
            (response,) = await admin.describe_configs([resource])
            (entries,) = response.to_object()["resources"]
            configs = {e["config_names"]: e["config_value"] for e in entries["config_entries"]}
            partitions = described[topic]["partitions"]
            result["topics"][topic] = {
                "error_code": described[topic]["error_code"],
                "partitions": len(partitions),
                "replicas": sorted({len(p["replicas"]) for p in partitions}),
                "isr": sorted({len(p["isr"]) for p in partitions}),
                "min_insync_replicas": int(configs["min.insync.replicas"]),
            }
        return result
    finally:
        await admin.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def forward(listen_port: int, target: str) -> asyncio.Server:
    """``ssh -L listen_port:target``: accept on localhost, copy bytes both ways to target."""
    host, port = target.rsplit(":", 1)

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    return await asyncio.start_server(connected, "localhost", listen_port)


async def through_tunnel(base_port: int, targets: list[str]) -> dict[str, Any]:
    """Forward each broker, then produce and consume through the forwards only."""
    servers = [await forward(base_port + i, target) for i, target in enumerate(targets)]
    bootstrap = f"localhost:{base_port}"
    topic = "gpu-metadata"
    marker = uuid.uuid4().hex.encode()
    try:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            advertised = sorted(f"{b.host}:{b.port}" for b in producer.client.cluster.brokers())
            sent = await producer.send_and_wait(topic, marker, key=b"tunnel")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            from aiokafka import TopicPartition

            partition = TopicPartition(topic, sent.partition)
            consumer.assign([partition])
            consumer.seek(partition, sent.offset)
            record = await asyncio.wait_for(consumer.getone(), 30)
        finally:
            await consumer.stop()
        return {
            "advertised": advertised,
            "produced": {"partition": sent.partition, "offset": sent.offset},
            "consumed_back": record.value == marker,
        }
    finally:
        for server in servers:
            server.close()


def main(argv: list[str]) -> None:
    """Dispatch to one client and print its JSON result."""
    command, *rest = argv
    if command == "topics":
        result = asyncio.run(describe_topics(rest[0], rest[1:]))
    elif command == "tunnel":
        result = asyncio.run(through_tunnel(int(rest[0]), rest[1:]))
    else:
        raise SystemExit(f"unknown client {command}")
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
