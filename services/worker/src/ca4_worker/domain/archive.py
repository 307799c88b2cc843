"""The archive's object format and naming, independent of S3.

One object holds consecutive records of one partition, starting at the offset the archive
consumer group had committed. The key depends only on the topic, the partition, the first
record's offset and that record's timestamp, so re-archiving after a crash (upload done, commit
not) writes the same key again and replaces the earlier object instead of duplicating events.
The offset is zero-padded to 20 digits so keys sort in offset order.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from ca4_worker.domain.records import RawRecord

OFFSET_DIGITS = 20


def archive_key(prefix: str, topic: str, first: RawRecord) -> str:
    """``<prefix>/<topic>/dt=YYYY-MM-DD/partition=P/<topic>+P+<offset>.jsonl.gz``."""
    day = datetime.fromtimestamp(first.timestamp_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
    offset = str(first.offset).zfill(OFFSET_DIGITS)
    return (
        f"{prefix}/{topic}/dt={day}/partition={first.partition}/"
        f"{topic}+{first.partition}+{offset}.jsonl.gz"
    )


def day_prefix(prefix: str, topic: str, day: str) -> str:
    """The key prefix of one day's objects (``day`` as ``YYYY-MM-DD``)."""
    return f"{prefix}/{topic}/dt={day}/"


def _record_line(record: RawRecord) -> dict[str, Any]:
    line: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
        "key": record.key.decode("utf-8", "backslashreplace") if record.key else None,
        "headers": [[name, base64.b64encode(value).decode()] for name, value in record.headers],
    }
    if record.value is None:
        line["value"] = None
    else:
        try:
            line["value"] = record.value.decode("utf-8")
        except UnicodeDecodeError:
            # Poison messages are archived too; keep their exact bytes.
            line["value_b64"] = base64.b64encode(record.value).decode()
    return line


def encode_archive_object(records: Sequence[RawRecord]) -> bytes:
    """Gzip JSON Lines, byte-for-byte reproducible (gzip mtime fixed at 0)."""
    text = "".join(
        json.dumps(_record_line(record), ensure_ascii=False, separators=(",", ":")) + "\n"
        for record in records
    )
    return gzip.compress(text.encode("utf-8"), mtime=0)


def decode_archive_object(data: bytes) -> Iterator[RawRecord]:
    """The records of one archive object, one at a time (an object holds thousands).

    Lines end at ``\n`` only: values are written unescaped (``ensure_ascii=False``), so a
    report's U+2028 or a poison record's U+0085 stays raw in its line, where ``str.splitlines``
    would cut it and leave the object unreadable.
    """
    with gzip.open(io.BytesIO(data)) as lines:
        for line in lines:
            if not line.strip():
                continue
            raw = json.loads(line)
            if "value_b64" in raw:
                value: bytes | None = base64.b64decode(raw["value_b64"])
            elif raw["value"] is None:
                value = None
            else:
                value = raw["value"].encode("utf-8")
            yield RawRecord(
                topic=raw["topic"],
                partition=raw["partition"],
                offset=raw["offset"],
                value=value,
                key=raw["key"].encode("utf-8") if raw["key"] is not None else None,
                headers=tuple((name, base64.b64decode(val)) for name, val in raw["headers"]),
                timestamp_ms=raw["timestamp_ms"],
            )
