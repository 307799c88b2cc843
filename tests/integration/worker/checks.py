"""What a user checks after a run: the store, the projections, the archive."""

from __future__ import annotations

from collections import Counter

from ca4_worker.domain.archive import decode_archive_object
from ca4_worker.persistence.documents import Doc
from ca4_worker.persistence.s3 import S3ObjectStore
from pymongo.asynchronous.database import AsyncDatabase


async def stored_event_ids(database: AsyncDatabase[Doc]) -> list[str]:
    """Every event id in ``events``."""
    return [doc["_id"] async for doc in database["events"].find({}, {"_id": 1})]


async def projected_sample_total(database: AsyncDatabase[Doc]) -> int:
    """Sum of ``sample_count`` over all sessions."""
    return sum([doc["sample_count"] async for doc in database["sessions"].find({})])


async def archived_positions(objects: S3ObjectStore, topic: str) -> Counter[tuple[int, int]]:
    """How many times each (partition, offset) appears across the archive's objects."""
    counts: Counter[tuple[int, int]] = Counter()
    for key in await objects.list_keys(f"raw/{topic}/"):
        for record in decode_archive_object(await objects.get(key)):
            counts[(record.partition, record.offset)] += 1
    return counts
