"""The worker's Prometheus metrics (names shared with dashboards and alerts)."""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ca4_worker.core.gpu_fields import DCGM_LABELS, GPU_FIELDS, bounded_label, dcgm_labels
from ca4_worker.core.series_table import SeriesTable
from ca4_worker.domain.dead_letters import DEAD_LETTER_CLASSES
from ca4_worker.domain.projection import newest_readings
from ca4_worker.domain.records import PositionedEvent

EVENTS = Counter(
    "ca4_worker_events",
    "Events handled by the store subscriber, by result.",
    ["result"],
)
PARTITION_STORED = Counter(
    "ca4_worker_partition_events_stored",
    "Events newly stored, per partition: with the consumer lag, shows a partition that stalls.",
    ["partition"],
)
PROCESSING_SECONDS = Histogram(
    "ca4_worker_processing_seconds",
    "Time to decode and store one batch (projection has its own stages).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
END_TO_END_SECONDS = Histogram(
    "ca4_worker_end_to_end_latency_seconds",
    "From the processor's received_at to the event being stored.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
PROJECTED_SECONDS = Histogram(
    "ca4_worker_projected_latency_seconds",
    "From the processor's received_at to the event being visible in the session projection.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STORE_STAGE_SECONDS = Histogram(
    "ca4_worker_store_stage_seconds",
    "Time per store cycle in each stage: fetch_wait (last commit to the next batch, idle "
    "time included), decode, append, dead_letters, commit. Shows where a report's latency "
    "to stored goes.",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
STORE_STAGES = ("fetch_wait", "decode", "append", "dead_letters", "commit")
PROJECTION_STAGE_SECONDS = Histogram(
    "ca4_worker_projection_stage_seconds",
    "Time per projection cycle in each stage: fetch_wait, wait_store (until the store has "
    "handled the batch), decode, resolve (which records the store kept), apply, "
    "dead_letters, commit. Shows where a report's latency to projected goes.",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
PROJECTION_STAGES = (
    "fetch_wait",
    "wait_store",
    "decode",
    "resolve",
    "apply",
    "dead_letters",
    "commit",
)
PROJECTION_RECORDS = Counter(
    "ca4_worker_projection_records",
    "Records the projection stage read, by source: handoff (the store stage in this process "
    "decided them) or decoded (decoded again and looked up in the event store: another worker "
    "stores the partition, the worker restarted, or the handoff was full).",
    ["source"],
)
CONSUMER_LAG = Gauge(
    "ca4_worker_consumer_lag",
    "Messages on the topic not yet committed by a consumer group, per partition.",
    ["group", "partition"],
)
LAG_REFRESHED = Gauge(
    "ca4_worker_lag_refreshed_timestamp_seconds",
    "When the lag monitor last measured every group's lag (Unix time): the lag gauges keep "
    "their last values while it fails, so an old time here says they are stale.",
)
ARCHIVE_LAG = Gauge(
    "ca4_worker_archive_lag",
    "Messages not yet archived (consumed but unflushed, plus backlog), per partition.",
    ["partition"],
)
DEAD_LETTERS = Counter(
    "ca4_worker_dead_letters",
    "Records sent to the dead-letter topic, by error class and tenant (empty: not attributable "
    "to a tenant of the keys, such as a record that never went through the processor).",
    ["error_class", "tenant"],
)
UNATTRIBUTED = ""
"""The ``tenant`` label of dead letters of no known tenant."""
# Every class from the start, at 0: a series that first appears at 1 is no increase to
# Prometheus, so a class's first dead letters would never raise CA4DeadLettersGrowing.
for _error_class in DEAD_LETTER_CLASSES:
    DEAD_LETTERS.labels(_error_class, UNATTRIBUTED)
_dead_letter_tenants: set[str] = {UNATTRIBUTED}


def count_dead_letter(error_class: str, tenant: str) -> None:
    """Count one dead letter of ``tenant`` (a label the caller bounded to the keys' tenants).

    A tenant's first letter starts every class of that tenant at 0: that first series appears
    at 1 (the alert counts a series that is new by its value), and the tenant's later letters
    of any class are then increases of a series that was there.
    """
    if tenant not in _dead_letter_tenants:
        _dead_letter_tenants.add(tenant)
        for error_class_ in DEAD_LETTER_CLASSES:
            DEAD_LETTERS.labels(error_class_, tenant)
    DEAD_LETTERS.labels(error_class, tenant).inc()


READ_SECONDS = Counter(
    "ca4_worker_read_seconds",
    "Seconds reads of the read API held a slot, by the tenant read ('*': read:all keys): who "
    "keeps the read API (and the event loop the consumers share) busy.",
    ["tenant"],
)
READS_REFUSED = Counter(
    "ca4_worker_reads_refused",
    "Reads answered 429 because their tenant had spent its read time "
    "(CA4_READ_BUDGET_PER_TENANT), by the tenant read ('*': read:all keys).",
    ["tenant"],
)
ARCHIVE_OBJECTS = Counter(
    "ca4_worker_archive_objects",
    "Archive objects uploaded to S3.",
)
GPU_LABELS = ("session_id", "gpu_uuid", "gpu_name", "tenant")
"""Labels of the original five ``ca4_gpu_*`` gauges, kept while dashboards and alerts move to
the DCGM names (see :mod:`ca4_worker.core.gpu_fields`)."""
_LEGACY_FIELDS = {
    "ca4_gpu_utilization_pct": ("utilization_gpu_pct", "Latest GPU utilisation."),
    "ca4_gpu_memory_used_mib": ("memory_used_mib", "Latest GPU memory used."),
    "ca4_gpu_memory_total_mib": ("memory_total_mib", "GPU memory size."),
    "ca4_gpu_temperature_c": ("temperature_gpu_c", "Latest GPU temperature."),
    "ca4_gpu_power_draw_w": ("power_draw_w", "Latest GPU power draw."),
}
LEGACY_GPU_SERIES = SeriesTable(
    GPU_LABELS, [(metric, documentation) for metric, (_, documentation) in _LEGACY_FIELDS.items()]
)
DCGM_SERIES = SeriesTable(DCGM_LABELS, [(field.metric, field.help) for field in GPU_FIELDS])
"""One gauge per exported contract field, DCGM-named where DCGM has the field."""
GPU_REGISTRY = CollectorRegistry(auto_describe=False)
"""Both tables, apart from the default registry: ``/metrics`` writes them from their rendered
lines (:meth:`SeriesTable.exposition`), the rest with ``generate_latest``."""
GPU_REGISTRY.register(LEGACY_GPU_SERIES)
GPU_REGISTRY.register(DCGM_SERIES)


def gpu_exposition() -> str:
    """Every GPU series in Prometheus' text format."""
    return gpu_exposition_bytes().decode()


def gpu_exposition_bytes() -> bytes:
    """:func:`gpu_exposition` in UTF-8, as the tables keep it (no text copy of the body)."""
    return LEGACY_GPU_SERIES.render() + DCGM_SERIES.render()


GPU_SERIES_REFUSED = Counter(
    "ca4_worker_gpu_series_refused",
    "GPU readings that got no series, by tenant and reason: tenant_cap (the tenant holds "
    "CA4_GPU_SERIES_MAX_PER_TENANT series sets, counting those gone within "
    "CA4_GPU_SERIES_TTL_S of their creation) or series_max (the worker holds CA4_GPU_SERIES_MAX "
    "and the tenant no fewer than any other).",
    ["tenant", "reason"],
)
_Refusal = Literal["tenant_cap", "series_max"]
_REFUSALS: tuple[_Refusal, ...] = ("tenant_cap", "series_max")

_GpuKey = tuple[str, str]
"""``(tenant, GPU UUID)``: one tenant's series set of one GPU (the UUID as its label bounds it)."""


@dataclass
class _Series:
    legacy_labels: tuple[str, ...]
    labels: tuple[str, ...]
    order_key: tuple[datetime, str]
    created: float
    updated: float


@dataclass
class _TenantSeries:
    live: OrderedDict[str, None] = field(default_factory=OrderedDict)
    """The tenant's GPU UUIDs with series, least recently updated first."""
    gone: list[float] = field(default_factory=list)
    """A heap of when each series set the tenant no longer has stops counting against its
    cap: ``ttl_s`` after its creation."""

    def held(self, now: float) -> int:
        """Series sets that count against the tenant's cap."""
        while self.gone and self.gone[0] <= now:
            heapq.heappop(self.gone)
        return len(self.live) + len(self.gone)


class GpuGauges:
    """Per-GPU gauges with bounded cardinality and churn.

    One series set per tenant and GPU UUID, labelled with the tenant, so a tenant that reports
    another tenant's GPU UUID never touches that tenant's series. A GPU's newest sample wins by
    the order GPU documents use (``occurred_at`` capped at ``received_at``, see
    :func:`~ca4_worker.domain.projection.newest_readings`), so a report dated ahead cannot hold
    the series against the real ones after it. When a GPU shows up with new labels (another
    session, host or project) its old series go and the new labels are a new series set;
    series not updated for ``ttl_s`` go (a silent session). Every label value a report chooses
    is bounded (:func:`~ca4_worker.core.gpu_fields.bounded_label`).

    A tenant holds at most ``max_series_per_tenant`` series sets, and a set it no longer has
    counts until ``ttl_s`` after its creation. At its cap a tenant's new GPUs, and its GPUs'
    new labels, get no series until its own expire (it never loses its older series to them),
    so a tenant creates at most its cap of series sets in any ``ttl_s``, however many UUIDs or
    labels it reports. At ``max_series`` in all, a new set takes the least recently updated set
    of the tenant holding the most, and only when the reporting tenant holds fewer: a tenant
    never loses a series to one that holds as many. Each refusal counts in
    :data:`GPU_SERIES_REFUSED`.
    """

    def __init__(
        self, *, ttl_s: float, max_series: int, max_series_per_tenant: int | None = None
    ) -> None:
        self._ttl_s = ttl_s
        self._max_series = max_series
        self._max_per_tenant = max_series_per_tenant or max_series
        self._series: OrderedDict[_GpuKey, _Series] = OrderedDict()
        """Every series set, least recently updated first."""
        self._by_tenant: dict[str, _TenantSeries] = {}

    def __len__(self) -> int:
        return len(self._series)

    def update(self, events: Iterable[PositionedEvent], *, now: float | None = None) -> None:
        """Drop stale series, then set the gauges from the newest sample of each tenant's GPU
        in ``events``."""
        now = time.monotonic() if now is None else now
        self.sweep(now=now)
        newest_of = newest_readings(
            events, lambda positioned, gpu: (positioned.tenant, bounded_label(gpu.uuid))
        )
        refused: dict[tuple[str, _Refusal], int] = {}
        for key, newest in newest_of.items():
            event, sample = newest.positioned.event, newest.gpu.sample
            current = self._series.get(key)
            if current is not None and current.order_key > newest.order_key:
                continue
            tenant, uuid = key
            labels = dcgm_labels(sample, event)
            if current is not None and current.labels == labels:
                current.order_key, current.updated = newest.order_key, now
                self._series.move_to_end(key)
                self._by_tenant[tenant].live.move_to_end(uuid)
            else:
                if current is not None:
                    self._retire(key, now)
                reason = self._refusal(tenant, now)
                if reason is not None:
                    refused[tenant, reason] = refused.get((tenant, reason), 0) + 1
                    continue
                current = _Series(
                    legacy_labels=(
                        bounded_label(event.session_id),
                        uuid,
                        bounded_label(sample.name),
                        tenant,
                    ),
                    labels=labels,
                    order_key=newest.order_key,
                    created=now,
                    updated=now,
                )
                self._series[key] = current
                self._by_tenant[tenant].live[uuid] = None
            LEGACY_GPU_SERIES.put(
                current.legacy_labels,
                {
                    metric: getattr(sample, field_name)
                    for metric, (field_name, _) in _LEGACY_FIELDS.items()
                },
            )
            unavailable = event.payload.collector.unavailable_fields
            DCGM_SERIES.put(
                current.labels,
                {spec.metric: spec.value(sample, unavailable) for spec in GPU_FIELDS},
            )
        for (tenant, reason), count in refused.items():
            GPU_SERIES_REFUSED.labels(tenant, reason).inc(count)

    def sweep(self, *, now: float | None = None) -> None:
        """Remove series not updated for the TTL."""
        now = time.monotonic() if now is None else now
        while self._series:
            key, oldest = next(iter(self._series.items()))
            if now - oldest.updated <= self._ttl_s:
                break
            self._retire(key, now)
        for tenant in [tenant for tenant, owned in self._by_tenant.items() if not owned.held(now)]:
            del self._by_tenant[tenant]

    def _refusal(self, tenant: str, now: float) -> _Refusal | None:
        """Why ``tenant`` may not have another series set now; ``None`` when it may (at
        ``max_series`` the largest tenant's least recently updated set has then made room, if
        that tenant still holds at least as many as ``tenant`` then)."""
        owned = self._by_tenant.get(tenant)
        if owned is None:
            owned = self._by_tenant[tenant] = _TenantSeries()
            for reason in _REFUSALS:  # at 0 before the first, so that increase() sees it
                GPU_SERIES_REFUSED.labels(tenant, reason)
        if owned.held(now) >= self._max_per_tenant:
            return "tenant_cap"
        if len(self._series) < self._max_series:
            return None
        largest, most = max(self._by_tenant.items(), key=lambda item: len(item[1].live))
        if len(most.live) <= len(owned.live) + 1:
            # Taking one would leave the largest with fewer than the taker: the two would
            # trade that set back and forth at every update.
            return "series_max"
        self._retire((largest, next(iter(most.live))), now)
        return None

    def _retire(self, key: _GpuKey, now: float) -> None:
        """Remove one tenant's series set of one GPU; it counts against the tenant's cap until
        ``ttl_s`` after its creation."""
        tenant, uuid = key
        series = self._series.pop(key)
        LEGACY_GPU_SERIES.remove(series.legacy_labels)
        DCGM_SERIES.remove(series.labels)
        owned = self._by_tenant[tenant]
        del owned.live[uuid]
        if series.created + self._ttl_s > now:
            heapq.heappush(owned.gone, series.created + self._ttl_s)
