"""The archive's object format and naming, independent of S3.

One object holds consecutive records of one partition, starting at the offset the archive
consumer group had committed. The key depends only on the topic, the partition, the first
record's offset and that record's timestamp, so re-archiving after a crash (upload done, commit
not) writes the same key again and replaces the earlier object instead of duplicating events.
The offset is zero-padded to 20 digits so keys sort in offset order.
"""

from __future__ import annotations

import base64
import codecs
import gzip
import io
import json
import zlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from ca4_worker.domain.records import RawRecord

OFFSET_DIGITS = 20
TEXT_CHUNK_BYTES = 64 * 1024
"""Bytes of a record's key or value turned into text at a time when an object is encoded: a
record may be 1 MiB, and as text up to four times that (one emoji makes every character of a
Python string four bytes)."""
COMPRESS_LEVEL = 6
"""zlib's default: level 9 took about 7 times the CPU (a 16 MiB object about 1 s) for objects a
few percent smaller, on the worker that stores and projects too."""
_GZIP_WBITS = 31
"""A gzip stream with mtime 0, as ``gzip.compress(data, mtime=0)`` writes it."""
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""What ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))`` uses, made once."""


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


def encode_archive_object(records: Iterable[RawRecord]) -> bytes:
    """Gzip JSON Lines, byte-for-byte reproducible (gzip mtime fixed at 0).

    The lines are compressed as they are written, a record's key and value
    :data:`TEXT_CHUNK_BYTES` at a time, so encoding holds the compressed object and a chunk of
    text besides the records, never the object's text or an encoded copy of it. A line is
    what ``json.dumps(line, ensure_ascii=False, separators=(",", ":"))`` writes for
    ``{"topic", "partition", "offset", "timestamp_ms", "key", "headers", "value"}`` (or
    ``value_b64`` last, the base64 of a value that is not UTF-8), and the object is what
    ``gzip.compress(text, COMPRESS_LEVEL, mtime=0)`` makes of all the lines.
    """
    compressor = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    compressed = io.BytesIO()
    pending: list[bytes] = []  # pieces of lines, compressed together (a call costs per piece)
    pending_bytes = 0
    for record in records:
        for piece in _line(record):
            pending.append(piece)
            pending_bytes += len(piece)
            if pending_bytes >= TEXT_CHUNK_BYTES:
                compressed.write(compressor.compress(b"".join(pending)))
                pending.clear()
                pending_bytes = 0
    compressed.write(compressor.compress(b"".join(pending)))
    compressed.write(compressor.flush())
    return compressed.getvalue()


def _line(record: RawRecord) -> Iterator[bytes]:
    """One record's line, in pieces, formatted as ``json.dumps`` formats it (not through a
    dict per line, which its encoder walks in Python)."""
    yield b'{"topic":%b,"partition":%d,"offset":%d,"timestamp_ms":%d,"key":' % (
        _json(record.topic),
        record.partition,
        record.offset,
        record.timestamp_ms,
    )
    if record.key:
        yield from _json_string(record.key, "backslashreplace")
    else:
        yield b"null"
    headers = b"[%b]" % b",".join(
        b'[%b,"%b"]' % (_json(name), base64.b64encode(value)) for name, value in record.headers
    )
    if record.value is None:
        yield b',"headers":' + headers + b',"value":null}\n'
    elif _is_utf8(record.value):
        yield b',"headers":' + headers + b',"value":'
        yield from _json_string(record.value, "strict")
        yield b"}\n"
    else:
        # Poison messages are archived too; keep their exact bytes.
        yield b',"headers":' + headers + b',"value_b64":"'
        view = memoryview(record.value)
        # Chunks of whole 3-byte groups: their base64, joined, is the whole's.
        chunk = TEXT_CHUNK_BYTES // 3 * 3
        for start in range(0, len(view), chunk):
            yield base64.b64encode(view[start : start + chunk])
        yield b'"}\n'


def _json(value: object) -> bytes:
    return _ENCODER.encode(value).encode()


def _json_string(data: bytes, errors: str) -> Iterator[bytes]:
    """``data`` decoded as UTF-8 (with ``errors``) and written as a JSON string, a chunk at a
    time: JSON escapes each character on its own, so the chunks' escapes are the whole's."""
    if len(data) <= TEXT_CHUNK_BYTES:
        yield _json(data.decode("utf-8", errors))
        return
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    view = memoryview(data)
    yield b'"'
    for start in range(0, len(view), TEXT_CHUNK_BYTES):
        yield _json(decoder.decode(view[start : start + TEXT_CHUNK_BYTES]))[1:-1]
    yield _json(decoder.decode(b"", final=True))[1:-1]
    yield b'"'


def _is_utf8(data: bytes) -> bool:
    """Whether ``data`` decodes as UTF-8, a chunk at a time (decoded whole, a value may take
    four times its bytes)."""
    if data.isascii():
        return True
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    try:
        for start in range(0, len(view), TEXT_CHUNK_BYTES):
            decoder.decode(view[start : start + TEXT_CHUNK_BYTES])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


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
