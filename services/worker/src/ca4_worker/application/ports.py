"""The ports the application services talk to; adapters live in ``persistence``/``messaging``."""

from __future__ import annotations

from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from ca4_worker.application.views import GpuQuery, GpuView, Page, SessionQuery, SessionView
from ca4_worker.domain.dead_letters import Refusal
from ca4_worker.domain.records import DeadLetter, Position, PositionedEvent
from ca4_worker.domain.tenancy import is_event_id_conflict


class UnavailableError(Exception):
    """A dependency (database, Kafka, S3) is down or unreachable: retry, never drop."""


class TimedOutError(UnavailableError):
    """A call missed its deadline: retry with less work in it, never the same call on top."""


class RejectedError(Exception):
    """The dependency refused this data, and would refuse it again on every try: poison.

    ``error_class`` names the cause for the dead letter (e.g. ``document_too_large``), one of
    the closed set of :data:`~ca4_worker.domain.dead_letters.Refusal`.
    """

    def __init__(self, error_class: Refusal, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class


SessionClaims = Callable[[Mapping[str, str]], Awaitable[None]]
"""Claims sessions (id to owner tenant) where the processor checks owners; a session claimed
before keeps its owner."""


@dataclass
class AppendOutcome:
    """What an append did with each event.

    ``redelivered`` were already stored from the same Kafka position (a redelivery after a
    crash), so they still need projecting; ``duplicates`` were stored from another position
    (a client retry or a re-drive) and were projected when that copy was; ``conflicts`` share
    their event id with another tenant's stored event, so they are not stored (event ids are
    unique across tenants) and are dead-lettered instead of counted as duplicates in silence.
    """

    stored: list[PositionedEvent] = field(default_factory=list)
    redelivered: list[PositionedEvent] = field(default_factory=list)
    duplicates: list[PositionedEvent] = field(default_factory=list)
    conflicts: list[PositionedEvent] = field(default_factory=list)

    def add_copy(self, item: PositionedEvent, stored_at: Position, stored_tenant: str) -> None:
        """Sort ``item``, whose event id is already stored from ``stored_at`` by
        ``stored_tenant``."""
        if is_event_id_conflict(item, stored_tenant):
            self.conflicts.append(item)
        elif stored_at == item.position:
            self.redelivered.append(item)
        else:
            self.duplicates.append(item)

    @property
    def to_project(self) -> list[PositionedEvent]:
        """Events whose projection may still be missing (the guard makes a repeat a no-op)."""
        return [*self.stored, *self.redelivered]


class EventStore(Protocol):
    """The append-only event store, unique on event id."""

    async def append(self, events: Sequence[PositionedEvent]) -> AppendOutcome:
        """Store events not stored yet; never fails on a duplicate."""
        ...

    async def positions(self, event_ids: Collection[str]) -> dict[str, Position]:
        """The canonical position (where it was first stored from) of each stored event among
        ``event_ids``."""
        ...

    async def session_owners(self, session_ids: Collection[str]) -> dict[str, str]:
        """The owner tenant of each session among ``session_ids`` with a stored event."""
        ...

    async def stored_positions(self, positions: Collection[Position]) -> set[Position]:
        """Which of ``positions`` an event was stored from."""
        ...

    async def get(self, event_id: str, *, tenant: str | None) -> PositionedEvent | None:
        """The stored event with its canonical position, if stored and of ``tenant`` (``None``:
        any tenant)."""
        ...

    def scan(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        batch_size: int = 1000,
        max_bytes: int | None = None,
    ) -> AsyncIterator[list[PositionedEvent]]:
        """Stored events received in ``[since, until)``, ordered by (partition, offset), in
        pages of at most ``batch_size`` that end early once they weigh ``max_bytes``
        (:class:`~ca4_worker.domain.records.WeighedPage`)."""
        ...

    async def count(self) -> int:
        """How many events are stored."""
        ...


class Projections(Protocol):
    """The ``sessions`` and ``gpus`` read models: updated idempotently, queried by the API."""

    async def apply(self, events: Sequence[PositionedEvent]) -> None:
        """Apply events exactly once, however often they are delivered."""
        ...

    async def reset(self) -> None:
        """Remove every projected document (before a rebuild)."""
        ...

    async def applied_offset(self, session_id: str, partition: int) -> int | None:
        """The offset of the last event of ``session_id`` applied from ``partition``."""
        ...

    async def session_owners(self, session_ids: Iterable[str]) -> dict[str, str]:
        """The owner tenant of each session among ``session_ids`` that has a document."""
        ...

    async def session(self, session_id: str, *, tenant: str | None) -> SessionView | None:
        """One session, if it belongs to ``tenant`` (``None``: any tenant)."""
        ...

    async def sessions(self, query: SessionQuery) -> Page[SessionView]:
        """A page of sessions."""
        ...

    async def gpu(self, gpu_uuid: str, *, tenant: str | None) -> GpuView | None:
        """``tenant``'s view of one GPU (``None``: the document of that id, ``<tenant>/<gpu
        uuid>``, else the newest sample of any tenant's GPU with that UUID; such an id wins
        over a UUID that spells it, a pre-tenancy document's bare-UUID id does not)."""
        ...

    async def gpus(self, query: GpuQuery) -> Page[GpuView]:
        """A page of GPUs."""
        ...


class StoreProgress(Protocol):
    """How far the store stage has handled each partition (stored, duplicate or
    dead-lettered), which projections must never pass."""

    def handled(self, topic: str, partition: int) -> int:
        """The offset the store stage has handled ``partition`` up to, as known now."""
        ...

    async def wait_until_stored(self, next_offsets: Mapping[tuple[str, int], int]) -> None:
        """Return once every ``(topic, partition)`` is handled up to its next offset."""
        ...


class DeadLetterSink(Protocol):
    """Where unreadable records go (durably, before their offsets are committed)."""

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        """Publish every dead letter and wait until the broker has them."""
        ...


class ObjectStore(Protocol):
    """The archive bucket."""

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist."""
        ...

    async def put(self, key: str, data: bytes) -> None:
        """Write (or overwrite) one object."""
        ...

    async def get(self, key: str) -> bytes:
        """Read one object."""
        ...

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, sorted."""
        ...
