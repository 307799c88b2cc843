"""How far the store group has handled each partition: the line projections never pass.

The store stage in this process reports each batch as soon as it is durable (no wait). A
partition this process does not store (another worker owns it in the store group) is known
from the store group's committed offsets, asked of Kafka when a wait has not been answered
in-process within ``poll_s``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

import structlog
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

log = structlog.get_logger(__name__)


class StoreWatermark:
    """The store group's progress, per (topic, partition): everything below it is handled."""

    def __init__(
        self,
        *,
        store_group: str,
        bootstrap_servers: str | None = None,
        poll_s: float = 1.0,
        request_timeout_s: float = 5.0,
    ) -> None:
        self._store_group = store_group
        self._poll_s = poll_s
        self._request_timeout_s = request_timeout_s
        self._handled: dict[tuple[str, int], int] = {}
        self._advanced = asyncio.Event()
        self._admin = (
            AIOKafkaAdminClient(
                bootstrap_servers=bootstrap_servers,
                request_timeout_ms=int(request_timeout_s * 1000),
            )
            if bootstrap_servers
            else None
        )

    async def start(self) -> None:
        """Connect the admin client that reads the store group's committed offsets."""
        if self._admin is not None:
            await self._admin.start()

    async def stop(self) -> None:
        """Close it."""
        if self._admin is not None:
            await self._admin.close()

    def advance(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        """The store stage has handled these partitions up to (not including) these offsets."""
        for partition, offset in next_offsets.items():
            key = (partition.topic, partition.partition)
            if offset > self._handled.get(key, -1):
                self._handled[key] = offset
        self._advanced.set()
        self._advanced = asyncio.Event()

    def handled(self, topic: str, partition: int) -> int:
        """The offset ``partition`` is handled up to, as known now (-1: nothing known)."""
        return self._handled.get((topic, partition), -1)

    async def wait_until_stored(self, next_offsets: Mapping[tuple[str, int], int]) -> None:
        """Return once every partition is handled up to its offset in ``next_offsets``."""
        while True:
            missing = [key for key, offset in next_offsets.items() if self._behind(key, offset)]
            if not missing:
                return
            try:
                await asyncio.wait_for(self._advanced.wait(), self._poll_s)
            except TimeoutError:
                await self._refresh(TopicPartition(topic, part) for topic, part in missing)

    async def committed(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The store group's committed offsets of ``partitions`` that have one."""
        if self._admin is None:
            return {}
        wanted = list(partitions)
        async with asyncio.timeout(self._request_timeout_s):
            found = await self._admin.list_consumer_group_offsets(
                self._store_group, partitions=wanted
            )
        return {
            partition: meta.offset
            for partition, meta in found.items()
            if meta is not None and meta.offset >= 0
        }

    def _behind(self, key: tuple[str, int], offset: int) -> bool:
        return self._handled.get(key, -1) < offset

    async def _refresh(self, partitions: Iterable[TopicPartition]) -> None:
        try:
            committed = await self.committed(partitions)
        except (KafkaError, TimeoutError, OSError) as error:
            log.warning("store group offsets unavailable, waiting", error=repr(error))
            return
        if committed:
            self.advance(committed)
