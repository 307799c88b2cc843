"""The read models' pure state types (:class:`SessionState`, :class:`GpuLatest`) and the folds
from events to them; no I/O.

Sessions are not idempotent on their own (counts and sums), so each session document keeps
the Kafka position of the last event applied per partition and an update only applies when the
event is newer. GPUs keep the latest sample, chosen by ``(min(occurred_at, received_at),
event_id)``: a total order that does not depend on which partition, worker or replay delivered
it, so applying the same sample twice, or samples in any order, always converges to the same
document. ``received_at`` (the processor's clock) caps the client's clock, so a report dated
minutes ahead cannot hold a GPU's document (or its gauges) against the real reports after it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from enum import Enum
from typing import Any, Final, NamedTuple, TypeVar

from ca4_schemas import LEGACY_TENANT, GpuMetadataReported

from ca4_worker.application.views import GpuView, SessionView
from ca4_worker.domain.records import GpuReading, PositionedEvent

SESSION_MAX_GPU_MODELS: Final = 64
"""Most distinct GPU model names one session document records (a report holds at most 64
GPUs). Every other projected field is bounded by the contract (labels, one sample per GPU
document) or by the topic (one applied offset per partition); this is the one set a client
could grow without limit. Samples whose model falls past the cap are counted in
``gpu_models_dropped``, not stored."""

SESSION_MAX_GPUS: Final = 64
"""Most distinct GPUs (by UUID) one session projects and bills: the GPUs it met first, in offset
order, both for GPU documents (the session's ``gpu_uuids``) and for usage (its marks). A client
rotating GPU UUIDs within its sessions would otherwise create a GPU document per UUID, and new
documents cost the worker several times what updates cost (docs/architecture.md, "Tenancy"). A
report holds at most 64 GPUs, so a session keeps a whole machine of them. Samples of GPUs past
the cap are counted in the session's and the usage records' ``gpus_dropped``; they stay in the
event store and in the session's sample count, utilisation and memory peak."""


def mean_utilization_pct(sum_millipct: int, samples: int) -> float | None:
    """Mean utilisation in percent from the exact integer sum."""
    return sum_millipct / 1000 / samples if samples else None


def applied_key(partition: int) -> str:
    """Field name of a partition's last applied offset inside ``sessions.applied``."""
    return f"p{partition}"


class Merge(Enum):
    """How a read-model field combines what is stored with what a newer delta brings.

    One declaration per field drives the pure :meth:`SessionState.apply`, the stored document
    and the database's update statement (:mod:`ca4_worker.persistence.documents`), so the three
    cannot drift apart.
    """

    FIRST = "first"
    """Set when the document is created, never changed (the owner)."""
    LATEST = "latest"
    """The newest delta's value wins (``$set``)."""
    MIN = "min"
    """The smallest (``$min``); ``None`` never wins."""
    MAX = "max"
    """The largest (``$max``); ``None`` never wins."""
    SUM = "sum"
    """Added up (``$inc``): integers, so any batching gives the same total."""
    UNION = "union"
    """Appended when new, in the order given (``$addToSet`` with ``$each``)."""


def merging(how: Merge) -> dict[str, Merge]:
    """A state field's metadata: how it merges (its default is what a document without it
    reads as)."""
    return {"merge": how}


def merge_kinds(state_type: type[Any]) -> dict[str, Merge]:
    """Each stored field of a state dataclass and how it merges."""
    return {
        item.name: item.metadata["merge"] for item in fields(state_type) if "merge" in item.metadata
    }


def _merge(how: Merge, stored: Any, new: Any) -> Any:
    if how is Merge.FIRST:
        return stored
    if how is Merge.LATEST:
        return new
    if how is Merge.SUM:
        return stored + new
    if how is Merge.UNION:
        return [*stored, *(item for item in new if item not in stored)]
    present = [value for value in (stored, new) if value is not None]
    if not present:
        return None
    return min(present) if how is Merge.MIN else max(present)


def _host_facts(event: GpuMetadataReported) -> dict[str, Any]:
    """The fields a report sets outright (the latest report wins)."""
    return {
        "labels": dict(event.labels),
        "runtime": event.source.runtime,
        "hostname": event.payload.host.hostname,
        "driver_version": event.payload.host.driver_version,
    }


@dataclass(kw_only=True)
class SessionState:
    """The ``sessions`` read model of one session: pure, no I/O.

    A state folded from a few events is also the delta that :meth:`apply` merges into the
    stored one. Adding a field: declare it here with its :class:`Merge`, fill it in
    :meth:`of` (and :meth:`absorb` unless it is in :func:`_host_facts`), show it in
    :meth:`to_view`; the document and the update statement follow.
    """

    tenant: str = field(default=LEGACY_TENANT, metadata=merging(Merge.FIRST))
    """The owner: the tenant of the session's first event (documents from before tenancy have
    none and read as the legacy tenant)."""
    first_seen: datetime = field(metadata=merging(Merge.MIN))
    last_seen: datetime = field(metadata=merging(Merge.MAX))
    sample_count: int = field(default=0, metadata=merging(Merge.SUM))
    gpu_models: list[str] = field(default_factory=list, metadata=merging(Merge.UNION))
    """At most :data:`SESSION_MAX_GPU_MODELS` names."""
    gpu_models_dropped: int = field(default=0, metadata=merging(Merge.SUM))
    """GPU samples whose model did not fit under the cap."""
    gpu_uuids: list[str] = field(default_factory=list, metadata=merging(Merge.UNION))
    """The GPUs whose samples reach GPU documents, in the order first met: at most
    :data:`SESSION_MAX_GPUS` once stored, but for two workers racing in a rebalance (a delta
    holds every GPU it met)."""
    gpus_dropped: int = field(default=0, metadata=merging(Merge.SUM))
    """GPU samples left out of GPU documents: their GPU did not fit under the cap."""
    peak_memory_used_mib: float | None = field(default=None, metadata=merging(Merge.MAX))
    utilization_sum_millipct: int = field(default=0, metadata=merging(Merge.SUM))
    """Sum in thousandths of a percent: integer sums are exact in any order or batching."""
    utilization_samples: int = field(default=0, metadata=merging(Merge.SUM))
    labels: dict[str, str] = field(default_factory=dict, metadata=merging(Merge.LATEST))
    runtime: str = field(metadata=merging(Merge.LATEST))
    hostname: str = field(metadata=merging(Merge.LATEST))
    driver_version: str | None = field(default=None, metadata=merging(Merge.LATEST))
    gpu_samples: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    """Not stored: a delta's samples per GPU UUID, so that capping it counts what it drops."""

    @classmethod
    def of(cls, positioned: PositionedEvent) -> SessionState:
        """The state of a session that saw only ``positioned``'s event."""
        event = positioned.event
        gpus = positioned.gpu_readings
        memory = [gpu.memory_used_mib for gpu in gpus if gpu.memory_used_mib is not None]
        utilization = [
            gpu.utilization_gpu_pct for gpu in gpus if gpu.utilization_gpu_pct is not None
        ]
        kept = list(dict.fromkeys(gpu.name for gpu in gpus))[:SESSION_MAX_GPU_MODELS]
        samples: dict[str, int] = {}
        for gpu in gpus:
            samples[gpu.uuid] = samples.get(gpu.uuid, 0) + 1
        return cls(
            tenant=event.tenant,
            first_seen=positioned.ordered_at_ms,
            last_seen=positioned.ordered_at_ms,
            sample_count=1,
            gpu_models=kept,
            gpu_models_dropped=sum(1 for gpu in gpus if gpu.name not in kept),
            gpu_uuids=list(samples),
            gpu_samples=samples,
            peak_memory_used_mib=max(memory) if memory else None,
            utilization_sum_millipct=sum(round(value * 1000) for value in utilization),
            utilization_samples=len(utilization),
            **_host_facts(event),
        )

    def absorb(self, positioned: PositionedEvent) -> None:
        """Fold in the samples of the next event of the same session (in offset order); the
        fields a report sets outright and ``gpu_uuids`` follow with :meth:`finish`, once per
        fold.

        In place: a batch folds thousands of events per session, and one object per event
        cost a third of the projection step.
        """
        occurred_at = positioned.ordered_at_ms  # a session is never seen past its receipt
        self.first_seen = min(self.first_seen, occurred_at)
        self.last_seen = max(self.last_seen, occurred_at)
        self.sample_count += 1
        samples = self.gpu_samples
        for gpu in positioned.gpu_readings:
            samples[gpu.uuid] = samples.get(gpu.uuid, 0) + 1
            if gpu.name in self.gpu_models:
                pass
            elif len(self.gpu_models) < SESSION_MAX_GPU_MODELS:
                self.gpu_models.append(gpu.name)
            else:
                self.gpu_models_dropped += 1
            if gpu.memory_used_mib is not None and (
                self.peak_memory_used_mib is None or gpu.memory_used_mib > self.peak_memory_used_mib
            ):
                self.peak_memory_used_mib = gpu.memory_used_mib
            if gpu.utilization_gpu_pct is not None:
                self.utilization_sum_millipct += round(gpu.utilization_gpu_pct * 1000)
                self.utilization_samples += 1

    def finish(self, newest: GpuMetadataReported) -> None:
        """End a fold whose newest event is ``newest``: the fields a report sets outright, and
        the GPUs met."""
        for name, value in _host_facts(newest).items():
            setattr(self, name, value)
        self.gpu_uuids = list(self.gpu_samples)

    def capped_against(
        self, stored_models: Collection[str] = (), stored_gpus: Collection[str] = ()
    ) -> SessionState:
        """This delta as it merges into a state holding ``stored_models`` and ``stored_gpus``:
        only the new models and GPUs that fit under their caps, the rest counted in
        ``gpu_models_dropped`` and ``gpus_dropped``.

        Both are kept in the order they were first met, as :meth:`absorb` keeps them, so which
        fit does not depend on how events were batched (a rebuild keeps the same)."""
        new = [model for model in self.gpu_models if model not in stored_models]
        room = max(0, SESSION_MAX_GPU_MODELS - len(stored_models))
        kept_gpus, dropped_gpus = split_at_the_gpu_cap(self.gpu_uuids, stored_gpus)
        return replace(
            self,
            gpu_models=new[:room],
            gpu_models_dropped=self.gpu_models_dropped + len(new[room:]),
            gpu_uuids=kept_gpus,
            gpus_dropped=self.gpus_dropped
            + sum(self.gpu_samples.get(uuid, 0) for uuid in dropped_gpus),
        )

    def apply(self, delta: SessionState) -> SessionState:
        """This state with a newer ``delta`` merged in (field by field, see :class:`Merge`)."""
        capped = delta.capped_against(self.gpu_models, self.gpu_uuids)
        return SessionState(
            **{
                name: _merge(how, getattr(self, name), getattr(capped, name))
                for name, how in merge_kinds(SessionState).items()
            }
        )

    def to_view(self, session_id: str) -> SessionView:
        """What the read API answers for this session."""
        return SessionView(
            session_id=session_id,
            tenant=self.tenant,
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            sample_count=self.sample_count,
            gpu_models=sorted(self.gpu_models),
            gpu_models_dropped=self.gpu_models_dropped,
            gpus_dropped=self.gpus_dropped,
            peak_memory_used_mib=self.peak_memory_used_mib,
            mean_utilization_pct=mean_utilization_pct(
                self.utilization_sum_millipct, self.utilization_samples
            ),
            labels=self.labels,
            runtime=self.runtime,
            hostname=self.hostname,
            driver_version=self.driver_version,
        )


@dataclass
class SessionDelta:
    """Consecutive events of one session and partition (in offset order), folded."""

    session_id: str
    partition: int
    first_offset: int
    last_offset: int
    state: SessionState

    @classmethod
    def of(cls, positioned: PositionedEvent) -> SessionDelta:
        """The delta of a single event."""
        return cls(
            session_id=positioned.session_id,
            partition=positioned.position.partition,
            first_offset=positioned.position.offset,
            last_offset=positioned.position.offset,
            state=SessionState.of(positioned),
        )


def group_by_session(
    events: Iterable[PositionedEvent],
) -> dict[tuple[str, int], list[PositionedEvent]]:
    """Events per (session, partition), each list in offset order."""
    groups: dict[tuple[str, int], list[PositionedEvent]] = {}
    for positioned in sorted(events, key=lambda item: item.position):
        key = (positioned.session_id, positioned.position.partition)
        groups.setdefault(key, []).append(positioned)
    return groups


def fold_session(events: Iterable[PositionedEvent]) -> SessionDelta:
    """One delta for consecutive events of one session and partition (in offset order)."""
    remaining = iter(events)
    first = next(remaining, None)
    if first is None:
        raise ValueError("fold_session needs at least one event")
    folded = SessionDelta.of(first)
    newest = first
    for newest in remaining:
        folded.state.absorb(newest)
    if newest is not first:
        folded.last_offset = newest.position.offset
        folded.state.finish(newest.event)
    return folded


def split_at_the_gpu_cap(
    met: Iterable[str], stored: Collection[str]
) -> tuple[list[str], list[str]]:
    """The GPUs of ``met`` (in the order first met) that are new to a session holding
    ``stored``: those that fit under :data:`SESSION_MAX_GPUS`, and those past it."""
    known = set(stored)
    new = [uuid for uuid in met if uuid not in known]
    room = max(0, SESSION_MAX_GPUS - len(known))
    return new[:room], new[room:]


def past_applied(
    group: Sequence[PositionedEvent], applied: Mapping[str, int] | None, partition: int
) -> list[PositionedEvent]:
    """The events of ``group`` (one session and partition) after the session's last applied
    offset on ``partition`` (``applied``: the stored ``applied``, ``None`` for a new session)."""
    offset = (applied or {}).get(applied_key(partition))
    return [item for item in group if offset is None or item.position.offset > offset]


def gpus_kept(
    groups: Mapping[tuple[str, int], Sequence[PositionedEvent]],
    stored: Mapping[str, Mapping[str, Any]],
) -> dict[str, set[str]]:
    """Per session of ``groups`` (as :func:`group_by_session` makes them) that reports a GPU
    past :data:`SESSION_MAX_GPUS`, the GPUs whose samples may reach GPU documents; sessions
    whose every GPU may are left out. ``stored``: each stored session's ``applied`` and
    ``gpu_uuids``, as read before the session is written.

    The GPUs kept are the stored ones and the new ones that fit, met in the events past the
    applied offsets: the events the session's own write folds, so the two agree even where the
    stored ``gpu_uuids`` is not what the session met first (a document an older worker wrote).
    """
    met: dict[str, set[str]] = {}
    fresh: dict[str, dict[str, None]] = {}  # in the order first met
    for (session_id, partition), group in groups.items():
        seen = met.setdefault(session_id, set())
        for positioned in group:
            seen.update(gpu.uuid for gpu in positioned.gpu_readings)
        new = fresh.setdefault(session_id, {})
        for positioned in past_applied(group, stored.get(session_id, {}).get("applied"), partition):
            new.update(dict.fromkeys(gpu.uuid for gpu in positioned.gpu_readings))
    kept: dict[str, set[str]] = {}
    for session_id, seen in met.items():
        known = stored.get(session_id, {}).get("gpu_uuids", ())
        allowed = set(known).union(split_at_the_gpu_cap(fresh[session_id], known)[0])
        if not seen <= allowed:
            kept[session_id] = allowed
    return kept


def gpu_document_id(tenant: str, gpu_uuid: str) -> str:
    """A GPU projection's id: one document per tenant and GPU, so a tenant reporting another
    tenant's GPU UUID (a Colab GPU handed to the next user, or a forged report) never touches
    the other tenant's document. Tenants never contain ``/``."""
    return f"{tenant}/{gpu_uuid}"


def is_tenancy_gpu_document(document: Mapping[str, Any]) -> bool:
    """Whether a GPU document's id is its tenant's and UUID's, as every one since tenancy; one
    projected before it has the bare UUID for id until the projections are rebuilt."""
    tenant, gpu_uuid = document.get("tenant"), document.get("gpu_uuid")
    return (
        isinstance(tenant, str)
        and isinstance(gpu_uuid, str)
        and document.get("_id") == gpu_document_id(tenant, gpu_uuid)
    )


@dataclass(frozen=True)
class GpuLatest:
    """The ``gpus`` read model of one tenant's GPU: its newest sample. Pure, no I/O."""

    gpu_uuid: str
    tenant: str
    gpu_name: str
    session_id: str
    occurred_at: datetime
    """The sample's ``occurred_at``, but never later than its ``received_at`` (milliseconds,
    :attr:`~ca4_worker.domain.records.PositionedEvent.ordered_at_ms`)."""
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

    def apply(self, candidate: GpuLatest) -> GpuLatest:
        """Whichever of this state and ``candidate`` holds the newer sample."""
        return candidate if candidate.order_key > self.order_key else self

    def to_view(self) -> GpuView:
        """What the read API answers for this GPU."""
        return GpuView(
            gpu_uuid=self.gpu_uuid,
            tenant=self.tenant,
            gpu_name=self.gpu_name,
            session_id=self.session_id,
            last_seen=self.occurred_at,
            event_id=self.event_id,
            sample=self.sample,
        )


K = TypeVar("K")


class NewestReading(NamedTuple):
    """A GPU's newest reading among some events, and where it came from."""

    order_key: tuple[datetime, str]
    """``(min(occurred_at, received_at) in milliseconds, event id)``: the total order that
    picks it."""
    positioned: PositionedEvent
    gpu: GpuReading


def newest_readings(
    events: Iterable[PositionedEvent],
    key: Callable[[PositionedEvent, GpuReading], K],
    kept: Mapping[str, Collection[str]] | None = None,
) -> dict[K, NewestReading]:
    """The newest reading per ``key`` among ``events``, by the order GPU documents and the GPU
    gauges share; of the sessions ``kept`` names, only the GPUs it lists."""
    newest: dict[K, NewestReading] = {}
    for positioned in events:
        order_key = (positioned.ordered_at_ms, positioned.event_id)
        only = kept.get(positioned.session_id) if kept else None
        for gpu in positioned.gpu_readings:
            if only is not None and gpu.uuid not in only:
                continue
            which = key(positioned, gpu)
            current = newest.get(which)
            if current is None or order_key > current.order_key:
                newest[which] = NewestReading(order_key, positioned, gpu)
    return newest


def latest_gpu_samples(
    events: Iterable[PositionedEvent], kept: Mapping[str, Collection[str]] | None = None
) -> list[GpuLatest]:
    """The newest sample per tenant and GPU UUID among ``events`` (only the winners are
    serialised), leaving out the GPUs past their session's cap (``kept``, from
    :func:`gpus_kept`)."""
    newest = newest_readings(events, lambda positioned, gpu: (positioned.tenant, gpu.uuid), kept)
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
            sample=gpu.sample.model_dump(mode="json"),
        )
        for order_key, positioned, gpu in newest.values()
    ]
