"""What a JSON document weighs: a bound on what it decodes to, which its bytes are not."""

from __future__ import annotations

OBJECT_WEIGHT = 80
"""Bytes a record's weight adds for each JSON object in it (:func:`record_weight`)."""
STRING_WEIGHT = 8
"""Bytes a record's weight adds for each string in it, key or value (:func:`record_weight`)."""


def record_weight(value: bytes | None) -> int:
    """The bytes a record counts for in the worker's memory bounds: its own, plus
    :data:`OBJECT_WEIGHT` for each JSON object and :data:`STRING_WEIGHT` for each string in
    it, key or value.

    Decoded, an object becomes a model with every field of its class, the ones the record
    left out too, and a string of one character takes 50 to 80 bytes, so what a record decodes
    to follows its objects and strings more than its bytes: a report of 64 GPUs with 256
    processes each that gives only required fields decodes to 42 times its bytes, a full
    one-GPU report to 8. Weighed this way, every shape measured decodes to 2.2 to 8.2 times
    its weight (``docs/architecture.md``, "Memory is bounded by bytes"), so a bound in weight is a
    bound in memory whatever a client leaves out: the processor bounds request bodies by it, the
    worker its batches, handoff and replay pages.

    Strings are counted by their quotes, half a string each, so whitespace cannot hide one
    (counting only values, by how they end in compact JSON, missed those followed by a space);
    quotes or braces inside a string only make a record weigh more. One pass over the bytes
    per count: the worker weighs every record three times.
    """
    if value is None:
        return 0
    return len(value) + OBJECT_WEIGHT * value.count(b"{") + STRING_WEIGHT // 2 * value.count(b'"')
