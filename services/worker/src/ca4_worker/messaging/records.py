"""Conversion from aiokafka records to the worker's :class:`RawRecord`."""

from __future__ import annotations

from typing import Any

from ca4_worker.domain.records import RawRecord


def raw_record(record: Any) -> RawRecord:
    """The worker's view of an aiokafka ``ConsumerRecord``."""
    return RawRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        value=record.value,
        key=record.key,
        headers=(
            tuple((name, value or b"") for name, value in record.headers) if record.headers else ()
        ),
        timestamp_ms=record.timestamp or 0,
    )
