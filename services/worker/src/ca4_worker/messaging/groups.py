"""Who is consuming: the live members of a consumer group, from the broker's coordinator."""

from __future__ import annotations

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


async def ensure_group_idle(bootstrap_servers: str, group: str, topic: str) -> None:
    """Raise :class:`LiveConsumersError` while ``group`` has live members on ``topic``.

    A projection rebuild empties the read models and re-applies history; a worker applying
    new events meanwhile would move the position guards past the history the rebuild has not
    reached, and those events would then be skipped for good.
    """
    members = await group_members(bootstrap_servers, group, topic)
    if members:
        raise LiveConsumersError(
            f"consumer group {group} has {len(members)} live member(s) ({', '.join(members)}): "
            "a rebuild while workers store events would lose their projections. Stop the "
            "workers first (dev stack: `uv run ca4 devstack stop worker`; K3s: `kubectl scale "
            "deployment/ca4-worker --replicas=0`), rebuild, then start them again; or replay "
            "without --rebuild-projections, which is safe while they run."
        )
