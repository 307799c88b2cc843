"""In-memory adapters with the same semantics as the real ones, for fast unit tests."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any

from ca4_schemas import LEGACY_TENANT

from ca4_worker.application.ports import AppendOutcome, UnavailableError
from ca4_worker.application.views import GpuQuery, GpuView, Page, SessionQuery, SessionView
from ca4_worker.domain.projection import (
    SessionDelta,
    applied_key,
    capped_gpu_models,
    fold_session,
    group_by_session,
    latest_gpu_samples,
    mean_utilization_pct,
)
from ca4_worker.domain.records import DeadLetter, PositionedEvent


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
            elif existing.position == positioned.position:
                outcome.redelivered.append(positioned)
            else:
                outcome.duplicates.append(positioned)
        return outcome

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
        for start in range(0, len(selected), batch_size):
            yield selected[start : start + batch_size]

    async def count(self) -> int:
        """How many events are stored."""
        return len(self.events)


def session_document_update(doc: dict[str, Any], delta: SessionDelta) -> dict[str, Any]:
    """``doc`` with ``delta`` applied (the in-memory twin of the MongoDB update)."""
    updated = copy.deepcopy(doc)
    updated.setdefault("tenant", delta.tenant)
    updated.setdefault("applied", {})[applied_key(delta.partition)] = delta.last_offset
    updated["first_seen"] = min(doc.get("first_seen", delta.first_seen), delta.first_seen)
    updated["last_seen"] = max(doc.get("last_seen", delta.last_seen), delta.last_seen)
    updated["sample_count"] = doc.get("sample_count", 0) + delta.sample_count
    stored_models = doc.get("gpu_models", [])
    added, dropped = capped_gpu_models(stored_models, delta)
    updated["gpu_models"] = sorted([*stored_models, *added])
    updated["gpu_models_dropped"] = doc.get("gpu_models_dropped", 0) + dropped
    peaks = [
        p for p in (doc.get("peak_memory_used_mib"), delta.peak_memory_used_mib) if p is not None
    ]
    updated["peak_memory_used_mib"] = max(peaks) if peaks else None
    updated["utilization_sum_millipct"] = (
        doc.get("utilization_sum_millipct", 0) + delta.utilization_sum_millipct
    )
    updated["utilization_samples"] = doc.get("utilization_samples", 0) + delta.utilization_samples
    updated["labels"] = delta.labels
    updated["runtime"] = delta.runtime
    updated["hostname"] = delta.hostname
    return updated


def session_view(session_id: str, doc: dict[str, Any]) -> SessionView:
    """The API view of a session document."""
    samples = doc.get("utilization_samples", 0)
    return SessionView(
        session_id=session_id,
        tenant=doc.get("tenant", LEGACY_TENANT),
        first_seen=doc["first_seen"],
        last_seen=doc["last_seen"],
        sample_count=doc["sample_count"],
        gpu_models=sorted(doc.get("gpu_models", [])),
        gpu_models_dropped=doc.get("gpu_models_dropped", 0),
        peak_memory_used_mib=doc.get("peak_memory_used_mib"),
        mean_utilization_pct=mean_utilization_pct(doc["utilization_sum_millipct"], samples),
        labels=doc.get("labels", {}),
        runtime=doc["runtime"],
        hostname=doc["hostname"],
    )


class InMemoryProjections:
    """Session and GPU projections with the position guard of the MongoDB adapter."""

    def __init__(self) -> None:
        self.session_docs: dict[str, dict[str, Any]] = {}
        self.gpu_docs: dict[str, GpuView] = {}
        """By :func:`gpu_document_id`, like the ``gpus`` collection."""
        self.outage = Outage()
        self.apply_outage = Outage()
        """Fails only :meth:`apply`: a crash between storing a batch and projecting it."""

    async def apply(self, events: Sequence[PositionedEvent]) -> None:
        """Apply each event at most once per session position."""
        self.outage.check()
        self.apply_outage.check()
        for (session_id, partition), group in group_by_session(events).items():
            doc = self.session_docs.get(session_id, {})
            applied = doc.get("applied", {}).get(applied_key(partition), -1)
            fresh = [item for item in group if item.position.offset > applied]
            if fresh:
                self.session_docs[session_id] = session_document_update(doc, fold_session(fresh))
        for latest in latest_gpu_samples(events):
            current = self.gpu_docs.get(latest.document_id)
            if current is None or (current.last_seen, current.event_id) < latest.order_key:
                self.gpu_docs[latest.document_id] = GpuView(
                    gpu_uuid=latest.gpu_uuid,
                    tenant=latest.tenant,
                    gpu_name=latest.gpu_name,
                    session_id=latest.session_id,
                    last_seen=latest.occurred_at,
                    event_id=latest.event_id,
                    sample=latest.sample,
                )

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
        view = session_view(session_id, doc) if doc else None
        return view if view is not None and tenant in (None, view.tenant) else None

    async def sessions(self, query: SessionQuery) -> Page[SessionView]:
        """A page of sessions ordered by id."""
        views = [session_view(key, doc) for key, doc in sorted(self.session_docs.items())]
        selected = [
            view
            for view in views
            if query.tenant in (None, view.tenant)
            and (query.after is None or view.session_id > query.after)
            and (query.label is None or view.labels.get(query.label[0]) == query.label[1])
            and (query.gpu_model is None or query.gpu_model in view.gpu_models)
            and (query.runtime is None or view.runtime == query.runtime)
            and (query.seen_since is None or view.last_seen >= query.seen_since)
            and (query.seen_until is None or view.first_seen < query.seen_until)
        ]
        page = selected[: query.limit]
        more = len(selected) > query.limit
        return Page(items=page, next_cursor=page[-1].session_id if more else None)

    async def gpu(self, gpu_uuid: str, *, tenant: str | None) -> GpuView | None:
        """``tenant``'s view of one GPU, or the newest of any tenant's."""
        views = [
            view
            for view in self.gpu_docs.values()
            if view.gpu_uuid == gpu_uuid and tenant in (None, view.tenant)
        ]
        return max(views, key=lambda view: (view.last_seen, view.event_id), default=None)

    async def gpus(self, query: GpuQuery) -> Page[GpuView]:
        """A page of GPUs ordered by document id (tenant, then UUID)."""
        selected = [
            (document_id, view)
            for document_id, view in sorted(self.gpu_docs.items())
            if query.tenant in (None, view.tenant)
            and (query.after is None or document_id > query.after)
            and (query.session_id is None or view.session_id == query.session_id)
            and (query.gpu_name is None or view.gpu_name == query.gpu_name)
        ]
        page = selected[: query.limit]
        more = len(selected) > query.limit
        return Page(items=[view for _, view in page], next_cursor=page[-1][0] if more else None)


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
