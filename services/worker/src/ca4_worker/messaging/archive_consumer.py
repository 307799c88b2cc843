"""The archive consumer (group ``ca4-archive``), on aiokafka directly.

FastStream's subscribers commit per handled batch; the archive must instead hold records across
many polls, flush by age even when no message arrives, commit one partition's exact offset
after its upload, and drop buffers of revoked partitions, which needs the consumer loop itself.
What it holds is bounded like the stages' buffers: each poll takes what the archiver has room
for at the recent record weight (:class:`~ca4_worker.messaging.batch_consumer.PollSizer`, as
:class:`~ca4_worker.messaging.batch_consumer.BatchConsumer` sizes its polls), and the archiver
flushes its heaviest buffers before they all hold more than twice an object's ``max_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from ca4_worker.application.archiver import Archiver
from ca4_worker.messaging.batch_consumer import PollSizer
from ca4_worker.messaging.records import raw_record

log = structlog.get_logger(__name__)
MAX_POLL_WAIT_S = 1.0


class _DropRevokedBuffers(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revoked partitions will be re-read by their next owner from the committed offset."""

    def __init__(self, archiver: Archiver) -> None:
        self._archiver = archiver

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._archiver.drop((tp.topic, tp.partition) for tp in revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return


class ArchiveConsumer:
    """Runs the archive loop as a background task."""

    def __init__(
        self,
        archiver: Archiver,
        *,
        bootstrap_servers: str,
        topic: str,
        group_id: str,
        max_poll_records: int = 5000,
        before_start: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._archiver = archiver
        self._before_start = before_start
        self._topic = topic
        self._max_poll_records = max_poll_records
        self._poll_size = PollSizer()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_poll_records,
            client_id="ca4-worker-archive",
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Join the group and start consuming in the background."""
        self._consumer.subscribe([self._topic], listener=_DropRevokedBuffers(self._archiver))
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="ca4-archive-consumer")

    async def stop(self) -> None:
        """Stop without flushing: unflushed records are uncommitted and will be re-read."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    @property
    def running(self) -> bool:
        """Whether the loop is alive."""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        if self._before_start is not None:
            await self._before_start()
        while True:
            try:
                await self._poll_and_flush()
            except KafkaError as error:
                # A failed commit (e.g. after a rebalance) must not skip records: re-read
                # from the committed offsets.
                log.warning("archive consumer error, re-reading from committed", error=str(error))
                self._archiver.drop_all()
                with contextlib.suppress(KafkaError):
                    await self._consumer.seek_to_committed()
                await asyncio.sleep(1.0)

    async def _poll_and_flush(self) -> None:
        """Poll what the archive has room for, then flush until nothing is due, so the next
        poll starts within the archive's bound again."""
        wait_s = min(MAX_POLL_WAIT_S, self._archiver.seconds_until_due())
        batches = await self._consumer.getmany(
            timeout_ms=max(1, int(wait_s * 1000)),
            max_records=self._poll_size.records(self._max_poll_records, self._archiver.room()),
        )
        polled = polled_weight = 0
        for records in batches.values():
            polled += len(records)
            polled_weight += self._archiver.add(raw_record(record) for record in records)
        if polled:
            self._poll_size.learn(polled_weight / polled)
        while due := self._archiver.due():
            for topic, partition in due:
                next_offset = await self._archiver.flush(topic, partition)
                if next_offset is not None:
                    await self._consumer.commit({TopicPartition(topic, partition): next_offset})
