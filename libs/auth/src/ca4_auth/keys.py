"""API keys with an owner (tenant) and scopes, held as SHA-256 hashes and looked up by hash.

The keys file (and ``CA4_API_KEY_HASHES``) holds one entry per line (or comma-separated)::

    # key_id:sha256hex[:tenant[:scope+scope...]]
    colab:9f86d081...:acme:write
    notebooks:60303ae2...:acme:write+read   # a comment may follow an entry
    ops:fd61a03a...:ops:read:all

A ``#`` starts a comment that runs to the end of the line, whole-line or after entries (a
comma-separated line loses the entries after its ``#`` too). No field can hold a ``#``: key ids
and tenants are ``A-Z a-z 0-9 . _ -``, hashes are hex and scopes are the :class:`Scope` names.

An entry of the old form ``key_id:sha256hex`` still works: its tenant is its key id and its
scopes are ``write+read``. Before tenancy the read API asked for no key at all, and clients
(the seed's quick-start notebook among them) read their sessions back with the key they report
with; now such a key reads only its own tenant, which holds what it reported since the upgrade
(strictly less than before). An entry that names a tenant but leaves out the scopes gets
``write`` alone: a named tenant may be shared by several keys, and reading what the others
reported is granted by writing ``read`` out. :func:`default_scopes` is that rule.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

import structlog
from ca4_schemas.constants import LEGACY_TENANT
from ca4_schemas.types import OWNER_ID_PATTERN

log = structlog.get_logger(__name__)

DEV_API_KEY: Final = "ca4-dev-key"
"""The well-known development key, accepted only in ``dev`` when no key is configured."""
DEV_API_KEY_ID: Final = "dev"
"""The key id of :data:`DEV_API_KEY`."""
DEV_TENANT: Final = "dev"
"""The tenant of :data:`DEV_API_KEY`."""

#: Values people leave in templates; a key hash equal to the hash of one of them is refused.
PLACEHOLDER_KEYS = frozenset(
    {"changethis", "changeme", "change-me", "secret", "password", "xxx", "todo", DEV_API_KEY}
)
_OWNER_ID = re.compile(OWNER_ID_PATTERN)
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_FORMAT = "key_id:<64 hex sha256>[:tenant[:scope+scope...]]"


class Scope(StrEnum):
    """What a key may do."""

    WRITE = "write"
    """Report GPU metadata (processor)."""
    READ = "read"
    """Read its own tenant's sessions, GPUs and events (worker read API)."""
    READ_ALL = "read:all"
    """Read every tenant's data (operators); implies ``read``."""


