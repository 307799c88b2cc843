"""Operator tools for the dead-letter topic: read it, and re-drive letters to their topic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from ca4_schemas.constants import (
    HEADER_ERROR_CLASS,
    HEADER_ERROR_MESSAGE,
    HEADER_EVENT_ID,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    HEADER_TENANT,
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
    def tenant(self) -> str:
        """Whose letter it is: the ``ca4-tenant`` header ('' when not attributable)."""
        return self.header(HEADER_TENANT)

    @property
    def event_id(self) -> str:
        """The event id header, if the producer set one."""
        return self.header(HEADER_EVENT_ID)


DEFAULT_LIMIT = 1000
"""Most letters an operator command reads at once (each with its value)."""


@dataclass(frozen=True)
class LetterFilter:
    """Which dead letters a command wants (``None``: any), matched on headers alone."""

    error_class: str | None = None
    tenant: str | None = None

    def __call__(self, letter: StoredDeadLetter) -> bool:
        return (self.error_class is None or letter.error_class == self.error_class) and (
            self.tenant is None or letter.tenant == self.tenant
        )


def _stored(record: ConsumerRecord[bytes, bytes]) -> StoredDeadLetter:
    return StoredDeadLetter(
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=tuple((name, value or b"") for name, value in record.headers or ()),
    )


async def _partitions(bootstrap_servers: str, topic: str, timeout_s: float) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000)
    )
    async with asyncio.timeout(timeout_s):
        await admin.start()
        try:
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
    return sorted(
        (
            TopicPartition(topic, item["partition"])
            for entry in described
            if entry["error_code"] == 0
            for item in entry["partitions"]
        ),
        key=lambda tp: tp.partition,
    )


def _operator_consumer(bootstrap_servers: str, timeout_s: float) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        request_timeout_ms=int(timeout_s * 1000),
    )


async def iter_dead_letters(
    bootstrap_servers: str,
    topic: str,
    *,
    wanted: LetterFilter | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> AsyncGenerator[StoredDeadLetter, None]:
    """The dead letters on ``topic`` now that ``wanted`` matches, oldest first: partition by
    partition, each in offset order (no consumer group, nothing committed).

    One partition is fetched at a time and a letter that does not match is dropped as soon
    as its headers are read, so memory holds what the caller keeps plus one fetch, however
    long the topic; a caller that stops early reads no further. Close it (``aclosing``) when
    stopping early. Raises :class:`TimeoutError` when Kafka does not answer, or stops
    delivering records, for ``timeout_s``: an operator command must not hang on a broker that
    went away.
    """
    wanted = wanted or LetterFilter()
    partitions = await _partitions(bootstrap_servers, topic, timeout_s)
    if not partitions:
        return
    consumer = _operator_consumer(bootstrap_servers, timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            await consumer.start()
            ends = await consumer.end_offsets(partitions)
            starts = await consumer.beginning_offsets(partitions)
        for tp in partitions:
            if starts[tp] >= ends[tp]:
                continue
            consumer.assign([tp])
            # Explicit seeks: seek_to_beginning() resolves lazily and position() may not see it.
            consumer.seek(tp, starts[tp])
            position = starts[tp]
            while position < ends[tp]:
                # Each round must deliver within the deadline (getmany would wait longer, so a
                # round without records ends in TimeoutError); a long topic may take longer.
                async with asyncio.timeout(timeout_s):
                    batch = await consumer.getmany(tp, timeout_ms=int(2 * timeout_s * 1000))
                    position = await consumer.position(tp)
                for record in batch.get(tp, ()):
                    if record.offset >= ends[tp]:
                        break
                    letter = _stored(record)
                    if wanted(letter):
                        yield letter
    finally:
        await consumer.stop()


async def read_dead_letters(
    bootstrap_servers: str,
    topic: str,
    *,
    error_class: str | None = None,
    tenant: str | None = None,
    limit: int = DEFAULT_LIMIT,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[StoredDeadLetter]:
    """The first ``limit`` dead letters of :func:`iter_dead_letters` (oldest first)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    letters: list[StoredDeadLetter] = []
    wanted = LetterFilter(error_class=error_class, tenant=tenant)
    async with aclosing(
        iter_dead_letters(bootstrap_servers, topic, wanted=wanted, timeout_s=timeout_s)
    ) as found:
        async for letter in found:
            letters.append(letter)
            if len(letters) >= limit:
                break
    return letters


async def read_dead_letter(
    bootstrap_servers: str,
    topic: str,
    partition: int,
    offset: int,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> StoredDeadLetter | None:
    """The dead letter at ``partition:offset``, read by seeking straight to it; ``None`` when
    the topic holds no record there (no such partition, out of range, or removed)."""
    partitions = await _partitions(bootstrap_servers, topic, timeout_s)
    tp = TopicPartition(topic, partition)
    if tp not in partitions:
        return None
    consumer = _operator_consumer(bootstrap_servers, timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            await consumer.start()
            consumer.assign([tp])
            start = (await consumer.beginning_offsets([tp]))[tp]
            end = (await consumer.end_offsets([tp]))[tp]
            if not start <= offset < end:
                return None
            consumer.seek(tp, offset)
            batch = await consumer.getmany(tp, timeout_ms=int(2 * timeout_s * 1000), max_records=1)
    finally:
        await consumer.stop()
    records = batch.get(tp, [])
    if not records or records[0].offset != offset:
        return None
    return _stored(records[0])


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
