"""The shared key ring: file format (old and new), tenants, scopes, errors, reloads."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from ca4_auth import (
    ApiKey,
    ApiKeyConfigError,
    ApiKeyRing,
    Scope,
    check_key_settings,
    parse_key_entries,
)

README = Path(__file__).resolve().parents[3] / "README.md"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def ring_of(text: str) -> ApiKeyRing:
    return ApiKeyRing(inline_hashes=text, keys_file=None, dev_key=False)


def test_old_id_hash_lines_mean_own_tenant_write_and_read() -> None:
    # Before tenancy the read API took no key, and the seed's notebook read its session back
    # with the key it reported with: such a key keeps reading, now its own tenant only.
    ring = ring_of(f"colab:{digest('k-colab')}")

    key = ring.identify("k-colab")

    assert key == ApiKey("colab", "colab", frozenset({Scope.WRITE, Scope.READ}))
    assert (key.allows(Scope.READ), key.read_tenant) == (True, "colab")


def test_a_named_tenant_without_scopes_means_write_only() -> None:
    # A named tenant may be shared: reading the other keys' reports is granted explicitly.
    ring = ring_of(f"ci:{digest('k-ci')}:acme, rotated:{digest('k-new')}:colab")

    assert ring.identify("k-ci") == ApiKey("ci", "acme", frozenset({Scope.WRITE}))
    assert ring.identify("k-new") == ApiKey("rotated", "colab", frozenset({Scope.WRITE}))


def test_new_lines_carry_tenant_and_scopes() -> None:
    ring = ring_of(
        f"# comment\n"
        f"nb:{digest('k-nb')}:acme:write+read\n"
        f"ops:{digest('k-ops')}:platform:read:all, ci:{digest('k-ci')}:acme\n"
    )

    assert ring.identify("k-nb") == ApiKey("nb", "acme", frozenset({Scope.WRITE, Scope.READ}))
    assert ring.identify("k-ops") == ApiKey("ops", "platform", frozenset({Scope.READ_ALL}))
    assert ring.identify("k-ci") == ApiKey("ci", "acme", frozenset({Scope.WRITE}))
    assert ring.identify("k-nb-") is None
    assert ring.identify("ca4-dev-key") is None


def test_a_hash_starts_a_comment_on_its_own_line_or_after_entries() -> None:
    ring = ring_of(
        f"# key_id:sha256, tenant, scopes: one entry per line, or several, comma-separated\n"
        f"nb:{digest('k-nb')}:acme:write+read  # notebooks, reads acme back\n"
        f"a:{digest('k-a')}:acme, b:{digest('k-b')}:acme#no space needed, c:hash-ignored\n"
        f"   # indented, with: colons, commas\n"
    )

    assert ring.identify("k-nb") == ApiKey("nb", "acme", frozenset({Scope.WRITE, Scope.READ}))
    assert ring.key_ids == {"nb", "a", "b"}


def test_the_readme_keys_file_example_parses_as_written() -> None:
    section = README.read_text(encoding="utf-8").split("## API keys and tenants", 1)[1]
    example = re.search(r"```text\n(.*?)```", section, re.DOTALL)
    assert example is not None, "README: no keys file example under 'API keys and tenants'"

    keys = parse_key_entries(example[1], source="README.md")

    assert {key.key_id: (key.tenant, key.scopes) for key in keys.values()} == {
        "ingest-ci": ("acme", frozenset({Scope.WRITE})),
        "colab": ("acme", frozenset({Scope.WRITE, Scope.READ})),  # the notebook reads back too
        "ops": ("platform", frozenset({Scope.READ_ALL})),
        "legacy-ci": ("legacy-ci", frozenset({Scope.WRITE, Scope.READ})),
    }


def test_scopes_decide_what_a_key_may_read() -> None:
    writer = ApiKey("w", "acme", frozenset({Scope.WRITE}))
    reader = ApiKey("r", "acme", frozenset({Scope.READ}))
    operator = ApiKey("o", "ops", frozenset({Scope.READ_ALL}))

    assert (writer.allows(Scope.READ), reader.allows(Scope.READ), operator.allows(Scope.READ)) == (
        False,
        True,
        True,
    )
    assert not operator.allows(Scope.WRITE)
    assert (reader.read_tenant, operator.read_tenant) == ("acme", None)


def test_the_dev_key_writes_and_reads_the_dev_tenant() -> None:
    ring = ApiKeyRing.configured(environment="dev", inline_hashes="", keys_file=None)

    assert ring.identify("ca4-dev-key") == ApiKey(
        "dev", "dev", frozenset({Scope.WRITE, Scope.READ})
    )
    assert (
        ApiKeyRing.configured(
            environment="dev", inline_hashes=f"a:{digest('k-a')}", keys_file=None
        ).identify("ca4-dev-key")
        is None
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("k-plain-secret-pasted-by-mistake", "line 1: expected key_id:<64 hex sha256>"),
        ("# ok\n\nid:1234", "line 3: field 2 must be the 64 hex digit SHA-256"),
        ("id:" + "g" * 64, "line 1: field 2 must be"),
        (":" + "a" * 64, "line 1: the key id (field 1)"),
        ("id:" + "a" * 64 + ":acme/evil", "line 1: the tenant (field 3)"),
        ("id:" + "a" * 64 + ":acme:write+admin", "line 1: scopes (field 4)"),
        ("id:" + "a" * 64 + ":acme:", "line 1: scopes (field 4)"),
        # The advice keeps an old-form key's write+read (a named tenant alone means write).
        ("legacy:" + "a" * 64, "another tenant (legacy:<hash>:<tenant>:write+read)"),
        # ... and a key's explicit scopes (a named tenant alone would make a read key write).
        ("id:" + "a" * 64 + ":legacy:read", "another tenant (id:<hash>:<tenant>:read)"),
        (
            f"a:{'a' * 64}\nb:{'a' * 64}",
            "line 2: the same key hash appears twice, as key 'a' and as 'b'",
        ),
        (
            f"a:{'a' * 64}:t\na:{'a' * 64}:t:read",
            "line 2: the same key hash appears twice, for key 'a' with another tenant or other "
            "scopes",
        ),
        (f"a:{'a' * 64}:t1\na:{'b' * 64}:t2", "line 2: key id 'a' is listed with two tenants"),
        (f"prod:{digest('changethis')}", "placeholder"),
    ],
)
def test_invalid_lines_name_the_line_never_the_key(text: str, message: str) -> None:
    with pytest.raises(ApiKeyConfigError, match="keys") as caught:
        parse_key_entries(text, source="keys")

    assert message in str(caught.value)
    assert "k-plain-secret" not in str(caught.value)
    assert "a" * 64 not in str(caught.value)


def test_an_exact_repeat_is_one_key_as_before_tenancy() -> None:
    # Releases before tenancy took a keys file with a line pasted twice; refusing it now would
    # stop a pod from starting on an upgrade over a harmless repeat.
    keys = parse_key_entries(
        f"colab:{digest('k')}\ncolab:{digest('k')}, ci:{digest('c')}:ci:write",
        source="keys",
    )

    assert sorted(key.key_id for key in keys.values()) == ["ci", "colab"]
    assert keys[digest("k")].scopes == {Scope.WRITE, Scope.READ}


def test_a_rotated_key_keeps_its_id_and_tenant_with_two_hashes() -> None:
    ring = ring_of(f"nb:{digest('old')}:acme:write\nnb:{digest('new')}:acme:write")

    assert ring.identify("old") == ring.identify("new")


async def test_file_edits_revoke_and_rescope_without_a_restart(tmp_path: Path) -> None:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(f"a:{digest('k-a')}:acme:read\nb:{digest('k-b')}:acme:read\n")
    ring = ApiKeyRing(inline_hashes="", keys_file=keys_file, dev_key=False)

    # Same size, same second: the text decides, not the file's size or mtime.
    keys_file.write_text(f"a:{digest('k-a')}:acme:read\nc:{digest('k-c')}:acme:read\n")
    await ring.reload()

    assert ring.identify("k-b") is None
    assert ring.identify("k-c") is not None
    assert ring.key_ids == {"a", "c"}


async def test_a_broken_file_keeps_the_previous_keys(tmp_path: Path) -> None:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(f"colab:{digest('k-colab')}")
    ring = ApiKeyRing(inline_hashes="", keys_file=keys_file, dev_key=False)

    keys_file.write_text("colab:not-a-hash")
    await ring.reload()

    assert ring.identify("k-colab") is not None


def test_a_broken_file_at_start_up_fails_naming_the_line(tmp_path: Path) -> None:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(f"ok:{digest('k')}\nsecret-key-here\n")

    with pytest.raises(ApiKeyConfigError, match=r"api-keys line 2") as caught:
        ApiKeyRing(inline_hashes="", keys_file=keys_file, dev_key=False)

    assert "secret-key-here" not in str(caught.value)


@pytest.mark.parametrize("text", ["", "# only a comment\n", " , \n"])
def test_prod_refuses_a_keys_file_without_a_usable_key(tmp_path: Path, text: str) -> None:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(text)

    with pytest.raises(ValueError, match="CA4_ENVIRONMENT=prod needs API keys"):
        check_key_settings("prod", "", keys_file)
    check_key_settings("dev", "", keys_file)  # dev starts, and accepts no key at all
    keys_file.write_text(f"ops:{digest('k')}:platform:read:all")
    check_key_settings("prod", "", keys_file)