class ApiKeyConfigError(ValueError):
    """A keys entry is malformed or hashes a placeholder key (the message never holds a key)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """Who presented a key: its id, its owner and what it may do."""

    key_id: str
    tenant: str
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        """Whether this key holds ``scope`` (``read:all`` includes ``read``)."""
        return scope in self.scopes or (scope is Scope.READ and Scope.READ_ALL in self.scopes)

    @property
    def read_tenant(self) -> str | None:
        """The only tenant this key may read, or ``None`` for every tenant (``read:all``)."""
        return None if Scope.READ_ALL in self.scopes else self.tenant


DEV_KEY: Final = ApiKey(DEV_API_KEY_ID, DEV_TENANT, frozenset({Scope.WRITE, Scope.READ}))
"""What :data:`DEV_API_KEY` may do: report and read the ``dev`` tenant."""


def parse_key_entries(text: str, *, source: str) -> dict[str, ApiKey]:
    """Parse keys entries into ``{sha256 hex: ApiKey}`` (format in the module docstring).

    A ``#`` starts a comment to the end of the line (a whole line or after its entries), so a
    mounted secret file can explain itself.
    Errors name the source, the line and the field, never the line's text: a key pasted in
    place of its hash must not end up in a log.
    """
    placeholder_digests = {hashlib.sha256(key.encode()).hexdigest() for key in PLACEHOLDER_KEYS}
    keys: dict[str, ApiKey] = {}
    tenant_of: dict[str, str] = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        entries, _, _comment = line.partition("#")  # no field can hold a "#"
        for raw_entry in entries.split(","):
            entry = raw_entry.strip()
            if not entry:
                continue
            where = f"{source} line {line_number}"
            digest, key = _parse_entry(entry, where)
            if digest in placeholder_digests:
                raise ApiKeyConfigError(
                    f"{where}: key {key.key_id!r} is a placeholder or the public dev key; "
                    "generate a real one (python -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))')"
                )
            if digest in keys:
                if keys[digest] != key:
                    first = keys[digest]
                    differs = (
                        f"as key {first.key_id!r} and as {key.key_id!r}"
                        if first.key_id != key.key_id
                        else f"for key {key.key_id!r} with another tenant or other scopes"
                    )
                    raise ApiKeyConfigError(
                        f"{where}: the same key hash appears twice, {differs}; one key has one "
                        "entry"
                    )
                # An exact repeat (files merged by hand, a line pasted twice) means one key;
                # releases before tenancy took it, so it is not worth a start-up failure.
                log.warning("api key listed twice", source=where, key_id=key.key_id)
                continue
            if tenant_of.setdefault(key.key_id, key.tenant) != key.tenant:
                raise ApiKeyConfigError(
                    f"{where}: key id {key.key_id!r} is listed with two tenants; "
                    "a rotated key keeps its tenant"
                )
            keys[digest] = key
    return keys


def _parse_entry(entry: str, where: str) -> tuple[str, ApiKey]:
    fields = entry.split(":", 3)
    if len(fields) < 2:
        raise ApiKeyConfigError(f"{where}: expected {_FORMAT}")
    key_id, digest = fields[0], fields[1].lower()
    if not _OWNER_ID.match(key_id):
        raise ApiKeyConfigError(
            f"{where}: the key id (field 1) must be 1-64 of A-Z a-z 0-9 . _ - ({_FORMAT})"
        )
    if not _DIGEST.match(digest):
        raise ApiKeyConfigError(
            f"{where}: field 2 must be the 64 hex digit SHA-256 of the key, never the key "
            f"itself ({_FORMAT})"
        )
    tenant = fields[2] if len(fields) > 2 else key_id
    if not _OWNER_ID.match(tenant):
        raise ApiKeyConfigError(
            f"{where}: the tenant (field 3) must be 1-64 of A-Z a-z 0-9 . _ - ({_FORMAT})"
        )
    if tenant == LEGACY_TENANT:
        # An old-form entry keeps its rights when it names a tenant: say how, or the advice
        # would cost the key its reads (a named tenant's default is ``write``).
        if len(fields) > 3:
            form = f"<tenant>:{fields[3]}"
        elif len(fields) > 2:
            form = "<tenant>"
        else:
            form = "<tenant>:write+read"
        raise ApiKeyConfigError(
            f"{where}: tenant {LEGACY_TENANT!r} is reserved for events from before tenancy; "
            f"give key {key_id!r} another tenant ({key_id}:<hash>:{form})"
        )
    scopes = (
        _parse_scopes(fields[3], where)
        if len(fields) > 3
        else default_scopes(tenant_named=len(fields) > 2)
    )
    return digest, ApiKey(key_id, tenant, scopes)


def default_scopes(*, tenant_named: bool) -> frozenset[Scope]:
    """The scopes of an entry that leaves them out (the only place this rule is written).

    Without a tenant either (the old ``key_id:sha256hex`` form) the key's tenant is its own id,
    which another entry shares only by naming it (a rotated key: ``newid:<hash>:<old id>``):
    ``write+read``, so a client from before tenancy reads back what it reports, as it did then.
    With a tenant named, ``write``: such a tenant may be shared, and is read only by the keys
    given ``read`` explicitly (and widening a key's rights is never a side effect of an
    upgrade: tenancy-era entries keep exactly what they had).
    """
    if tenant_named:
        return frozenset({Scope.WRITE})
    return frozenset({Scope.WRITE, Scope.READ})


def _parse_scopes(text: str, where: str) -> frozenset[Scope]:
    names = [name.strip() for name in text.split("+")]
    known = {scope.value for scope in Scope}
    if not all(names) or any(name not in known for name in names):
        raise ApiKeyConfigError(
            f"{where}: scopes (field 4) must be '+'-separated from {sorted(known)}"
        )
    return frozenset(Scope(name) for name in names)


def accepts_dev_key(environment: str, inline_hashes: str, keys_file: Path | None) -> bool:
    """True when no key is configured outside ``prod``: the public dev key is then accepted."""
    return environment != "prod" and not inline_hashes.strip() and keys_file is None


def check_key_settings(environment: str, inline_hashes: str, keys_file: Path | None) -> None:
    """Fail start-up on malformed inline keys, and in ``prod`` without a usable key (blank
    entries and comments are none)."""
    inline_keys = parse_key_entries(inline_hashes, source="CA4_API_KEY_HASHES")
    if environment != "prod" or inline_keys:
        return
    file_keys: dict[str, ApiKey] = {}
    if keys_file is not None:
        try:
            text = keys_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read CA4_API_KEYS_FILE {keys_file}: {error}") from None
        file_keys = parse_key_entries(text, source=str(keys_file))
    if not file_keys:
        raise ValueError(
            "CA4_ENVIRONMENT=prod needs API keys: set CA4_API_KEY_HASHES='id:<sha256 hex>' "
            "or mount CA4_API_KEYS_FILE with at least one key; the public dev key is never "
            "accepted in prod"
        )


class ApiKeyRing:
    """The accepted keys as ``{sha256 hex: ApiKey}``; the plain keys are never held.

    Keys from ``CA4_API_KEY_HASHES`` are fixed for the process; keys from ``CA4_API_KEYS_FILE``
    are re-read whenever the file's text changes, so revoking a key (or changing its tenant or
    scopes) is an edit of the mounted secret, effective within one reload interval.
    """

    def __init__(self, *, inline_hashes: str, keys_file: Path | None, dev_key: bool) -> None:
        self._inline = parse_key_entries(inline_hashes, source="CA4_API_KEY_HASHES")
        if dev_key:
            self._inline[hashlib.sha256(DEV_API_KEY.encode()).hexdigest()] = DEV_KEY
        self._keys_file = keys_file
        self._file_keys: dict[str, ApiKey] = {}
        self._file_text: str | None = None
        self._by_digest: dict[str, ApiKey] = dict(self._inline)
        if keys_file is not None:
            self._load_file()

    @classmethod
    def configured(
        cls, *, environment: str, inline_hashes: str, keys_file: Path | None
    ) -> ApiKeyRing:
        """The ring for a service's settings; without configured keys in dev, the dev key."""
        dev_key = accepts_dev_key(environment, inline_hashes, keys_file)
        if dev_key:
            log.warning(
                "api_keys.dev_key_accepted",
                key_id=DEV_API_KEY_ID,
                tenant=DEV_TENANT,
                hint="set CA4_API_KEY_HASHES or CA4_API_KEYS_FILE; never run like this in prod",
            )
        return cls(inline_hashes=inline_hashes, keys_file=keys_file, dev_key=dev_key)

    def _load_file(self) -> None:
        assert self._keys_file is not None
        text = self._keys_file.read_text(encoding="utf-8")
        if text == self._file_text:
            return
        self._file_keys = parse_key_entries(text, source=str(self._keys_file))
        # Built whole, then swapped in: identify() never sees half a ring. A hash held both
        # inline and in the file means the file's entry, as when every entry was compared.
        self._by_digest = {**self._inline, **self._file_keys}
        self._file_text = text
        log.info("api_keys.loaded", source=str(self._keys_file), key_ids=sorted(self.key_ids))

    async def reload(self) -> None:
        """Re-read the keys file if it changed; a broken file keeps the previous keys (logged)."""
        if self._keys_file is None:
            return
        try:
            await asyncio.to_thread(self._load_file)
        except (OSError, UnicodeDecodeError, ApiKeyConfigError) as error:
            log.error("api_keys.reload_failed", source=str(self._keys_file), error=str(error))

    async def reload_forever(self, interval_s: float) -> None:
        """Background task: pick up key rotations and revocations without a restart."""
        while True:
            await asyncio.sleep(interval_s)
            await self.reload()

    @property
    def key_ids(self) -> set[str]:
        """Ids of every accepted key (for logs, never the keys)."""
        return {key.key_id for key in (*self._inline.values(), *self._file_keys.values())}

    @property
    def tenants(self) -> frozenset[str]:
        """The tenants of every accepted key: a bounded set the operator controls (metric
        labels take a tenant only from it)."""
        return frozenset(key.tenant for key in (*self._inline.values(), *self._file_keys.values()))

    def identify(self, presented_key: str) -> ApiKey | None:
        """The key ``presented_key`` is, or ``None``.

        One dict lookup by the presented key's SHA-256, whatever the number of keys: a request
        without a valid key, which no rate limit has yet met, costs one hash, not a comparison
        per key. The lookup's timing depends only on that digest, which says nothing usable
        about a stored key (finding a key from a digest prefix means inverting SHA-256).
        """
        return self._by_digest.get(hashlib.sha256(presented_key.encode()).hexdigest())
