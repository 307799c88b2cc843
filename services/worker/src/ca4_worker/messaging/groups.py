"""Who is consuming (the live members of a consumer group, from the broker's coordinator), and
moving an idle group back to re-handle what the topic still holds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from ca4_worker.application.ports import UnavailableError


class LiveConsumersError(RuntimeError):
    """A consumer group has live members where the operation needs it idle."""


async def group_members(
    bootstrap_servers: str, group: str, topic: str, *, timeout_s: float = 10.0
) -> list[str]:
    """``client_id@host`` of each live member of ``group`` subscribed to ``topic``."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await admin.start()
        described = await admin.describe_consumer_groups([group])
    except Exception as error:  # aiokafka raises its own errors and plain OSErrors alike
        raise UnavailableError(f"cannot describe consumer group {group}: {error}") from error
    finally:
        await admin.close()
    members: list[str] = []
    for response in described:
        for entry in response.groups:
            # (error_code, group, state, protocol_type, protocol, members[, authorized ops])
            for _, client_id, host, metadata, _ in entry[5]:
                subscription = ConsumerProtocolMemberMetadata.decode(metadata).subscription
                if topic in subscription:
                    members.append(f"{client_id}@{host.lstrip('/')}")
    return members


async def ensure_group_idle(
    bootstrap_servers: str, group: str, topic: str, *, risk: str, action: str, instead: str = ""
) -> None:
    """Raise :class:`LiveConsumersError` while ``group`` has live members on ``topic``, saying
    the ``risk`` of going on, how to stop them, the ``action`` to run meanwhile and what to do
    ``instead``."""
    members = await group_members(bootstrap_servers, group, topic)
    if members:
        raise LiveConsumersError(
            f"consumer group {group} has {len(members)} live member(s) ({', '.join(members)}): "
            f"{risk}. Stop the workers' consumers first (dev stack: `uv run ca4 devstack stop "
            "worker`; K3s: `kubectl -n app set env deployment/ca4-app-worker "
            "CA4_CONSUMERS_ENABLED=false`, which keeps the pods for `kubectl exec`), "
            f"{action}, then start them again (K3s: the same command with "
            f"`CA4_CONSUMERS_ENABLED-`){instead}."
        )


@dataclass(frozen=True)
class Rewound:
    """One partition of one group moved back: from its committed offset to ``to``."""

    group: str
    partition: int
    committed: int | None
    to: int


async def rewind_groups(
    bootstrap_servers: str,
    topic: str,
    groups: list[str],
    *,
    to: datetime | None,
    dry_run: bool = False,
    timeout_s: float = 15.0,
) -> list[Rewound]:
    """Move each idle group in ``groups`` back, per partition, to the first record received at
    or after ``to`` (``None``: the oldest the topic holds), so the workers handle those records
    again: after a database restored to an earlier time, or lost, the store stores what it
    misses (events count once by id) and the projections apply what they miss (the position
    guards skip the rest).

    Never moves a group forward: a partition already before that point keeps its offset, since
    moving it on would skip records it has not handled, and one with no committed offset starts
    at the oldest record anyway. Raises :class:`LiveConsumersError` while a group has live
    members (they would commit over the new offsets), except for a ``dry_run``.
    """
    if not dry_run:
        for group in groups:
            await ensure_group_idle(
                bootstrap_servers,
                group,
                topic,
                risk="its workers would commit over the offsets a rewind sets",
                action="rewind",
            )
    partitions = await _partitions(bootstrap_servers, topic, timeout_s)
    moved: list[Rewound] = []
    # The store group first: a projection group moved back over events the store does not hold
    # (yet) would skip them, while the store moved alone only stores again.
    for group in groups:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
            request_timeout_ms=int(timeout_s * 1000),
        )
        try:
            async with asyncio.timeout(timeout_s * 4):
                await consumer.start()
                consumer.assign(partitions)
                targets = await _offsets_at(consumer, partitions, to)
                commits: dict[TopicPartition, int] = {}
                for partition in partitions:
                    committed = await consumer.committed(partition)
                    target = targets[partition]
                    # No committed offset: the workers start at the oldest record already.
                    if committed is None or committed <= target:
                        continue
                    commits[partition] = target
                    moved.append(Rewound(group, partition.partition, committed, target))
                if commits and not dry_run:
                    await consumer.commit(commits)
        except (LiveConsumersError, UnavailableError):
            raise
        except Exception as error:  # aiokafka's errors, timeouts and socket errors alike
            done = sorted({item.group for item in moved if item.group != group})
            already = f" ({', '.join(done)} already moved back)" if done and not dry_run else ""
            raise UnavailableError(
                f"cannot rewind consumer group {group}{already}: {error!r}; running the rewind "
                "again is safe, it moves only what is still ahead"
            ) from error
        finally:
            await consumer.stop()
    return moved


async def _partitions(bootstrap_servers: str, topic: str, timeout_s: float) -> list[TopicPartition]:
    """The topic's partitions, from the brokers (a consumer learns them only by subscribing)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await admin.start()
        (described,) = await admin.describe_topics([topic])
    except Exception as error:  # aiokafka raises its own errors and plain OSErrors alike
        raise UnavailableError(f"cannot describe topic {topic}: {error!r}") from error
    finally:
        await admin.close()
    numbers = sorted(item["partition"] for item in described["partitions"])
    if described["error_code"] or not numbers:
        raise UnavailableError(f"topic {topic} not found (error code {described['error_code']})")
    return [TopicPartition(topic, number) for number in numbers]


async def _offsets_at(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], to: datetime | None
) -> dict[TopicPartition, int]:
    """Each partition's first offset at or after ``to`` (its end when none is), or its oldest."""
    oldest: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
    if to is None:
        return oldest
    ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    at = await consumer.offsets_for_times(dict.fromkeys(partitions, int(to.timestamp() * 1000)))
    return {
        partition: max(oldest[partition], ends[partition] if found is None else found.offset)
        for partition, found in at.items()
    }
