"""Dead letters on Kafka: original key, bytes and headers, plus headers naming the error."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from ca4_schemas.constants import (
    HEADER_ERROR_CLASS,
    HEADER_ERROR_MESSAGE,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    HEADER_TENANT,
    HEADER_WORKER_VERSION,
)

from ca4_worker.application.ports import UnavailableError
from ca4_worker.domain.records import DeadLetter

ERROR_HEADERS = frozenset(
    {
        HEADER_ERROR_CLASS,
        HEADER_ERROR_MESSAGE,
        HEADER_SOURCE_TOPIC,
        HEADER_SOURCE_PARTITION,
        HEADER_SOURCE_OFFSET,
        HEADER_WORKER_VERSION,
    }
)


def dead_letter_headers(letter: DeadLetter, worker_version: str) -> list[tuple[str, bytes]]:
    """The original headers (minus earlier error headers) plus this error's headers.

    ``ca4-tenant`` is the letter's tenant (the decoded event's wins over the record's header),
    and stays on a re-driven record, where it is the processor's header again.
    """
    record = letter.record
    original = [
        (name, value)
        for name, value in record.headers
        if name not in ERROR_HEADERS and name != HEADER_TENANT
    ]
    tenant = [(HEADER_TENANT, letter.tenant.encode())] if letter.tenant else []
    return [
        *original,
        *tenant,
        (HEADER_ERROR_CLASS, letter.error_class.encode()),
        (HEADER_ERROR_MESSAGE, letter.error_message.encode("utf-8", "replace")),
        (HEADER_SOURCE_TOPIC, record.topic.encode()),
        (HEADER_SOURCE_PARTITION, str(record.partition).encode()),
        (HEADER_SOURCE_OFFSET, str(record.offset).encode()),
        (HEADER_WORKER_VERSION, worker_version.encode()),
    ]


def kafka_producer(bootstrap_servers: str, *, request_timeout_ms: int = 40_000) -> AIOKafkaProducer:
    """An idempotent, ``acks=all`` producer that keeps bytes as they are."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=request_timeout_ms,
    )


class KafkaDeadLetterSink:
    """Publishes dead letters and waits for the broker's acknowledgement."""

    def __init__(self, producer: AIOKafkaProducer, *, topic: str, worker_version: str) -> None:
        self._producer = producer
        self._topic = topic
        self._worker_version = worker_version

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        """Send every letter; raise :class:`UnavailableError` if Kafka does not take them."""
        try:
            futures = [
                await self._producer.send(
                    self._topic,
                    value=letter.record.value,
                    key=letter.record.key,
                    headers=dead_letter_headers(letter, self._worker_version),
                )
                for letter in letters
            ]
            await asyncio.gather(*futures)
        except KafkaError as error:
            raise UnavailableError(f"dead-letter publish failed: {error}") from error
