"""Events and Kafka records for worker tests."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ca4_schemas import GpuMetadataReported
from ca4_schemas.constants import HEADER_EVENT_ID
from ca4_worker.domain.records import Position, PositionedEvent, RawRecord

from tests.support.reports import make_report

BASE_TIME = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
TENANT_A = "tenant-a"
TENANT_B = "tenant-b"


def v1_body(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as a version-1 event (before tenancy: no key id, no tenant)."""
    legacy = {key: value for key, value in body.items() if key not in {"key_id", "tenant"}}
    return {**legacy, "schema_version": 1}


def gpu_sample(
    index: int = 0,
    *,
    uuid_: str | None = None,
    name: str = "Tesla T4",
    utilization: float | None = 50.0,
    memory_used: float | None = 1000.0,
) -> dict[str, Any]:
    """One GPU sample as JSON."""
    sample: dict[str, Any] = {
        "uuid": uuid_ or f"GPU-{index:08d}-test",
        "index": index,
        "name": name,
        "memory_total_mib": 15360.0,
        "temperature_gpu_c": 60.0,
        "power_draw_w": 40.5,
    }
    if utilization is not None:
        sample["utilization_gpu_pct"] = utilization
    if memory_used is not None:
        sample["memory_used_mib"] = memory_used
    return sample


def event_body(
    *,
    session_id: str = "session-a",
    occurred_at: datetime | None = None,
    received_at: datetime | None = None,
    gpus: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
    event_id: str | None = None,
    tenant: str = TENANT_A,
    key_id: str | None = None,
    driver_version: str | None = None,
) -> dict[str, Any]:
    """A valid ``GpuMetadataReported`` as a JSON-ready dict: :func:`make_report`'s report as
    the processor stamps it for ``tenant``'s key."""
    occurred = occurred_at or datetime.now(UTC)
    report = make_report(
        session_id=session_id,
        occurred_at=occurred.isoformat(),
        labels=labels if labels is not None else {"project": "tests"},
    )
    report["payload"]["gpus"] = gpus if gpus is not None else [gpu_sample()]
    report["payload"]["collector"] = {"collector": "nvml"}
    if driver_version is not None:
        report["payload"]["host"]["driver_version"] = driver_version
    return {
        **report,
        "event_id": event_id or report["event_id"],
        "schema_version": 2,
        "received_at": (received_at or occurred + timedelta(milliseconds=5)).isoformat(),
        "key_id": key_id or f"{tenant}-key",
        "tenant": tenant,
    }


def make_event(**kwargs: Any) -> GpuMetadataReported:
    """A decoded event."""
    return GpuMetadataReported.model_validate_json(json.dumps(event_body(**kwargs)))


def positioned(partition: int, offset: int, **kwargs: Any) -> PositionedEvent:
    """An event at a Kafka position."""
    return PositionedEvent(event=make_event(**kwargs), position=Position(partition, offset))


def report_of_gpus(
    offset: int, uuids: Sequence[str], *, session_id: str = "s", at: datetime = BASE_TIME
) -> PositionedEvent:
    """An event at partition 0, ``offset``, of one GPU sample per UUID in ``uuids``."""
    return positioned(
        0,
        offset,
        session_id=session_id,
        occurred_at=at,
        gpus=[gpu_sample(index, uuid_=uuid) for index, uuid in enumerate(uuids)],
    )


def record(
    value: bytes | dict[str, Any] | None,
    *,
    partition: int = 0,
    offset: int = 0,
    topic: str = "gpu-metadata",
    timestamp_ms: int = 1_767_614_400_000,
) -> RawRecord:
    """A raw Kafka record carrying ``value`` (a dict is encoded as JSON)."""
    body = json.dumps(value).encode() if isinstance(value, dict) else value
    headers: tuple[tuple[str, bytes], ...] = ()
    if isinstance(value, dict) and "event_id" in value:
        headers = ((HEADER_EVENT_ID, str(value["event_id"]).encode()),)
    key = value["session_id"].encode() if isinstance(value, dict) else b"poison"
    return RawRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        value=body,
        key=key,
        headers=headers,
        timestamp_ms=timestamp_ms,
    )


def session_stream(
    *,
    sessions: int = 5,
    events_per_session: int = 20,
    partitions: int = 3,
    seed: int = 7,
    gpus_per_event: int = 1,
) -> list[PositionedEvent]:
    """Interleaved events of several sessions, positioned as Kafka would (key = session)."""
    rng = random.Random(seed)
    next_offset = [0] * partitions
    stream: list[PositionedEvent] = []
    pending = [(f"session-{index}", events_per_session) for index in range(sessions)]
    step = 0
    while pending:
        index = rng.randrange(len(pending))
        session_id, left = pending[index]
        partition = sum(map(ord, session_id)) % partitions
        step += 1
        event = make_event(
            session_id=session_id,
            occurred_at=BASE_TIME + timedelta(seconds=step, microseconds=rng.randrange(10**6)),
            gpus=[
                gpu_sample(
                    gpu,
                    uuid_=f"GPU-{session_id}-{gpu}",
                    name=rng.choice(["Tesla T4", "NVIDIA A100"]),
                    utilization=round(rng.uniform(0, 100), 3),
                    memory_used=round(rng.uniform(0, 15000), 1),
                )
                for gpu in range(gpus_per_event)
            ],
            labels={"project": "p", "step": str(step)},
        )
        stream.append(PositionedEvent(event, Position(partition, next_offset[partition])))
        next_offset[partition] += 1
        pending[index] = (session_id, left - 1)
        if left == 1:
            pending.pop(index)
    return stream


def dated_ahead(utilization: float = 1.0) -> PositionedEvent:
    """A report of session ``s`` dated 4:59 past its receipt at :data:`BASE_TIME` (the
    processor accepts up to five minutes ahead), at position 0/0."""
    return positioned(
        0,
        0,
        session_id="s",
        occurred_at=BASE_TIME + timedelta(minutes=4, seconds=59),
        received_at=BASE_TIME,
        gpus=[gpu_sample(0, utilization=utilization)],
    )
