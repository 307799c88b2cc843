"""What the worker handles: raw Kafka records and decoded events with their Kafka position."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Final, Generic, NamedTuple, TypeVar

from ca4_schemas import GpuMetadataReported, GpuSample, encode_event, record_weight
from ca4_schemas.constants import HEADER_EVENT_ID, HEADER_TENANT

T = TypeVar("T")


class Position(NamedTuple):
    """Where a message sits in the topic; orders a session's events (key = session id).

    A named tuple, not a dataclass: both stages sort, hash and compare positions several times
    per event, and a tuple does it in C.
    """

    partition: int
    offset: int


class RawRecord(NamedTuple):
    """One Kafka record exactly as it arrived (bytes untouched, so a dead letter keeps them).

    A named tuple, built in C: each stage builds one per record.
    """

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

    # What the read models take from the event, read out once: the projection stage folds a
    # round of thousands of events in several passes (sessions, GPUs, gauges, usage), too many
    # events to stay in the CPU's caches, and every pass that walks each event's models again
    # pays the cache misses again.

    @cached_property
    def occurred_at_ms(self) -> datetime:
        """``occurred_at`` truncated to milliseconds (:func:`to_millis`): the time every read
        model orders and bills by."""
        event = self.event
        occurred_at = event.occurred_at
        occurred_at_ms = to_millis(occurred_at)
        # ordered_at_ms is read out here too, while the event is in the caches; as a cached
        # property of its own it cost 0.7 µs more per event (the first read takes a lock).
        received_at = event.received_at
        self.__dict__["ordered_at_ms"] = (
            occurred_at_ms if received_at >= occurred_at else to_millis(received_at)
        )
        return occurred_at_ms

    @cached_property
    def ordered_at_ms(self) -> datetime:
        """:attr:`occurred_at_ms`, but never later than ``received_at`` (in milliseconds): the
        time that orders a GPU's samples. ``occurred_at`` is the client's clock and may run up
        to five minutes ahead; a sample dated past its receipt would otherwise win over every
        real one until that time came. Set by :attr:`occurred_at_ms` (this runs only when
        read first)."""
        _ = self.occurred_at_ms
        ordered_at_ms: datetime = self.__dict__["ordered_at_ms"]
        return ordered_at_ms

    @cached_property
    def session_id(self) -> str:
        """The event's session."""
        return self.event.session_id

    @cached_property
    def tenant(self) -> str:
        """The event's owner."""
        return self.event.tenant

    @cached_property
    def gpu_readings(self) -> tuple[GpuReading, ...]:
        """The event's GPU samples, as the read models read them."""
        return tuple(
            GpuReading(gpu.uuid, gpu.name, gpu.memory_used_mib, gpu.utilization_gpu_pct, gpu)
            for gpu in self.event.payload.gpus
        )


class GpuReading(NamedTuple):
    """What the read models read from one GPU sample (the whole sample for the latest one)."""

    uuid: str
    name: str
    memory_used_mib: float | None
    utilization_gpu_pct: float | None
    sample: GpuSample


def event_weight(event: GpuMetadataReported) -> int:
    """:func:`record_weight` of the record published for ``event``: for events read back from
    the store, whose records may be gone."""
    return record_weight(encode_event(event))


@dataclass
class WeighedPage(Generic[T]):
    """Items gathered into pages of at most ``max_items``, ending early once their weight
    reaches ``max_weight`` (``None``: no weight bound); a page holds at least one item.

    What replays read at once is bounded like what the live stages hold, so crafted reports
    that decode to many times their bytes cannot make a page of a thousand events gigabytes;
    the read API's list pages are bounded the same way.
    """

    max_items: int
    max_weight: int | None
    items: list[T] = field(default_factory=list)
    weight: int = 0

    def __post_init__(self) -> None:
        if self.max_items < 1:
            raise ValueError(f"a page holds at least one item, not {self.max_items}")

    def add(self, item: T, weight: int) -> bool:
        """Add ``item``, weighing ``weight``; whether the page is now full."""
        self.items.append(item)
        self.weight += weight
        full_by_weight = self.max_weight is not None and self.weight >= self.max_weight
        return full_by_weight or len(self.items) >= self.max_items

    def take(self) -> list[T]:
        """The page so far, and start the next."""
        items, self.items, self.weight = self.items, [], 0
        return items


def to_millis(moment: datetime) -> datetime:
    """``moment`` truncated to milliseconds, the precision BSON dates keep.

    Comparisons then give the same answer in Python and in the database.
    """
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class DeadLetter:
    """A record the worker cannot read, and why."""

    record: RawRecord
    error_class: str
    error_message: str
    tenant: str = ""
    """Whose it is: the decoded event's tenant, else the processor's ``ca4-tenant`` header of
    the record, else ``""`` (a record that never went through the processor)."""


def header_tenant(record: RawRecord) -> str:
    """The ``ca4-tenant`` header the processor set on ``record`` (``""`` when there is none)."""
    return _header(record, HEADER_TENANT)


LOGGED_ID_MAX_CHARS: Final = 128
"""Longest id a log line repeats from a record: a record that never went through the processor
may carry any key or header."""


def record_ids(record: RawRecord) -> dict[str, str]:
    """The ``event_id`` (the processor's ``ca4-event-id`` header) and ``session_id`` (the
    record's key) that name ``record`` in log lines, each only when present: a record the
    worker cannot decode still names the event its client can look for."""
    ids = {}
    if event_id := _header(record, HEADER_EVENT_ID):
        ids["event_id"] = event_id[:LOGGED_ID_MAX_CHARS]
    if record.key:
        ids["session_id"] = record.key[: LOGGED_ID_MAX_CHARS * 4].decode("utf-8", "replace")[
            :LOGGED_ID_MAX_CHARS
        ]
    return ids


def _header(record: RawRecord, header: str) -> str:
    for name, value in record.headers:
        if name == header:
            return value.decode("utf-8", "replace")
    return ""
