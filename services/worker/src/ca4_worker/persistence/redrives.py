"""Which dead letters an operator re-drove, and when: the ``dead_letter_redrives`` collection.

``ca4 dlq redrive`` skips letters recorded here unless asked again, so running it twice does not
put the same letters back on the topic twice (the store would deduplicate valid events, but
letters that are still poison would go round again). Letters are recorded after they are
published: a crash between the two re-drives them once more, which the store absorbs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from ca4_worker.persistence.database import database_call
from ca4_worker.persistence.documents import Doc

COLLECTION = "dead_letter_redrives"


@dataclass(frozen=True)
class Redrive:
    """The last time a dead letter was re-driven, where to, and how many times in all."""

    redriven_at: datetime
    target_topic: str
    times: int


def redrive_key(dlq_topic: str, partition: int, offset: int) -> str:
    """A dead letter's identity: its position on the dead-letter topic."""
    return f"{dlq_topic}/{partition}:{offset}"


class MongoRedriveLog:
    """Records and looks up re-drives by :func:`redrive_key`."""

    def __init__(self, database: AsyncDatabase[Doc]) -> None:
        self._redrives: AsyncCollection[Doc] = database[COLLECTION]

    async def find(self, keys: Sequence[str]) -> dict[str, Redrive]:
        """The recorded re-drives among ``keys``."""
        if not keys:
            return {}
        with database_call():
            return {
                doc["_id"]: Redrive(doc["redriven_at"], doc["target_topic"], doc["times"])
                async for doc in self._redrives.find({"_id": {"$in": list(keys)}})
            }

    async def record(self, targets: dict[str, str], *, at: datetime) -> None:
        """Record that each key in ``targets`` was re-driven to its topic at ``at``."""
        if not targets:
            return
        with database_call():
            await self._redrives.bulk_write(
                [
                    UpdateOne(
                        {"_id": key},
                        {"$set": {"redriven_at": at, "target_topic": topic}, "$inc": {"times": 1}},
                        upsert=True,
                    )
                    for key, topic in targets.items()
                ],
                ordered=False,
            )
