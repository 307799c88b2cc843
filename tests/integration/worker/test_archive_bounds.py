"""The archive's byte bound against the real Kafka and MinIO, with the worker running."""

from __future__ import annotations

import json

import pytest
from ca4_schemas import record_weight
from ca4_worker.core.config import Settings
from ca4_worker.domain.archive import decode_archive_object
from ca4_worker.persistence.documents import Doc
from ca4_worker.persistence.s3 import S3ObjectStore
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.worker.checks import archived_positions
from tests.integration.worker.support import produce, running_worker, wait_for
from tests.unit.worker.factories import event_body

pytestmark = [pytest.mark.kafka, pytest.mark.mongo, pytest.mark.s3]

MAX_BYTES = 512 * 1024
SESSION = "heavy"


def heavy_reports(count: int) -> list[dict[str, object]]:
    """Reports of about 100 kB, one session (so one partition): 64 GPUs, 30 long throttle
    reasons each."""
    reasons = [f"{k:02d}" + "r" * 48 for k in range(30)]
    gpus = [
        {"uuid": f"GPU-{g}", "index": g, "name": "x", "throttle_reasons": reasons}
        for g in range(64)
    ]
    return [event_body(session_id=SESSION, gpus=gpus) for _ in range(count)]


def weight(report: dict[str, object]) -> int:
    """What its record weighs, as :func:`produce` publishes it (key: the session id)."""
    return len(SESSION) + record_weight(json.dumps(report, ensure_ascii=False).encode())


async def test_large_reports_are_archived_in_objects_of_the_byte_bound(
    worker_settings: Settings, database: AsyncDatabase[Doc], bucket: S3ObjectStore
) -> None:
    """Counted by records and age only, the archive held a partition's large reports until
    it had ``archive_max_records`` of them or the oldest was ``archive_max_age_s`` old,
    however much they weighed. Each object now ends at the record that takes it to
    ``archive_max_bytes``; the rest waits, under the bound, for more."""
    reports = heavy_reports(30)
    weights = [weight(report) for report in reports]
    assert all(50_000 < each < MAX_BYTES // 3 for each in weights)  # several an object
    expected: list[int] = []  # the records of each object the bound fills
    held = 0
    for index, each in enumerate(weights):
        held += each
        if held >= MAX_BYTES:
            expected.append(index + 1 - sum(expected))
            held = 0
    settings = worker_settings.model_copy(
        update={
            "archive_max_bytes": MAX_BYTES,
            "archive_max_age_s": 600.0,  # never reached here: every flush is by weight
            "projection_enabled": False,
        }
    )
    bootstrap, topic = settings.kafka_bootstrap_servers, settings.kafka_topic
    await produce(bootstrap, topic, reports)
    async with running_worker(settings):

        async def full_objects_archived() -> bool:
            return sum((await archived_positions(bucket, topic)).values()) >= sum(expected)

        await wait_for(full_objects_archived, timeout_s=60, what="objects cut by weight")

    archived = await archived_positions(bucket, topic)
    assert set(archived.values()) == {1}
    [partition] = {partition for partition, _ in archived}
    assert sorted(offset for _, offset in archived) == list(range(sum(expected)))
    keys = await bucket.list_keys(f"raw/{topic}/")
    sizes = []
    for key in keys:
        records = list(decode_archive_object(await bucket.get(key)))
        assert {record.partition for record in records} == {partition}
        object_weight = sum(len(rec.key or b"") + record_weight(rec.value) for rec in records)
        assert MAX_BYTES <= object_weight < MAX_BYTES + max(weights)
        sizes.append(len(records))
    assert sizes == expected
