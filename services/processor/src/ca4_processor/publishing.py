"""The publisher port and its Kafka adapter: events out, receipts back only after ``acks=all``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Protocol

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.structs import RecordMetadata
from ca4_schemas import GpuMetadataReported, encode_event
from ca4_schemas.api import Receipt
from ca4_schemas.constants import (
    HEADER_CONTENT_TYPE,
    HEADER_EVENT_ID,
    HEADER_SCHEMA_VERSION,
    HEADER_TENANT,
)
from ca4_telemetry import headers_with_trace_context, tracer
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Histogram

from ca4_processor.core.config import Settings

log = structlog.get_logger(__name__)
_tracer = tracer(__name__)

TOPIC_MESSAGE_LIMIT = "max.message.bytes"
"""The topic config that caps one record batch, so one message, on the broker."""


class PublishUnavailableError(RuntimeError):
    """Kafka did not acknowledge in time; nothing may be reported as accepted."""


class MessageTooLargeError(ValueError):
    """Some events encode to more bytes than Kafka takes in one message; none was sent.

    Retrying can never help, so the HTTP layer refuses exactly these reports (``413``, or a
    per-report rejection in a batch) and publishes the others.
    """

    def __init__(self, sizes: dict[int, int], limit: int) -> None:
        super().__init__(f"{len(sizes)} event(s) over the {limit}-byte message limit")
        self.sizes = sizes
        """Encoded size in bytes of each event over the limit, by position in the call."""
        self.limit = limit
        """The most bytes one message may have."""

    def reason(self, position: int) -> str:
        """Why the event at ``position`` was refused, with the limit, for the client."""
        return (
            f"the encoded event is {self.sizes[position]} bytes, over the limit of {self.limit} "
            "bytes per Kafka message; send fewer GPU samples or processes per report"
        )


class EventPublisher(Protocol):
    """Where accepted events go. The HTTP layer knows nothing about Kafka beyond this."""

    async def publish(self, events: Sequence[GpuMetadataReported]) -> list[Receipt]:
        """Publish every event and return one receipt each, in order, once all are acknowledged.

        Raises :class:`MessageTooLargeError`, before sending anything, if any event is over
        the message limit, and :class:`PublishUnavailableError` if any is not acknowledged in
        time; some may still land then, which is safe because a retry carries the same
        ``event_id``.
        """
        ...

    async def is_ready(self) -> bool:
        """Whether the broker answers right now."""
        ...


class KafkaEventPublisher:
    """Publishes on its own aiokafka producer: all sends first, then all acks at once.

    The producer is idempotent with ``acks=all``; an admin client reads the topic's message
    limit at start and answers readiness probes. Both are opened by :meth:`connected`, which
    the app's lifespan holds (aiokafka clients belong to a running event loop), so start-up
    fails while Kafka is unreachable.
    """

    def __init__(self, settings: Settings, *, latency: Histogram) -> None:
        self._settings = settings
        self._topic = settings.KAFKA_TOPIC
        self._latency = latency
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self.max_message_bytes = min(
            settings.KAFKA_MAX_MESSAGE_BYTES or settings.KAFKA_MAX_REQUEST_SIZE,
            settings.KAFKA_MAX_REQUEST_SIZE,
        )
        """The most bytes one message may have; settled by :meth:`connected`."""

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        """Connect, settle the message limit, and on exit flush what is in flight and close."""
        settings = self._settings
        async with AsyncExitStack() as stack:
            # Each client is closed even when its start fails (aiokafka warns about it otherwise).
            admin = AIOKafkaAdminClient(
                bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
                client_id=f"{settings.KAFKA_CLIENT_ID}-admin",
                request_timeout_ms=settings.KAFKA_REQUEST_TIMEOUT_MS,
            )
            stack.push_async_callback(admin.close)
            await admin.start()
            producer = AIOKafkaProducer(
                bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
                client_id=settings.KAFKA_CLIENT_ID,
                acks="all",
                enable_idempotence=True,
                linger_ms=settings.KAFKA_LINGER_MS,
                compression_type=settings.KAFKA_COMPRESSION,
                request_timeout_ms=settings.KAFKA_REQUEST_TIMEOUT_MS,
                max_request_size=settings.KAFKA_MAX_REQUEST_SIZE,
            )
            stack.push_async_callback(producer.stop)
            await producer.start()
            if settings.KAFKA_MAX_MESSAGE_BYTES is None:
                topic_limit = await _topic_message_limit(admin, self._topic)
                self.max_message_bytes = min(
                    topic_limit or settings.KAFKA_MAX_REQUEST_SIZE, settings.KAFKA_MAX_REQUEST_SIZE
                )
            log.info("kafka.connected", topic=self._topic, max_message_bytes=self.max_message_bytes)
            self._producer, self._admin = producer, admin
            try:
                yield
            finally:
                self._producer = self._admin = None

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
            messages = self._messages(events, headers_with_trace_context())
            timeout_s = self._settings.PUBLISH_TIMEOUT_S
            try:
                if self._producer is None:
                    raise KafkaConnectionError("the producer is not connected")
                async with asyncio.timeout(timeout_s):
                    pending = [
                        await self._producer.send(self._topic, value, key=key, headers=headers)
                        for key, value, headers in messages
                    ]
                    for future in pending:
                        future.add_done_callback(_retrieve_outcome)
                    # asyncio.wait, unlike gather, leaves the producer's futures alone on timeout.
                    await asyncio.wait(pending)
                acks: list[RecordMetadata] = [future.result() for future in pending]
            except (TimeoutError, KafkaError, ConnectionError) as error:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                raise PublishUnavailableError(
                    f"Kafka did not acknowledge within {timeout_s}s ({type(error).__name__})"
                ) from error
        self._latency.observe(time.perf_counter() - started)
        return [
            Receipt(
                event_id=event.event_id, topic=ack.topic, partition=ack.partition, offset=ack.offset
            )
            for event, ack in zip(events, acks, strict=True)
        ]

    def _messages(
        self, events: Sequence[GpuMetadataReported], trace_headers: list[tuple[str, bytes]]
    ) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
        """Key, value and headers of each event; raises if any is over the message limit."""
        messages = []
        oversized: dict[int, int] = {}
        for position, event in enumerate(events):
            key = event.session_id.encode()
            value = encode_event(event)
            headers = [
                (HEADER_CONTENT_TYPE, b"application/json"),
                (HEADER_EVENT_ID, str(event.event_id).encode()),
                (HEADER_SCHEMA_VERSION, str(event.schema_version).encode()),
                # The key's tenant, so a dead letter of an event this worker cannot decode
                # (a newer schema version) is still attributable.
                (HEADER_TENANT, event.tenant.encode()),
                *trace_headers,
            ]
            size = record_size(key, value, headers)
            if size > self.max_message_bytes:
                oversized[position] = size
            messages.append((key, value, headers))
        if oversized:
            raise MessageTooLargeError(oversized, self.max_message_bytes)
        return messages

    async def is_ready(self) -> bool:
        """Whether the broker answers a metadata request within the readiness timeout."""
        if self._admin is None:
            return False
        try:
            async with asyncio.timeout(self._settings.READINESS_TIMEOUT_S):
                await self._admin.describe_cluster()
        except (TimeoutError, KafkaError, OSError):
            return False
        return True


async def _topic_message_limit(admin: AIOKafkaAdminClient, topic: str) -> int | None:
    """The topic's ``max.message.bytes``, or ``None`` (logged) when the broker won't say."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={TOPIC_MESSAGE_LIMIT: None})
    try:
        (response,) = await admin.describe_configs([resource])
        (described,) = response.to_object()["resources"]
        for entry in described["config_entries"]:
            if entry["config_names"] == TOPIC_MESSAGE_LIMIT:
                return int(entry["config_value"])
        problem = f"error code {described['error_code']}, no {TOPIC_MESSAGE_LIMIT}"
    except (KafkaError, OSError, KeyError, TypeError, ValueError) as error:
        problem = f"{type(error).__name__}: {error}"
    log.warning(
        "kafka.message_limit_unknown",
        topic=topic,
        problem=problem,
        hint="the producer's max_request_size is the limit; set CA4_KAFKA_MAX_MESSAGE_BYTES "
        "to the topic's max.message.bytes if it is lower",
    )
    return None


def record_size(key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]) -> int:
    """An upper bound of the bytes one record takes on the wire, alone in its record batch.

    Kafka's v2 format: a 61-byte batch header, at most 21 bytes of record header, and a
    varint of at most 5 bytes before the record, its key, its value, the header count and each
    header's name and value. Compression is not counted, so the bound holds with any codec.
    """
    header_bytes = sum(len(name.encode()) + len(content) for name, content in headers)
    varints = 5 * (3 + 2 * len(headers))
    return 61 + 21 + varints + len(key) + len(value) + header_bytes


def _retrieve_outcome(future: asyncio.Future[RecordMetadata]) -> None:
    """Mark a late failure as seen, so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()
