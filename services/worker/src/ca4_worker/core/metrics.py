"""The worker's Prometheus metrics (names shared with dashboards and alerts)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ca4_worker.core.gpu_fields import DCGM_LABELS, GPU_FIELDS, dcgm_labels
from ca4_worker.core.series_table import SeriesTable
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
ARCHIVE_LAG = Gauge(
    "ca4_worker_archive_lag",
    "Messages not yet archived (consumed but unflushed, plus backlog), per partition.",
    ["partition"],
)
DEAD_LETTERS = Counter(
    "ca4_worker_dead_letters",
    "Records sent to the dead-letter topic, by error class.",
    ["error_class"],
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
    return LEGACY_GPU_SERIES.exposition() + DCGM_SERIES.exposition()


_GpuKey = tuple[str, str]
"""``(tenant, GPU UUID)``: one tenant's series set of one GPU."""


@dataclass
class _Series:
    legacy_labels: tuple[str, ...]
    labels: tuple[str, ...]
    order_key: tuple[datetime, str]
    updated: float


class GpuGauges:
    """Per-GPU gauges with bounded cardinality.

    One series set per tenant and GPU UUID, labelled with the tenant, so a tenant that reports
    another tenant's GPU UUID never touches that tenant's series. A GPU's newest sample wins by
    the order GPU documents use (``occurred_at`` capped at ``received_at``, see
    :func:`~ca4_worker.domain.projection.newest_readings`), so a report dated ahead cannot hold
    the series against the real ones after it. When a GPU shows up with new labels (another
    session, host or project) its old series go, series not updated for ``ttl_s`` go (a silent
    session), beyond ``max_series_per_tenant`` a tenant's own least recently updated go, and
    beyond ``max_series`` the least recently updated of all go.
    """

    def __init__(
        self, *, ttl_s: float, max_series: int, max_series_per_tenant: int | None = None
    ) -> None:
        self._ttl_s = ttl_s
        self._max_series = max_series
        self._max_per_tenant = max_series_per_tenant or max_series
        self._series: OrderedDict[_GpuKey, _Series] = OrderedDict()
        """Every series set, least recently updated first."""
        self._by_tenant: dict[str, OrderedDict[str, None]] = {}
        """Each tenant's GPU UUIDs, least recently updated first."""

    def __len__(self) -> int:
        return len(self._series)

    def update(self, events: Iterable[PositionedEvent], *, now: float | None = None) -> None:
        """Set the gauges from the newest sample of each tenant's GPU in ``events``, then drop
        stale series."""
        now = time.monotonic() if now is None else now
        newest_of = newest_readings(events, lambda positioned, gpu: (positioned.tenant, gpu.uuid))
        for key, newest in newest_of.items():
            event, sample = newest.positioned.event, newest.gpu.sample
            current = self._series.get(key)
            if current is not None and current.order_key > newest.order_key:
                continue
            tenant, uuid = key
            series = _Series(
                legacy_labels=(event.session_id, uuid, sample.name, tenant),
                labels=dcgm_labels(sample, event),
                order_key=newest.order_key,
                updated=now,
            )
            if current is not None and current.labels != series.labels:
                self._remove(current)
            LEGACY_GPU_SERIES.put(
                series.legacy_labels,
                {
                    metric: getattr(sample, field_name)
                    for metric, (field_name, _) in _LEGACY_FIELDS.items()
                },
            )
            unavailable = event.payload.collector.unavailable_fields
            DCGM_SERIES.put(
                series.labels,
                {field.metric: field.value(sample, unavailable) for field in GPU_FIELDS},
            )
            self._series[key] = series
            self._series.move_to_end(key)
            owned = self._by_tenant.setdefault(tenant, OrderedDict())
            owned[uuid] = None
            owned.move_to_end(uuid)
            while len(owned) > self._max_per_tenant:
                self._drop((tenant, next(iter(owned))))
        self.sweep(now=now)

    def sweep(self, *, now: float | None = None) -> None:
        """Remove series older than the TTL and beyond the cap."""
        now = time.monotonic() if now is None else now
        while self._series:
            key, oldest = next(iter(self._series.items()))
            if now - oldest.updated <= self._ttl_s and len(self._series) <= self._max_series:
                break
            self._drop(key)

    def _drop(self, key: _GpuKey) -> None:
        """Remove one tenant's series set of one GPU."""
        tenant, uuid = key
        self._remove(self._series.pop(key))
        owned = self._by_tenant[tenant]
        del owned[uuid]
        if not owned:
            del self._by_tenant[tenant]

    @staticmethod
    def _remove(series: _Series) -> None:
        LEGACY_GPU_SERIES.remove(series.legacy_labels)
        DCGM_SERIES.remove(series.labels)
