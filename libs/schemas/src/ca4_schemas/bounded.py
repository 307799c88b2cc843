"""Text that a client chose, bounded before it is repeated where it costs (an answer, a label)."""

from __future__ import annotations

import hashlib
from typing import Final

_DIGEST_HEX: Final = 16
"""Hex digits of SHA-256 that stand for a value's cut part (64 bits)."""


def bounded_text(value: str, max_bytes: int) -> str:
    """``value`` if it fits ``max_bytes`` of UTF-8; else its longest prefix that leaves room for
    ``~`` and 16 hex digits of the whole value's SHA-256, so that values that differ only past
    the bound still read as different."""
    if len(value) <= max_bytes and value.isascii():
        return value
    encoded = value.encode(errors="surrogatepass")
    if len(encoded) <= max_bytes:
        return value
    digest = hashlib.sha256(encoded).hexdigest()[:_DIGEST_HEX]
    # Cut at a character boundary: a partial character at the end is dropped.
    prefix = encoded[: max(0, max_bytes - 1 - _DIGEST_HEX)].decode(errors="ignore")
    return f"{prefix}~{digest}"
