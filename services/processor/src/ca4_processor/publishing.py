"""The publisher port and its Kafka adapter: events out, receipts back only after ``acks=all``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata
from ca4_schemas import GpuMetadataReported
from ca4_schemas.api import Receipt
from ca4_schemas.constants import HEADER_CONTENT_TYPE, HEADER_EVENT_ID, HEADER_SCHEMA_VERSION
from ca4_telemetry import headers_with_trace_context, tracer
from faststream.kafka import KafkaBroker
from faststream.kafka.publisher.usecase import DefaultPublisher
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Histogram

_tracer = tracer(__name__)


class PublishUnavailableError(RuntimeError):
    """Kafka did not acknowledge in time; nothing may be reported as accepted."""


class EventPublisher(Protocol):
    """Where accepted events go. The HTTP layer knows nothing about Kafka beyond this."""

    async def publish(self, events: Sequence[GpuMetadataReported]) -> list[Receipt]:
        """Publish every event and return one receipt each, in order, once all are acknowledged.

        Raises :class:`PublishUnavailableError` if any is not acknowledged in time; some may
        still land, which is safe because a retry carries the same ``event_id``.
        """
        ...

    async def is_ready(self) -> bool:
        """Whether the broker answers right now."""
        ...


class KafkaEventPublisher:
    """Publishes on the FastStream broker's connection: all sends first, then all acks at once.

    FastStream owns the connection (lifespan, readiness, AsyncAPI docs). The hot path hands each
    message straight to the broker's aiokafka producer: FastStream's per-message publish chain
    (middlewares, serializer, publish command) cost about 60 µs a message, which halved batch
    throughput, and its ``publish_batch`` returns one offset for the whole batch and one key
    for all messages, where every event needs its own receipt and its session's key.
    """

    def __init__(
        self,
        broker: KafkaBroker,
        *,
        topic: str,
        publish_timeout_s: float,
        readiness_timeout_s: float,
        latency: Histogram,
    ) -> None:
        self._broker = broker
        self._topic = topic
        # A declared publisher documents the topic and message schema in AsyncAPI (/asyncapi).
        self._publisher: DefaultPublisher = broker.publisher(
            topic,
            title=f"{topic}:publish",
            description="One gpu.metadata.reported event per accepted report; key = session_id.",
            schema=GpuMetadataReported,
        )
        self._publish_timeout_s = publish_timeout_s
        self._readiness_timeout_s = readiness_timeout_s
        self._latency = latency

    async def publish(self, events: Sequence[GpuMetadataReported]) -> list[Receipt]:
        """Send all, then await every acknowledgement concurrently (see :class:`EventPublisher`)."""
        if not events:
            return []
        started = time.perf_counter()
        with _tracer.start_as_current_span(
            f"send {self._topic}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": self._topic,
                "messaging.batch.message_count": len(events),
            },
        ) as span:
            # One traceparent for the whole request: every message links back to this span.
            trace_headers = headers_with_trace_context()
            try:
                async with asyncio.timeout(self._publish_timeout_s):
                    pending = [await self._send(event, trace_headers) for event in events]
                    for future in pending:
                        future.add_done_callback(_retrieve_outcome)
                    # asyncio.wait, unlike gather, leaves the producer's futures alone on timeout.
                    await asyncio.wait(pending)
                acks = [future.result() for future in pending]
            except (TimeoutError, KafkaError, ConnectionError) as error:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                raise PublishUnavailableError(
                    f"Kafka did not acknowledge within {self._publish_timeout_s}s "
                    f"({type(error).__name__})"
                ) from error
        self._latency.observe(time.perf_counter() - started)
        return [
            Receipt(
                event_id=event.event_id, topic=ack.topic, partition=ack.partition, offset=ack.offset
            )
            for event, ack in zip(events, acks, strict=True)
        ]

    async def _send(
        self, event: GpuMetadataReported, trace_headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[RecordMetadata]:
        """Queue one message in the producer's buffer; the returned future resolves on ack."""
        ack: asyncio.Future[RecordMetadata] = await connected_producer(self._broker).send(
            self._topic,
            event.model_dump_json().encode(),
            key=event.session_id.encode(),
            headers=[
                (HEADER_CONTENT_TYPE, b"application/json"),
                (HEADER_EVENT_ID, str(event.event_id).encode()),
                (HEADER_SCHEMA_VERSION, str(event.schema_version).encode()),
                *trace_headers,
            ],
        )
        return ack

    async def is_ready(self) -> bool:
        """Whether the broker answers within the readiness timeout."""
        try:
            return await self._broker.ping(self._readiness_timeout_s)
        except (KafkaError, ConnectionError, OSError):
            return False


def connected_producer(broker: KafkaBroker) -> AIOKafkaProducer:
    """The aiokafka producer behind a connected FastStream broker.

    FastStream 0.7 keeps it at ``broker.config.producer._producer.producer``; uv.lock pins the
    version, and every Kafka integration test fails at once if an upgrade moves it. Before the
    broker is connected this raises FastStream's own "connect broker first" error.
    """
    state: Any = getattr(broker.config.producer, "_producer")  # noqa: B009 - private, see above
    producer: AIOKafkaProducer = state.producer
    return producer


def _retrieve_outcome(future: asyncio.Future[RecordMetadata]) -> None:
    """Mark a late failure as seen, so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()
