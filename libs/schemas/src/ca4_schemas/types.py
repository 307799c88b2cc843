"""Bounded scalar types shared by the event models.

Every string is length-capped and free of control characters, every number is finite and
range-checked, so nothing a client sends can become a MongoDB operator, a log injection or an
unbounded allocation further down the pipeline.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field, Strict, StrictBool, StrictInt, StringConstraints

#: Unicode categories never accepted in text: controls, unassigned, surrogates, private use.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cn", "Cs", "Co"})
#: Bidirectional overrides can make a log line or a dashboard lie about what it shows.
_BIDI_OVERRIDES = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@functools.cache
def _accepted_non_printables() -> dict[int, None]:
    """A ``str.translate`` table deleting the characters ``str.isprintable`` refuses but text
    accepts (formats other than the bidi overrides, and separators), from the planes that have
    them. One missing here only takes the slow path, which decides the same. Built on first
    use (tens of milliseconds), not at import."""
    table: dict[int, None] = {}
    for plane in (0x0, 0x1, 0xE):
        for code in range(plane << 16, (plane + 1) << 16):
            char = chr(code)
            if char.isprintable() or char in _BIDI_OVERRIDES:
                continue
            if unicodedata.category(char) in {"Cf", "Zs", "Zl", "Zp"}:
                table[code] = None
    return table


def _reject_odd_unicode(value: str) -> str:
    # Two passes in C decide nearly every string: a printable one has no control, unassigned,
    # private or bidi character, nor does one whose only other characters are accepted formats
    # and separators. Checking each character in Python (the slow path, which only refused
    # strings and characters missing from the table take) cost twice the CPU per token of an
    # ASCII batch for a batch of non-ASCII names (docs/architecture.md, "Text checks").
    if value.isprintable() or value.translate(_accepted_non_printables()).isprintable():
        return value
    for char in value:
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES or char in _BIDI_OVERRIDES:
            raise ValueError(f"contains a disallowed character U+{ord(char):04X}")
    return value


ShortText = Annotated[
    str,
    StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=128),
    AfterValidator(_reject_odd_unicode),
]
"""A name or version string: 1-128 characters, no control or bidi-override characters."""

Text = Annotated[
    str,
    StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=512),
    AfterValidator(_reject_odd_unicode),
]
"""A free-form description: 1-512 characters, no control or bidi-override characters."""

Identifier = Annotated[
    str,
    StringConstraints(strict=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$"),
]
"""An opaque id such as a session id: ASCII letters, digits and ``. _ : -``, at most 128."""

OWNER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"
"""API key ids and tenants: ASCII letters, digits and ``. _ -``, at most 64, never ``/`` or ``:``
(a GPU projection's id is ``<tenant>/<gpu uuid>``; the keys file separates fields with ``:``)."""

KeyId = Annotated[str, StringConstraints(strict=True, pattern=OWNER_ID_PATTERN)]
"""The id of an API key (never the key)."""

TenantId = Annotated[str, StringConstraints(strict=True, pattern=OWNER_ID_PATTERN)]
"""The owner of an API key and of everything written with it."""

LabelKey = Annotated[
    str,
    StringConstraints(strict=True, pattern=r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$"),
]
"""A label key: never ``$`` or ``.``, so it can never become a MongoDB operator or field path."""

LabelValue = Annotated[
    str,
    StringConstraints(strict=True, max_length=256),
    AfterValidator(_reject_odd_unicode),
]
"""A label value: at most 256 characters, no control or bidi-override characters."""

Percent = Annotated[float, Strict(), Field(ge=0.0, le=100.0, allow_inf_nan=False)]
"""A percentage in 0-100."""

NonNegativeFloat = Annotated[float, Strict(), Field(ge=0.0, le=1e15, allow_inf_nan=False)]
"""A finite, non-negative measurement (MiB, W, MHz, ...)."""

Celsius = Annotated[float, Strict(), Field(ge=-50.0, le=200.0, allow_inf_nan=False)]
"""A temperature in degrees Celsius."""

Count = Annotated[StrictInt, Field(ge=0, le=2**53)]
"""A non-negative counter that still fits a JSON number exactly."""

Flag = StrictBool
"""A true/false flag; ``"true"`` strings and ``0``/``1`` are rejected."""
