"""A consumer-group member whose every batch is what arrived since the last one.

aiokafka fetches a partition again only once its buffered records are consumed. A loop that
polls, handles and polls again (FastStream's batch subscriber, or a plain ``getmany`` loop)
therefore handles, in each cycle, the few records fetched right after the previous poll, while
everything that arrived during the cycle waits on the broker for the next one: a record waits
one to two cycles instead of at most one. Here a pump task keeps polling while the batch is
handled, into a buffer bounded by ``max_records`` and ``max_bytes`` and shared evenly among the
assigned partitions, and the next batch is the whole buffer. Batches are small and immediate
when the group keeps up, and large when it is behind. The byte bound keeps memory flat whatever
clients send: records count by their weight (:func:`weight_of`, what they decode to), so a
batch of the heaviest events the topic takes holds as much memory as one of the lightest, not a
thousand times more. A poll can be bounded only in records, so each is sized from the recent
record weight, which starts unknown (the first poll takes one record), rises at once when
records grow and falls slowly. The buffer stays within ``max_bytes`` and one record,
except after the one poll that first meets larger records, which may take what aiokafka had
fetched (``max_partition_fetch_bytes`` per partition, memory the client held anyway).

Offsets are committed per batch, exactly those of the batch (never the consumer's position,
which the pump has moved ahead), in the background: the next batch is handled while the commit
travels, commits stay in order (one in flight), and a crash before one lands only means
redelivery, which the handlers absorb. ``after_commit`` hears what each commit made final, and
``on_assigned`` the partitions each rebalance gives this member.
A handler that raises has its partitions sought back to the batch's first records, and their
buffered records dropped, so nothing past it is committed.
A rebalance waits for the batch in flight (and its commit) before partitions are given up,
and drops what was buffered for them: their next owner reads on from the committed offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError, IllegalStateError, KafkaError
from ca4_schemas import record_weight
from prometheus_client import Histogram

log = structlog.get_logger(__name__)

Record = Any
"""An aiokafka ``ConsumerRecord`` (untyped upstream)."""
Handler = Callable[[Sequence[Record]], Awaitable[None]]
Offsets = dict[TopicPartition, int]

POLL_TIMEOUT_MS = 1000
"""How long one poll waits for records when the topic is idle."""
LIGHTER_RECORDS_SHARE = 0.2
"""Share of a poll of lighter records in the recent record weight (heavier ones replace it)."""
RETRY_AFTER_ERROR_S = 1.0
"""Pause after a failed poll, or after a handler raised, before trying again."""


class PollSizer:
    """How many records a poll may take into a buffer bounded in weight, from the recent
    record weight (a poll can be bounded only in records); the archive consumer sizes its
    polls with it too."""

    def __init__(self) -> None:
        self.record_weight: float | None = None
        """The recent record weight, learnt from the polls; unknown at first."""

    def learn(self, mean: float) -> None:
        """Rise at once to larger records (a hostile client's first large ones must not be
        taken at the old size), fall slowly back from them."""
        if self.record_weight is None or mean >= self.record_weight:
            self.record_weight = mean
        else:
            self.record_weight += LIGHTER_RECORDS_SHARE * (mean - self.record_weight)

    def records(self, records_left: int, weight_left: int) -> int:
        """``records_left``, and what ``weight_left`` holds at the recent record weight (one
        record while that weight is unknown); at least one."""
        if self.record_weight is None:
            return 1
        by_weight = weight_left / max(1.0, self.record_weight)
        return max(1, min(records_left, int(by_weight)))


class BatchConsumer:
    """Hands ``handler`` batches of fresh records and commits each batch when it returns."""

    def __init__(
        self,
        *,
        name: str,
        bootstrap_servers: str,
        topic: str,
        group_id: str,
        handler: Handler,
        max_records: int,
        max_bytes: int,
        max_partition_fetch_bytes: int = 1024 * 1024,
        stage_seconds: Histogram | None = None,
        after_commit: Callable[[Mapping[TopicPartition, int]], None] | None = None,
        on_assigned: Callable[[Collection[TopicPartition]], None] | None = None,
        revoke_wait_s: float = 30.0,
    ) -> None:
        self.name = name
        self._topic = topic
        self._handler = handler
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._stage_seconds = stage_seconds
        self._after_commit = after_commit
        self._on_assigned = on_assigned
        self._revoke_wait_s = revoke_wait_s
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            client_id=f"ca4-worker-{name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=max_partition_fetch_bytes,
        )
        self._buffer: dict[TopicPartition, list[Record]] = {}
        self._buffered = 0
        self._buffered_weight = 0
        self._poll_size = PollSizer()
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._handling = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._committing: asyncio.Future[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Join the group and start polling and handling in the background."""
        self.consumer.subscribe([self._topic], listener=_Rebalance(self))
        await self.consumer.start()
        self._tasks = [
            asyncio.create_task(self._pump(), name=f"ca4-{self.name}-poll"),
            asyncio.create_task(self._work(), name=f"ca4-{self.name}-handle"),
        ]

    async def stop(self, wait_s: float = 10.0) -> None:
        """Let the batch in flight finish and its commit land (together up to ``wait_s``),
        then leave the group.

        What is not committed by then is redelivered, which the handlers absorb. The commit
        shares the deadline: aiokafka retries a commit for good while the broker does not
        answer, and a stop waiting on it would outlive any grace period.
        """
        self._stopping = True  # a rebalance from now on does not wait for the lock
        if self._tasks:
            pump, work = self._tasks
            await _cancelled(pump)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_s
            try:
                await asyncio.wait_for(self._handling.acquire(), wait_s)
            except TimeoutError:
                log.warning("stopping with a batch in flight", consumer=self.name)
            else:
                self._handling.release()
            await _cancelled(work)
            committing, self._committing = self._committing, None
            if committing is not None:
                # asyncio.wait leaves the commit alone past the deadline (a commit once sent is
                # let land) and never raises the commit's own outcome.
                landed, _ = await asyncio.wait(
                    [committing], timeout=max(0.0, deadline - loop.time())
                )
                if not landed:
                    log.warning("stopping with a commit in flight", consumer=self.name)
                elif not committing.cancelled():
                    committing.exception()  # seen: a failed commit's records are redelivered
        await self.consumer.stop()

    @property
    def running(self) -> bool:
        """Whether both loops are alive."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    def assigned_partitions(self) -> set[int]:
        """The partitions of the topic this member holds now."""
        return {partition.partition for partition in self.consumer.assignment()}

    @property
    def buffered(self) -> int:
        """Records polled and not yet handed to the handler."""
        return self._buffered

    async def _pump(self) -> None:
        while True:
            await self._room.wait()
            try:
                fetched = await self._poll()
            except (ConsumerStoppedError, IllegalStateError):
                raise
            except KafkaError as error:
                log.warning("poll failed, retrying", consumer=self.name, error=repr(error))
                await asyncio.sleep(RETRY_AFTER_ERROR_S)
                continue
            # aiokafka drops what was fetched for a partition before a seek or a new
            # assignment, so everything returned here is from the current position.
            polled = polled_weight = 0
            for partition, records in fetched.items():
                self._buffer.setdefault(partition, []).extend(records)
                polled += len(records)
                polled_weight += sum(map(weight_of, records))
            if polled:
                self._buffered += polled
                self._buffered_weight += polled_weight
                self._poll_size.learn(polled_weight / polled)
                self._arrived.set()
            if not self._has_room():
                self._room.clear()

    async def _poll(self) -> dict[TopicPartition, list[Record]]:
        """What the next poll adds, shared evenly among the assigned partitions.

        aiokafka drains fetched partitions one after the other up to ``max_records``, so over a
        backlog a batch bounded in bytes held nearly all one partition, and the projection
        stage, whose rounds span every partition, waited for the store's next batches while
        the handoff filled with decisions for the others. Each poll therefore takes a share of
        the room from every partition with records fetched, and only when none has any waits
        for the next fetch, for one share.
        """
        room = self._room_for()
        partitions = sorted(self.consumer.assignment())
        fetched: dict[TopicPartition, list[Record]] = {}
        if len(partitions) < 2 or room < len(partitions):
            fetched |= await self.consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=room)
            return fetched
        share = room // len(partitions)
        for partition in partitions:
            try:
                fetched |= await self.consumer.getmany(partition, timeout_ms=0, max_records=share)
            except (ConsumerStoppedError, IllegalStateError):
                raise
            except KafkaError as error:
                if not fetched:
                    raise
                # aiokafka has moved the other partitions past what they returned: dropping
                # it would let the next batch commit over it. Keep it, and report the error
                # (aiokafka clears it once raised, and fetches that partition again).
                log.warning("poll failed on one partition", consumer=self.name, error=repr(error))
                return fetched
        if not fetched:
            fetched |= await self.consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=share)
        return fetched

    def _has_room(self) -> bool:
        return self._buffered < self._max_records and self._buffered_weight < self._max_bytes

    def _room_for(self) -> int:
        """Records the next poll may add: what is left of ``max_records`` and ``max_bytes``."""
        return self._poll_size.records(
            self._max_records - self._buffered, self._max_bytes - self._buffered_weight
        )

    async def _work(self) -> None:
        done = time.perf_counter()
        while True:
            await self._arrived.wait()
            async with self._handling:
                batch = self._take()
                if not batch:
                    continue
                self._observe("fetch_wait", time.perf_counter() - done)
                try:
                    await self._handler(batch)
                except Exception:
                    log.exception("batch failed, it will be handled again", consumer=self.name)
                    self._rewind(batch)
                    await asyncio.sleep(RETRY_AFTER_ERROR_S)
                    done = time.perf_counter()
                    continue
                started = time.perf_counter()
                await self._commit_landed()  # the previous batch's, almost always done
                # Shielded: a commit once sent is let land even if the loop is cancelled.
                self._committing = asyncio.ensure_future(
                    asyncio.shield(self._commit(_next_offsets(batch)))
                )
                done = time.perf_counter()
                self._observe("commit", done - started)

    def _take(self) -> list[Record]:
        batch = [record for records in self._buffer.values() for record in records]
        self._buffer.clear()
        self._buffered = 0
        self._buffered_weight = 0
        self._arrived.clear()
        self._room.set()
        return batch

    def _drop(self, partitions: Iterable[TopicPartition]) -> None:
        for partition in partitions:
            dropped = self._buffer.pop(partition, [])
            self._buffered -= len(dropped)
            self._buffered_weight -= sum(map(weight_of, dropped))
        if not self._buffered:
            self._arrived.clear()
        if self._has_room():
            self._room.set()

    def _rewind(self, batch: Sequence[Record]) -> None:
        """Seek each partition of ``batch`` back to its first record in it."""
        first: Offsets = {}
        for record in batch:
            partition = TopicPartition(record.topic, record.partition)
            first[partition] = min(first.get(partition, record.offset), record.offset)
        self._drop(first)
        owned = self.consumer.assignment()
        for partition, offset in first.items():
            if partition in owned:
                self.consumer.seek(partition, offset)

    async def _commit_landed(self) -> None:
        if self._committing is not None:
            await self._committing
            self._committing = None

    async def _commit(self, offsets: Offsets) -> None:
        """Commit ``offsets`` of the partitions still owned, then report what was committed
        (nothing, when refused: the next owner redelivers the batch, which the handlers
        absorb)."""
        owned = self.consumer.assignment()
        mine = {partition: offset for partition, offset in offsets.items() if partition in owned}
        try:
            if mine:
                await self.consumer.commit(mine)
        except Exception as error:  # rebalanced, stopped, or Kafka down: all mean redelivery
            log.warning("offsets not committed", consumer=self.name, error=repr(error))
            mine = {}
        if self._after_commit is not None:
            self._after_commit(mine)

    async def _revoking(self, revoked: list[TopicPartition]) -> None:
        if self._stopping:
            self._drop(revoked)
            return
        try:
            await asyncio.wait_for(self._handling.acquire(), self._revoke_wait_s)
        except TimeoutError:
            log.warning("rebalance did not wait for the batch in flight", consumer=self.name)
            self._drop(revoked)
            return
        try:
            await self._commit_landed()
            self._drop(revoked)
        finally:
            self._handling.release()

    def _assigning(self, assigned: list[TopicPartition]) -> None:
        if self._on_assigned is not None:
            self._on_assigned(assigned)

    def _observe(self, stage: str, seconds: float) -> None:
        if self._stage_seconds is not None:
            self._stage_seconds.labels(stage).observe(seconds)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: BatchConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._owner._revoking(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._owner._assigning(list(assigned))


def weight_of(record: Record) -> int:
    """A record's key bytes (aiokafka says -1 for a missing one) and its value's weight
    (:func:`ca4_schemas.record_weight`: what it decodes to, not its bytes)."""
    key: int = record.serialized_key_size
    return max(0, key) + record_weight(record.value)


def _next_offsets(batch: Sequence[Record]) -> Offsets:
    """The offset after the last record of each partition in ``batch``."""
    offsets: Offsets = {}
    for record in batch:
        partition = TopicPartition(record.topic, record.partition)
        offsets[partition] = max(offsets.get(partition, 0), record.offset + 1)
    return offsets


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
