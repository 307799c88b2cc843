"""Pure folds from events to projection updates.

Sessions are not idempotent on their own (counts and sums), so each session document keeps
the Kafka position of the last event applied per partition and an update only applies when the
event is newer. GPUs keep the latest sample, chosen by ``(occurred_at, event_id)``: a total
order that does not depend on which partition, worker or replay delivered it, so applying the
same sample twice, or samples in any order, always converges to the same document.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ca4_worker.domain.records import PositionedEvent

SESSION_MAX_GPU_MODELS: Final = 64
"""Most distinct GPU model names one session document records (a report holds at most 64
GPUs). Every other projected field is bounded by the contract (labels, one sample per GPU
document) or by the topic (one applied offset per partition); this is the one set a client
could grow without limit. Samples whose model falls past the cap are counted in
``gpu_models_dropped``, not stored."""


def to_millis(moment: datetime) -> datetime:
    """``moment`` truncated to milliseconds, the precision BSON dates keep.

    Comparisons then give the same answer in Python and in the database.
    """
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def mean_utilization_pct(sum_millipct: int, samples: int) -> float | None:
    """Mean utilisation in percent from the exact integer sum."""
    return sum_millipct / 1000 / samples if samples else None


def applied_key(partition: int) -> str:
    """Field name of a partition's last applied offset inside ``sessions.applied``."""
    return f"p{partition}"


@dataclass
class SessionDelta:
    """The effect of consecutive events of one session (in offset order) on its document."""

    session_id: str
    tenant: str
    """The session's owner (every event of a delta has it: see :mod:`ca4_worker.domain.tenancy`)."""
    partition: int
    first_offset: int
    last_offset: int
    first_seen: datetime
    last_seen: datetime
    sample_count: int
    gpu_models: set[str]
    """At most :data:`SESSION_MAX_GPU_MODELS` names (bounds a batch's memory too)."""
    gpu_models_dropped: int
    """GPU samples whose model did not fit under the cap."""
    peak_memory_used_mib: float | None
    utilization_sum_millipct: int
    """Sum in thousandths of a percent: integer sums are exact in any order or batching."""
    utilization_samples: int
    labels: dict[str, str]
    runtime: str
    hostname: str

    @classmethod
    def of(cls, positioned: PositionedEvent) -> SessionDelta:
        """The delta of a single event."""
        event = positioned.event
        gpus = event.payload.gpus
        memory = [gpu.memory_used_mib for gpu in gpus if gpu.memory_used_mib is not None]
        utilization = [
            gpu.utilization_gpu_pct for gpu in gpus if gpu.utilization_gpu_pct is not None
        ]
        kept = set(sorted({gpu.name for gpu in gpus})[:SESSION_MAX_GPU_MODELS])
        return cls(
            session_id=event.session_id,
            tenant=event.tenant,
            partition=positioned.position.partition,
            first_offset=positioned.position.offset,
            last_offset=positioned.position.offset,
            first_seen=to_millis(event.occurred_at),
            last_seen=to_millis(event.occurred_at),
            sample_count=1,
            gpu_models=kept,
            gpu_models_dropped=sum(1 for gpu in gpus if gpu.name not in kept),
            peak_memory_used_mib=max(memory) if memory else None,
            utilization_sum_millipct=sum(round(value * 1000) for value in utilization),
            utilization_samples=len(utilization),
            labels=dict(event.labels),
            runtime=event.source.runtime,
            hostname=event.payload.host.hostname,
        )

    def absorb(self, later: PositionedEvent) -> None:
        """Fold in the next event of the same session and partition (in offset order).

        In place: a batch folds thousands of events per session, and one object per event
        cost a third of the projection step.
        """
        event = later.event
        occurred_at = to_millis(event.occurred_at)
        self.last_offset = later.position.offset
        self.first_seen = min(self.first_seen, occurred_at)
        self.last_seen = max(self.last_seen, occurred_at)
        self.sample_count += 1
        for gpu in event.payload.gpus:
            if gpu.name in self.gpu_models or len(self.gpu_models) < SESSION_MAX_GPU_MODELS:
                self.gpu_models.add(gpu.name)
            else:
                self.gpu_models_dropped += 1
            if gpu.memory_used_mib is not None and (
                self.peak_memory_used_mib is None or gpu.memory_used_mib > self.peak_memory_used_mib
            ):
                self.peak_memory_used_mib = gpu.memory_used_mib
            if gpu.utilization_gpu_pct is not None:
                self.utilization_sum_millipct += round(gpu.utilization_gpu_pct * 1000)
                self.utilization_samples += 1
        self.labels = dict(event.labels)
        self.runtime = event.source.runtime
        self.hostname = event.payload.host.hostname


