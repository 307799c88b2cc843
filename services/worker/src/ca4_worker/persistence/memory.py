"""In-memory adapters with the same semantics as the real ones, for fast unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from datetime import datetime

import bson
from ca4_schemas import LEGACY_TENANT

from ca4_worker.application.ports import AppendOutcome, UnavailableError
from ca4_worker.application.views import (
    GpuQuery,
    GpuView,
    Page,
    SessionQuery,
    SessionView,
    UnknownCursorError,
    page_of,
    read_page,
)
from ca4_worker.domain.projection import (
    applied_key,
    fold_session,
    gpus_kept,
    group_by_session,
    is_tenancy_gpu_document,
    latest_gpu_samples,
    past_applied,
)
from ca4_worker.domain.records import (
    DeadLetter,
    Position,
    PositionedEvent,
    WeighedPage,
    event_weight,
)
from ca4_worker.persistence.documents import (
    GPUS,
    SESSION_NOT_READ,
    SESSIONS,
    Doc,
    gpu_document,
    gpu_state,
    new_session_document,
    session_document,
    session_state,
)
from ca4_worker.persistence.queries import document_id, gpu_view, session_view


class Outage:
    """A switch tests flip to make an in-memory adapter behave as if its server were down."""

    def __init__(self) -> None:
        self.down = False
        self.failures_left = 0

    def check(self) -> None:
        """Raise :class:`UnavailableError` while down or while injected failures remain."""
        if self.failures_left > 0:
            self.failures_left -= 1
            raise UnavailableError("injected failure")
        if self.down:
            raise UnavailableError("in-memory dependency is down")


class InMemoryEventStore:
    """Events keyed by id, first position wins."""

    def __init__(self) -> None:
        self.events: dict[str, PositionedEvent] = {}
        self.outage = Outage()

    async def append(self, events: Sequence[PositionedEvent]) -> AppendOutcome:
        """Store the events not stored yet."""
        self.outage.check()
        outcome = AppendOutcome()
        for positioned in events:
            existing = self.events.get(positioned.event_id)
            if existing is None:
                self.events[positioned.event_id] = positioned
                outcome.stored.append(positioned)
            else:
                outcome.add_copy(positioned, existing.position, existing.event.tenant)
        return outcome

    async def positions(self, event_ids: Collection[str]) -> dict[str, Position]:
        """Canonical positions of the stored events among ``event_ids``."""
        self.outage.check()
        return {
            event_id: self.events[event_id].position
            for event_id in event_ids
            if event_id in self.events
        }

    async def session_owners(self, session_ids: Collection[str]) -> dict[str, str]:
        """The tenant of the stored events of each session."""
        self.outage.check()
        wanted = set(session_ids)
        return {
            item.event.session_id: item.event.tenant
            for item in self.events.values()
            if item.event.session_id in wanted
        }

    async def stored_positions(self, positions: Collection[Position]) -> set[Position]:
        """Which of ``positions`` an event was stored from."""
        self.outage.check()
        stored = {item.position for item in self.events.values()}
        return stored & set(positions)

    async def get(self, event_id: str, *, tenant: str | None) -> PositionedEvent | None:
        """The stored event, if of ``tenant``."""
        self.outage.check()
        stored = self.events.get(event_id)
        if stored is None or (tenant is not None and stored.event.tenant != tenant):
            return None
        return stored

    async def scan(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        batch_size: int = 1000,
        max_bytes: int | None = None,
    ) -> AsyncIterator[list[PositionedEvent]]:
        """Stored events in (partition, offset) order."""
        selected = sorted(
            (
                item
                for item in self.events.values()
                if (since is None or item.event.received_at >= since)
                and (until is None or item.event.received_at < until)
            ),
            key=lambda item: item.position,
        )
        page = WeighedPage[PositionedEvent](batch_size, max_bytes)
        for item in selected:
            if page.add(item, 0 if max_bytes is None else event_weight(item.event)):
                yield page.take()
        if page.items:
            yield page.take()

    async def count(self) -> int:
        """How many events are stored."""
        return len(self.events)


class InMemoryProjections:
    """Session and GPU projections holding the same documents as the database, built by the
    same state types and mapping (:mod:`ca4_worker.persistence.documents`)."""

    def __init__(self) -> None:
        self.session_docs: dict[str, Doc] = {}
        self.gpu_docs: dict[str, Doc] = {}
        """By :func:`gpu_document_id`, like the ``gpus`` collection."""
        self.outage = Outage()
        self.apply_outage = Outage()
        """Fails only :meth:`apply`: a crash between storing a batch and projecting it."""

    def documents(self) -> dict[str, list[Doc]]:
        """Every stored document per collection, in id order (what the database would hold)."""
        return {
            SESSIONS: [self.session_docs[key] for key in sorted(self.session_docs)],
            GPUS: [self.gpu_docs[key] for key in sorted(self.gpu_docs)],
        }

    async def apply(self, events: Sequence[PositionedEvent]) -> None:
        """Apply each event at most once per session position."""
        self.outage.check()
        self.apply_outage.check()
        groups = group_by_session(events)
        kept = gpus_kept(
            groups,
            {
                session_id: self.session_docs[session_id]
                for session_id, _ in groups
                if session_id in self.session_docs
            },
        )
        for (session_id, partition), group in groups.items():
            doc = self.session_docs.get(session_id)
            applied = dict(doc["applied"]) if doc else {}
            fresh = past_applied(group, applied, partition)
            if not fresh:
                continue
            delta = fold_session(fresh)
            if doc is None:
                self.session_docs[session_id] = new_session_document(delta)
                continue
            applied[applied_key(partition)] = delta.last_offset
            state = session_state(doc).apply(delta.state)
            self.session_docs[session_id] = session_document(session_id, applied, state)
        for latest in latest_gpu_samples(events, kept):
            current = self.gpu_docs.get(latest.document_id)
            newest = latest if current is None else gpu_state(current).apply(latest)
            self.gpu_docs[latest.document_id] = gpu_document(newest)

    async def reset(self) -> None:
        """Forget every projection."""
        self.session_docs.clear()
        self.gpu_docs.clear()

    async def applied_offset(self, session_id: str, partition: int) -> int | None:
        """The last applied offset."""
        doc = self.session_docs.get(session_id, {})
        value = doc.get("applied", {}).get(applied_key(partition))
        return int(value) if value is not None else None

    async def session_owners(self, session_ids: Iterable[str]) -> dict[str, str]:
        """The owner of each known session."""
        self.outage.check()
        return {
            session_id: self.session_docs[session_id].get("tenant", LEGACY_TENANT)
            for session_id in session_ids
            if session_id in self.session_docs
        }

    async def session(self, session_id: str, *, tenant: str | None) -> SessionView | None:
        """One session, if of ``tenant``."""
        doc = self.session_docs.get(session_id)
        view = session_view(doc) if doc else None
        return view if view is not None and tenant in (None, view.tenant) else None

    async def sessions(self, query: SessionQuery) -> Page[SessionView]:
        """A page of sessions ordered by id."""
        selected = [
            doc
            for doc, view in ((doc, session_view(doc)) for doc in self.documents()[SESSIONS])
            if query.tenant in (None, view.tenant)
            and (query.after is None or view.session_id > query.after)
            and (query.label is None or view.labels.get(query.label[0]) == query.label[1])
            and (query.gpu_model is None or query.gpu_model in view.gpu_models)
            and (query.runtime is None or view.runtime == query.runtime)
            and (query.seen_since is None or view.last_seen >= query.seen_since)
            and (query.seen_until is None or view.first_seen < query.seen_until)
        ]
        docs, more = await read_page(
            _each(selected),
            limit=query.limit,
            max_bytes=query.max_bytes,
            weight=lambda doc: _stored_bytes(
                {name: value for name, value in doc.items() if name not in SESSION_NOT_READ}
            ),
        )
        return page_of(docs, more=more, view=session_view, cursor=document_id)

    async def gpu(self, gpu_uuid: str, *, tenant: str | None) -> GpuView | None:
        """``tenant``'s view of one GPU, or (``None``) the document of that id, else the newest
        of any tenant's with that UUID."""
        exact = self.gpu_docs.get(gpu_uuid) if tenant is None else None
        if exact is not None and is_tenancy_gpu_document(exact):
            return gpu_view(exact)
        views = [
            gpu_view(doc)
            for doc_id, doc in self.gpu_docs.items()
            if tenant in (None, doc.get("tenant"))
            and (doc.get("gpu_uuid") == gpu_uuid or (tenant is None and doc_id == gpu_uuid))
        ]
        return max(views, key=lambda view: (view.last_seen, view.event_id), default=None)

    async def gpus(self, query: GpuQuery) -> Page[GpuView]:
        """A page of GPUs ordered by document id (tenant, then UUID)."""
        if query.after_names_no_tenant and query.after not in self.gpu_docs:
            raise UnknownCursorError(str(query.after))
        selected = [
            doc
            for doc in self.documents()[GPUS]
            if query.tenant in (None, doc.get("tenant", LEGACY_TENANT))
            and (query.after is None or doc["_id"] > query.after)
            and (query.session_id is None or doc["session_id"] == query.session_id)
            and (query.gpu_name is None or doc["gpu_name"] == query.gpu_name)
        ]
        docs, more = await read_page(
            _each(selected), limit=query.limit, max_bytes=query.max_bytes, weight=_stored_bytes
        )
        return page_of(docs, more=more, view=gpu_view, cursor=document_id)


async def _each(docs: Iterable[Doc]) -> AsyncIterator[Doc]:
    for doc in docs:
        yield doc


def _stored_bytes(doc: Doc) -> int:
    """What the database weighs a document by: its BSON bytes."""
    return len(bson.encode(doc))


class InMemoryDeadLetters:
    """Collects dead letters."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []
        self.outage = Outage()

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        """Keep the letters."""
        self.outage.check()
        self.letters.extend(letters)


class InMemoryObjectStore:
    """A bucket in a dict."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.outage = Outage()
        self.puts = 0

    async def ensure_bucket(self) -> None:
        """The bucket always exists."""
        self.outage.check()

    async def put(self, key: str, data: bytes) -> None:
        """Write one object."""
        self.outage.check()
        self.puts += 1
        self.objects[key] = data

    async def get(self, key: str) -> bytes:
        """Read one object."""
        self.outage.check()
        return self.objects[key]

    async def list_keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix``."""
        self.outage.check()
        return sorted(key for key in self.objects if key.startswith(prefix))
