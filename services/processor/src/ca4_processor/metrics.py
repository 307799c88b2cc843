"""The processor's own Prometheus metrics, in a registry per app so tests can build many apps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

IngestOutcome = Literal["accepted", "rejected", "unavailable"]


@dataclass(frozen=True)
class IngestMetrics:
    """Counters and histograms the ingest routes update."""

    registry: CollectorRegistry
    events: Counter
    publish_latency: Histogram

    @classmethod
    def create(cls) -> IngestMetrics:
        """A fresh registry with process metrics and the ingest metrics registered."""
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        events = Counter(
            "ca4_ingest_events_total",
            "Reports received, by outcome: accepted (Kafka acked), rejected (4xx), "
            "unavailable (503: Kafka did not ack in time, the session owner could not be "
            "checked, or too many reports already wait for Kafka).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("accepted", "rejected", "unavailable"):
            events.labels(outcome=outcome)
        return cls(
            registry=registry,
            events=events,
            publish_latency=Histogram(
                "ca4_publish_latency_seconds",
                "Time from the first send to the last Kafka acknowledgement of one request.",
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                registry=registry,
            ),
        )

    def count(self, outcome: IngestOutcome, events: int = 1) -> None:
        """Add ``events`` reports to ``outcome``."""
        if events:
            self.events.labels(outcome=outcome).inc(events)