def capped_gpu_models(stored: Collection[str], delta: SessionDelta) -> tuple[list[str], int]:
    """The models of ``delta`` to add to the ``stored`` ones under the cap, and the samples
    counted as dropped (``delta``'s own plus one per new model that does not fit)."""
    new = sorted(delta.gpu_models.difference(stored))
    room = max(0, SESSION_MAX_GPU_MODELS - len(stored))
    return new[:room], delta.gpu_models_dropped + len(new[room:])


def group_by_session(
    events: Iterable[PositionedEvent],
) -> dict[tuple[str, int], list[PositionedEvent]]:
    """Events per (session, partition), each list in offset order."""
    groups: dict[tuple[str, int], list[PositionedEvent]] = {}
    for positioned in sorted(events, key=lambda item: item.position):
        key = (positioned.event.session_id, positioned.position.partition)
        groups.setdefault(key, []).append(positioned)
    return groups


def fold_session(events: Iterable[PositionedEvent]) -> SessionDelta:
    """One delta for consecutive events of one session and partition (in offset order)."""
    remaining = iter(events)
    first = next(remaining, None)
    if first is None:
        raise ValueError("fold_session needs at least one event")
    folded = SessionDelta.of(first)
    for positioned in remaining:
        folded.absorb(positioned)
    return folded


def gpu_document_id(tenant: str, gpu_uuid: str) -> str:
    """A GPU projection's id: one document per tenant and GPU, so a tenant reporting another
    tenant's GPU UUID (a Colab GPU handed to the next user, or a forged report) never touches
    the other tenant's document. Tenants never contain ``/``."""
    return f"{tenant}/{gpu_uuid}"


@dataclass(frozen=True)
class GpuLatest:
    """The newest sample of one GPU, as reported by one tenant."""

    gpu_uuid: str
    tenant: str
    gpu_name: str
    session_id: str
    occurred_at: datetime
    event_id: str
    partition: int
    offset: int
    sample: dict[str, Any]

    @property
    def document_id(self) -> str:
        """The id of this tenant's document for this GPU."""
        return gpu_document_id(self.tenant, self.gpu_uuid)

    @property
    def order_key(self) -> tuple[datetime, str]:
        """The total order that picks the latest sample."""
        return (self.occurred_at, self.event_id)


def latest_gpu_samples(events: Iterable[PositionedEvent]) -> list[GpuLatest]:
    """The newest sample per tenant and GPU UUID among ``events`` (only the winners are
    serialised)."""
    newest: dict[tuple[str, str], tuple[tuple[datetime, str], PositionedEvent, Any]] = {}
    for positioned in events:
        event = positioned.event
        order_key = (to_millis(event.occurred_at), positioned.event_id)
        for gpu in event.payload.gpus:
            current = newest.get((event.tenant, gpu.uuid))
            if current is None or order_key > current[0]:
                newest[(event.tenant, gpu.uuid)] = (order_key, positioned, gpu)
    return [
        GpuLatest(
            gpu_uuid=gpu.uuid,
            tenant=positioned.event.tenant,
            gpu_name=gpu.name,
            session_id=positioned.event.session_id,
            occurred_at=order_key[0],
            event_id=positioned.event_id,
            partition=positioned.position.partition,
            offset=positioned.position.offset,
            sample=gpu.model_dump(mode="json"),
        )
        for order_key, positioned, gpu in newest.values()
    ]
