"""What the worker handles: raw Kafka records and decoded events with their Kafka position."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from ca4_schemas import GpuMetadataReported


@dataclass(frozen=True, order=True)
class Position:
    """Where a message sits in the topic; orders a session's events (key = session id)."""

    partition: int
    offset: int


@dataclass(frozen=True)
class RawRecord:
    """One Kafka record exactly as it arrived (bytes untouched, so a dead letter keeps them)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0

    @property
    def position(self) -> Position:
        """The record's (partition, offset)."""
        return Position(self.partition, self.offset)


@dataclass(frozen=True)
class PositionedEvent:
    """A decoded event and the Kafka position it was first stored from."""

    event: GpuMetadataReported
    position: Position
    headers: tuple[tuple[str, bytes], ...] = field(default=(), compare=False)

    @cached_property
    def event_id(self) -> str:
        """The event id as text (the store's primary key); formatted once, since a batch asks
        for it several times per event."""
        return str(self.event.event_id)


@dataclass(frozen=True)
class DeadLetter:
    """A record the worker cannot read, and why."""

    record: RawRecord
    error_class: str
    error_message: str
