"""Operator tools for the dead-letter topic: read it, and re-drive letters to their topic."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from ca4_schemas.constants import (
    HEADER_ERROR_CLASS,
    HEADER_ERROR_MESSAGE,
    HEADER_EVENT_ID,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
)

from ca4_worker.messaging.dead_letters import ERROR_HEADERS, kafka_producer

DEFAULT_TIMEOUT_S = 15.0
"""How long an operator command waits on Kafka before calling it down."""


@dataclass(frozen=True)
class StoredDeadLetter:
    """One record on the dead-letter topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str:
        """A header as text ('' when absent)."""
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace")
        return ""

    @property
    def ref(self) -> str:
        """``partition:offset`` on the dead-letter topic."""
        return f"{self.partition}:{self.offset}"

    @property
    def error_class(self) -> str:
        """Why it was dead-lettered."""
        return self.header(HEADER_ERROR_CLASS)

    @property
    def error_message(self) -> str:
        """The error in words."""
        return self.header(HEADER_ERROR_MESSAGE)

    @property
    def source(self) -> str:
        """``topic/partition:offset`` it came from."""
        return (
            f"{self.header(HEADER_SOURCE_TOPIC)}/{self.header(HEADER_SOURCE_PARTITION)}:"
            f"{self.header(HEADER_SOURCE_OFFSET)}"
        )

    @property
    def event_id(self) -> str:
        """The event id header, if the producer set one."""
        return self.header(HEADER_EVENT_ID)


async def read_dead_letters(
    bootstrap_servers: str,
    topic: str,
    *,
    error_class: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[StoredDeadLetter]:
    """Every dead letter on ``topic`` now (no consumer group, nothing committed).

    Raises :class:`TimeoutError` when Kafka does not answer, or stops delivering records,
    for ``timeout_s``: an operator command must not hang on a broker that went away.
    """
    timeout_ms = int(timeout_s * 1000)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=timeout_ms)
    async with asyncio.timeout(timeout_s):
        await admin.start()
        try:
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
    partitions = [
        TopicPartition(topic, item["partition"])
        for entry in described
        if entry["error_code"] == 0
        for item in entry["partitions"]
    ]
    if not partitions:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        request_timeout_ms=timeout_ms,
    )
    letters: list[StoredDeadLetter] = []
    try:
        async with asyncio.timeout(timeout_s):
            await consumer.start()
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            # Explicit seeks: seek_to_beginning() resolves lazily and position() may not see it.
            for tp, start in (await consumer.beginning_offsets(partitions)).items():
                consumer.seek(tp, start)
            remaining = [tp for tp in partitions if await consumer.position(tp) < ends[tp]]
        while remaining:
            # Each round must deliver within the deadline (getmany would wait longer, so a round
            # without records ends in TimeoutError); reading a long topic may take longer.
            async with asyncio.timeout(timeout_s):
                batch = await consumer.getmany(*remaining, timeout_ms=2 * timeout_ms)
                for records in batch.values():
                    letters.extend(
                        StoredDeadLetter(
                            partition=record.partition,
                            offset=record.offset,
                            key=record.key,
                            value=record.value,
                            headers=tuple(
                                (name, value or b"") for name, value in record.headers or ()
                            ),
                        )
                        for record in records
                        if record.offset < ends[TopicPartition(topic, record.partition)]
                    )
                remaining = [tp for tp in remaining if await consumer.position(tp) < ends[tp]]
    finally:
        await consumer.stop()
    letters.sort(key=lambda letter: (letter.partition, letter.offset))
    if error_class is not None:
        letters = [letter for letter in letters if letter.error_class == error_class]
    return letters


def destination(letter: StoredDeadLetter, target_topic: str | None = None) -> str:
    """Where re-driving ``letter`` publishes it: ``target_topic``, else its source topic."""
    topic = target_topic or letter.header(HEADER_SOURCE_TOPIC)
    if not topic:
        raise ValueError(f"dead letter {letter.ref} names no source topic")
    return topic


async def redrive(
    bootstrap_servers: str,
    letters: Sequence[StoredDeadLetter],
    *,
    target_topic: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> int:
    """Publish letters back to their source topic (original key, bytes and headers).

    Re-driven events are ordinary events again: the store deduplicates them by event id.
    Raises :class:`TimeoutError` when Kafka does not answer within ``timeout_s``.
    """
    producer = kafka_producer(bootstrap_servers, request_timeout_ms=int(timeout_s * 1000))
    try:
        async with asyncio.timeout(timeout_s):
            await producer.start()
        futures = []
        for letter in letters:
            topic = destination(letter, target_topic)
            headers = [(name, value) for name, value in letter.headers if name not in ERROR_HEADERS]
            futures.append(
                await producer.send(topic, value=letter.value, key=letter.key, headers=headers)
            )
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(letters)
