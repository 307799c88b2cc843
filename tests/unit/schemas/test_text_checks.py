"""Text fields refuse control, unassigned, surrogate, private-use and bidi-override characters,
and decide that in C for nearly every string: a key holder's non-ASCII names must not cost the
edge a Python loop per character."""

from __future__ import annotations

import sys
import unicodedata

import pytest
from ca4_schemas import types
from ca4_schemas.types import _reject_odd_unicode

FORBIDDEN = {"Cc", "Cn", "Cs", "Co"}
BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _accepted_by_the_rule(char: str) -> bool:
    return unicodedata.category(char) not in FORBIDDEN and char not in BIDI


def test_every_code_point_is_decided_as_the_rule_says() -> None:
    wrong = []
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        try:
            _reject_odd_unicode(f"a{char}b")
            accepted = True
        except ValueError:
            accepted = False
        if accepted != _accepted_by_the_rule(char):
            wrong.append(f"U+{code:04X}")
    assert wrong == []


@pytest.mark.parametrize(
    "name",
    [
        "é" * 128,
        "中" * 128,
        "a" * 127 + "é",
        "\u00a0" * 128,  # no-break spaces: a separator, not printable
        "\u200d" * 64 + "a" * 64,  # zero-width joiners: a format character
        "🇫🇷 \U000e0067\U000e0062 team",  # a flag and tag characters
    ],
)
def test_accepted_text_is_checked_without_a_python_loop_per_character(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    types._accepted_non_printables()  # built once per process, on first use
    looked_up: list[str] = []

    def category(char: str) -> str:
        looked_up.append(char)
        return unicodedata.category(char)

    monkeypatch.setattr(types.unicodedata, "category", category)

    assert _reject_odd_unicode(name) == name
    assert looked_up == []


def test_a_refused_string_names_its_first_disallowed_character() -> None:
    with pytest.raises(ValueError, match="U\\+202E"):
        _reject_odd_unicode("abc\u202edef\x00")
