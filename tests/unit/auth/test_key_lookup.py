"""Identifying a key costs the same with ten keys or ten thousand: a lookup by its hash.

A request with a wrong key comes before any rate limit, so it must not cost one comparison per
accepted key (one key per notebook is encouraged, so rings grow large).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from ca4_auth import ApiKey, ApiKeyRing, Scope

MANY = 10_000


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def many_keys_text() -> str:
    return "\n".join(f"nb-{n}:{digest(f'k-{n}')}:t-{n % 50}:write+read" for n in range(MANY))


@pytest.fixture
def comparisons(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """One entry per call of :func:`hmac.compare_digest` made while the test runs."""
    calls: list[None] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(None)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    return calls


def test_a_wrong_key_is_refused_without_a_comparison_per_key(
    tmp_path: Path, comparisons: list[None]
) -> None:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(many_keys_text())
    ring = ApiKeyRing(inline_hashes="", keys_file=keys_file, dev_key=False)

    assert ring.identify("not-a-key") is None
    assert ring.identify("k-") is None
    assert len(comparisons) <= 2


def test_the_right_key_among_many_is_found_with_its_tenant_and_scopes(
    tmp_path: Path, comparisons: list[None]
) -> None:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(
        many_keys_text() + f"\nops:{digest('k-ops')}:platform:read:all\n"
        f"ci:{digest('k-ci')}:acme  # tenant named, scopes left out\n"
    )
    ring = ApiKeyRing(
        inline_hashes=f"inline:{digest('k-inline')}", keys_file=keys_file, dev_key=False
    )

    assert ring.identify("k-7777") == ApiKey(
        "nb-7777", "t-27", frozenset({Scope.WRITE, Scope.READ})
    )
    assert ring.identify("k-ops") == ApiKey("ops", "platform", frozenset({Scope.READ_ALL}))
    assert ring.identify("k-ci") == ApiKey("ci", "acme", frozenset({Scope.WRITE}))
    assert ring.identify("k-inline") == ApiKey(
        "inline", "inline", frozenset({Scope.WRITE, Scope.READ})
    )
    assert len(comparisons) <= 4
    assert len(ring.key_ids) == MANY + 3


def test_the_dev_key_is_found_by_its_hash_too() -> None:
    ring = ApiKeyRing.configured(environment="dev", inline_hashes="", keys_file=None)

    assert ring.identify("ca4-dev-key") == ApiKey(
        "dev", "dev", frozenset({Scope.WRITE, Scope.READ})
    )
    assert ring.identify("ca4-dev-key ") is None


def test_a_hash_both_inline_and_in_the_file_means_the_file_entry(tmp_path: Path) -> None:
    # Within one source a hash with two meanings is refused at load; across the two sources
    # the file's entry has always won (it was compared last), and still does.
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(f"file:{digest('k')}:ops:read:all\n")

    ring = ApiKeyRing(
        inline_hashes=f"inline:{digest('k')}:acme", keys_file=keys_file, dev_key=False
    )

    assert ring.identify("k") == ApiKey("file", "ops", frozenset({Scope.READ_ALL}))
    assert ring.key_ids == {"inline", "file"}


async def test_a_file_edit_revokes_and_adds_keys_and_keeps_the_inline_ones(
    tmp_path: Path,
) -> None:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(many_keys_text())
    ring = ApiKeyRing(
        inline_hashes=f"inline:{digest('k-inline')}", keys_file=keys_file, dev_key=False
    )
    assert ring.identify("k-42") is not None

    keys_file.write_text(
        many_keys_text().replace(f"nb-42:{digest('k-42')}", f"nb-42:{digest('k-42-rotated')}")
    )
    await ring.reload()

    assert ring.identify("k-42") is None
    assert ring.identify("k-42-rotated") == ApiKey(
        "nb-42", "t-42", frozenset({Scope.WRITE, Scope.READ})
    )
    assert ring.identify("k-inline") is not None

    keys_file.write_text("broken")
    await ring.reload()  # logged; the previous keys stay

    assert ring.identify("k-42-rotated") is not None
    assert ring.identify("k-inline") is not None
