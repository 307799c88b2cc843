"""The worker's series that alerts rate or compare in time exist before their first event: a
counter child born at N is no increase to Prometheus, and a partition without a series is one
no alert can fire for. And the lag gauges say when they were last measured."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata
from ca4_worker.application.ingest import IngestService
from ca4_worker.core import metrics
from ca4_worker.core.config import Settings
from ca4_worker.domain.dead_letters import DEAD_LETTER_CLASSES
from ca4_worker.messaging.batch_consumer import _Rebalance
from ca4_worker.messaging.lag import LagMonitor
from ca4_worker.messaging.stages import store_consumer
from ca4_worker.messaging.store_progress import StoreWatermark
from ca4_worker.persistence.memory import (
    InMemoryDeadLetters,
    InMemoryEventStore,
    InMemoryProjections,
)
from prometheus_client import REGISTRY

from tests.unit.worker.factories import event_body, record

# The closed set, spelt out: the decoder's three, the contract's, the tenancy guard's, and what
# each poison-isolating stage names a refusal for good or an error that outlasted its tries.
EVERY_CLASS = {
    "invalid_event",
    "invalid_json",
    "unknown_schema_version",
    "schema_invalid",
    "foreign_tenant",
    "event_id_conflict",
    *(
        f"{stage}_{cause}"
        for stage in ("store", "projection")
        for cause in (
            "document_too_large",
            "invalid_document",
            "database_rejected",
            "unexpected_error",
        )
    ),
}
EXPOSITION_LINE = re.compile(
    r'^ca4_worker_dead_letters_total\{error_class="([^"]+)",tenant=""\} (\S+)$'
)


def test_a_started_worker_exports_every_dead_letter_class_at_zero() -> None:
    """What ``uvicorn ca4_worker.main:app`` exports before its first dead letter, in a process
    of its own (this one's counters have seen other tests' letters)."""
    script = (
        "import ca4_worker.main\n"
        "from prometheus_client import REGISTRY, generate_latest\n"
        "print(generate_latest(REGISTRY).decode())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    exported = {
        match.group(1): float(match.group(2))
        for match in map(EXPOSITION_LINE.match, result.stdout.splitlines())
        if match
    }
    assert exported == dict.fromkeys(EVERY_CLASS, 0.0)
    assert set(DEAD_LETTER_CLASSES) == EVERY_CLASS


def dead_letters(error_class: str) -> float | None:
    return REGISTRY.get_sample_value(
        "ca4_worker_dead_letters_total", {"error_class": error_class, "tenant": ""}
    )


async def test_every_class_the_store_stage_names_is_in_the_set() -> None:
    """The decoder's and the tenancy guard's classes are counted on series that were there."""
    letters = InMemoryDeadLetters()
    ingest = IngestService(
        store=InMemoryEventStore(),
        projections=InMemoryProjections(),
        dead_letters=letters,
        max_backoff_s=0.01,
    )
    good = event_body(session_id="metrics-s1")
    bad = [
        b"{oops",
        json.dumps({**good, "schema_version": 99}).encode(),
        json.dumps({**good, "labels": {"$bad": "x"}}).encode(),
        None,
    ]
    before = {error_class: dead_letters(error_class) for error_class in EVERY_CLASS}
    await ingest.handle_batch([record(value, offset=index) for index, value in enumerate(bad)])
    named = [letter.error_class for letter in letters.letters]
    assert named == ["invalid_json", "unknown_schema_version", "schema_invalid", "invalid_event"]
    for error_class in named:
        counted = before[error_class]
        assert counted is not None, f"{error_class}: no series before its first letter"
        assert dead_letters(error_class) == counted + 1


async def test_a_partition_assigned_to_the_store_stage_is_exported_at_zero() -> None:
    """A new owner (after a restart or a rebalance) that stores nothing still exports the
    partition's counter, so the stall alert's store rate is 0 there, not absent."""
    stage = store_consumer(
        Settings(),
        IngestService(
            store=InMemoryEventStore(),
            projections=InMemoryProjections(),
            dead_letters=InMemoryDeadLetters(),
            max_backoff_s=0.01,
        ),
        StoreWatermark(store_group="ca4-store"),
    )
    await stage.consumer.stop()  # never started: only marks it closed
    partitions = [TopicPartition("gpu-metadata", partition) for partition in (4101, 4102)]
    for partition in ("4101", "4102"):
        assert stored(partition) is None

    await _Rebalance(stage).on_partitions_assigned(partitions)

    assert [stored("4101"), stored("4102")] == [0.0, 0.0]


def stored(partition: str) -> float | None:
    return REGISTRY.get_sample_value(
        "ca4_worker_partition_events_stored_total", {"partition": partition}
    )


class FakeKafka:
    """The admin client's and the offsets consumer's answers for one partition, or a failure."""

    def __init__(self) -> None:
        self.down = False
        self.partition = TopicPartition("gpu-metadata", 0)

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        if self.down:
            raise ConnectionError("Kafka is down (fake)")
        return [{"topic": topics[0], "error_code": 0, "partitions": [{"partition": 0}]}]

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 100)

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)

    async def list_consumer_group_offsets(
        self, group: str, *, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        return dict.fromkeys(partitions, OffsetAndMetadata(60, ""))


@pytest.fixture
async def monitor() -> Any:
    lag = LagMonitor(
        bootstrap_servers="127.0.0.1:1",
        topic="gpu-metadata",
        store_group="ca4-store",
        archive_group=None,
        interval_s=60,
    )
    await lag._offsets.stop()  # never started: only marks them closed
    await lag._admin.close()
    kafka = FakeKafka()
    lag._admin = kafka
    lag._offsets = kafka
    return lag, kafka


def refreshed() -> float | None:
    return REGISTRY.get_sample_value("ca4_worker_lag_refreshed_timestamp_seconds")


async def test_a_lag_refresh_says_when_it_measured_and_a_failed_one_does_not(
    monitor: Any,
) -> None:
    lag, kafka = monitor
    metrics.LAG_REFRESHED.set(0)
    began = time.time()
    assert await lag.refresh() == {"ca4-store": {0: 40}}
    stamped = refreshed()
    assert stamped is not None
    assert began <= stamped <= time.time()

    kafka.down = True
    with pytest.raises(ConnectionError):
        await lag.refresh()  # the monitor's loop logs "lag refresh failed" and goes on
    assert refreshed() == stamped, "a failed refresh must leave the time of the last good one"
