"""``rewind_groups`` without Kafka: what it moves, and what a failure half-way says."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from aiokafka import TopicPartition
from ca4_worker.application.ports import UnavailableError
from ca4_worker.messaging import groups
from ca4_worker.messaging.groups import Rewound, rewind_groups

TOPIC = "gpu-metadata"
PARTITIONS = [TopicPartition(TOPIC, number) for number in range(3)]


class FakeConsumer:
    """A group's view of the topic: each partition's committed offset, oldest record and end;
    the groups named in ``failing`` cannot commit."""

    committed_by_group: dict[str, dict[int, int | None]]
    failing: set[str]
    commits: dict[str, dict[int, int]]

    def __init__(self, *, group_id: str, **_: Any) -> None:
        self.group = group_id

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    async def committed(self, partition: TopicPartition) -> int | None:
        return self.committed_by_group[self.group][partition.partition]

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[Any, int]:
        return dict.fromkeys(partitions, 10)

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[Any, int]:
        return dict.fromkeys(partitions, 100)

    async def offsets_for_times(self, _: dict[Any, int]) -> dict[Any, Any]:
        raise AssertionError("no --to in these cases")

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.group in self.failing:
            raise ConnectionError("Kafka went away")
        self.commits[self.group] = {p.partition: offset for p, offset in offsets.items()}


@pytest.fixture
def kafka(monkeypatch: pytest.MonkeyPatch) -> type[FakeConsumer]:
    async def idle(*_: Any, **__: Any) -> None: ...

    async def partitions(*_: Any) -> list[TopicPartition]:
        return PARTITIONS

    FakeConsumer.committed_by_group = {
        "ca4-store": {0: 100, 1: None, 2: 5},
        "ca4-project": {0: 90, 1: 100, 2: 100},
    }
    FakeConsumer.failing = set()
    FakeConsumer.commits = {}
    monkeypatch.setattr(groups, "AIOKafkaConsumer", FakeConsumer)
    monkeypatch.setattr(groups, "ensure_group_idle", idle)
    monkeypatch.setattr(groups, "_partitions", partitions)
    return FakeConsumer


async def rewind(*, dry_run: bool = False, to: datetime | None = None) -> list[Rewound]:
    return await rewind_groups(
        "kafka:9092", TOPIC, ["ca4-store", "ca4-project"], to=to, dry_run=dry_run
    )


async def test_only_partitions_ahead_move_back_to_the_oldest_record(
    kafka: type[FakeConsumer],
) -> None:
    moved = await rewind()

    # Partition 1 of the store has no committed offset (it starts at the oldest record anyway)
    # and partition 2 is already before the oldest: neither moves, never forward.
    assert moved == [
        Rewound("ca4-store", 0, 100, 10),
        Rewound("ca4-project", 0, 90, 10),
        Rewound("ca4-project", 1, 100, 10),
        Rewound("ca4-project", 2, 100, 10),
    ]
    assert kafka.commits == {"ca4-store": {0: 10}, "ca4-project": {0: 10, 1: 10, 2: 10}}


async def test_a_dry_run_commits_nothing(kafka: type[FakeConsumer]) -> None:
    assert len(await rewind(dry_run=True)) == 4
    assert kafka.commits == {}


async def test_a_failure_half_way_says_what_moved_and_that_again_is_safe(
    kafka: type[FakeConsumer],
) -> None:
    kafka.failing = {"ca4-project"}

    with pytest.raises(UnavailableError) as raised:
        await rewind()

    assert str(raised.value).startswith(
        "cannot rewind consumer group ca4-project (ca4-store already moved back): "
    )
    assert str(raised.value).endswith(
        "running the rewind again is safe, it moves only what is still ahead"
    )
    assert kafka.commits == {"ca4-store": {0: 10}}
