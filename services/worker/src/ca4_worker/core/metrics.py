"""The worker's Prometheus metrics (names shared with dashboards and alerts)."""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from ca4_worker.domain.projection import GpuLatest

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
    "Time to decode, store and project one batch.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
END_TO_END_SECONDS = Histogram(
    "ca4_worker_end_to_end_latency_seconds",
    "From the processor's received_at to the event being stored.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
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
GPU_LABELS = ["session_id", "gpu_uuid", "gpu_name"]
GPU_UTILIZATION = Gauge("ca4_gpu_utilization_pct", "Latest GPU utilisation.", GPU_LABELS)
GPU_MEMORY_USED = Gauge("ca4_gpu_memory_used_mib", "Latest GPU memory used.", GPU_LABELS)
GPU_MEMORY_TOTAL = Gauge("ca4_gpu_memory_total_mib", "GPU memory size.", GPU_LABELS)
GPU_TEMPERATURE = Gauge("ca4_gpu_temperature_c", "Latest GPU temperature.", GPU_LABELS)
GPU_POWER = Gauge("ca4_gpu_power_draw_w", "Latest GPU power draw.", GPU_LABELS)
_GPU_GAUGES = {
    "utilization_gpu_pct": GPU_UTILIZATION,
    "memory_used_mib": GPU_MEMORY_USED,
    "memory_total_mib": GPU_MEMORY_TOTAL,
    "temperature_gpu_c": GPU_TEMPERATURE,
    "power_draw_w": GPU_POWER,
}


@dataclass
class _Series:
    labels: tuple[str, str, str]
    occurred_at_key: tuple[object, ...]
    updated: float


class GpuGauges:
    """Per-GPU gauges with bounded cardinality.

    One series set per GPU UUID: when a GPU shows up in a new session its old series go, series
    not updated for ``ttl_s`` go, and beyond ``max_series`` the least recently updated go.
    """

    def __init__(self, *, ttl_s: float, max_series: int) -> None:
        self._ttl_s = ttl_s
        self._max_series = max_series
        self._series: OrderedDict[str, _Series] = OrderedDict()

    def __len__(self) -> int:
        return len(self._series)

    def update(self, samples: list[GpuLatest], *, now: float | None = None) -> None:
        """Set the gauges from the newest samples, then drop stale series."""
        now = time.monotonic() if now is None else now
        for latest in samples:
            labels = (latest.session_id, latest.gpu_uuid, latest.gpu_name)
            current = self._series.get(latest.gpu_uuid)
            if current is not None and current.occurred_at_key > latest.order_key:
                continue
            if current is not None and current.labels != labels:
                self._remove(current.labels)
            for field_name, gauge in _GPU_GAUGES.items():
                value = latest.sample.get(field_name)
                if value is None:
                    self._remove_one(gauge, labels)
                else:
                    gauge.labels(*labels).set(float(value))
            self._series[latest.gpu_uuid] = _Series(labels, latest.order_key, now)
            self._series.move_to_end(latest.gpu_uuid)
        self.sweep(now=now)

    def sweep(self, *, now: float | None = None) -> None:
        """Remove series older than the TTL and beyond the cap."""
        now = time.monotonic() if now is None else now
        while self._series:
            uuid, oldest = next(iter(self._series.items()))
            if now - oldest.updated <= self._ttl_s and len(self._series) <= self._max_series:
                break
            self._remove(oldest.labels)
            del self._series[uuid]

    @staticmethod
    def _remove_one(gauge: Gauge, labels: tuple[str, str, str]) -> None:
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)

    def _remove(self, labels: tuple[str, str, str]) -> None:
        for gauge in _GPU_GAUGES.values():
            self._remove_one(gauge, labels)
