"""Consumer lag per group and partition: end offset minus committed offset.

Measured from the broker's committed offsets (like kafka-exporter), so the archive lag counts
records consumed but not yet archived as well as the backlog. A refresh that fails leaves the
gauges at their last values; ``ca4_worker_lag_refreshed_timestamp_seconds`` says when they were
last measured (``CA4LagMonitorStale``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from ca4_worker.core import metrics

log = structlog.get_logger(__name__)


class LagMonitor:
    """Refreshes ``ca4_worker_consumer_lag`` and ``ca4_worker_archive_lag`` periodically."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        store_group: str,
        archive_group: str | None,
        project_group: str | None = None,
        interval_s: float,
    ) -> None:
        self._topic = topic
        self._store_group = store_group
        self._project_group = project_group
        self._archive_group = archive_group
        self._interval_s = interval_s
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
        self._offsets = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and start refreshing in the background."""
        await self._admin.start()
        await self._offsets.start()
        self._task = asyncio.create_task(self._run(), name="ca4-lag-monitor")

    async def stop(self) -> None:
        """Stop refreshing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._offsets.stop()
        await self._admin.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as error:
                log.warning("lag refresh failed", error=repr(error))
            await asyncio.sleep(self._interval_s)

    async def refresh(self) -> dict[str, dict[int, int]]:
        """Measure every group's lag once and publish it, with the time it was measured (not
        when the topic has no partitions to measure)."""
        partitions = await self._partitions()
        if not partitions:
            return {}
        ends = await self._offsets.end_offsets(partitions)
        starts = await self._offsets.beginning_offsets(partitions)
        groups = [
            group
            for group in (self._store_group, self._project_group, self._archive_group)
            if group is not None
        ]
        lags: dict[str, dict[int, int]] = {}
        for group in groups:
            committed = await self._admin.list_consumer_group_offsets(group, partitions=partitions)
            lags[group] = {}
            for tp in partitions:
                done = committed.get(tp)
                position = done.offset if done is not None and done.offset >= 0 else starts[tp]
                lag = max(0, ends[tp] - position)
                lags[group][tp.partition] = lag
                metrics.CONSUMER_LAG.labels(group, str(tp.partition)).set(lag)
                if group == self._archive_group:
                    metrics.ARCHIVE_LAG.labels(str(tp.partition)).set(lag)
        metrics.LAG_REFRESHED.set(time.time())
        return lags

    async def _partitions(self) -> list[TopicPartition]:
        """The topic's partitions, asked afresh each time so new partitions show up."""
        described = await self._admin.describe_topics([self._topic])
        ids = sorted(
            item["partition"]
            for topic in described
            if topic["topic"] == self._topic and topic["error_code"] == 0
            for item in topic["partitions"]
        )
        return [TopicPartition(self._topic, partition) for partition in ids]
