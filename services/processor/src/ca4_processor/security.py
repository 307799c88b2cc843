"""API keys (stored as SHA-256 hashes, compared in constant time) and per-key rate limits."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from ca4_processor.core.config import (
    DEV_API_KEY,
    DEV_API_KEY_ID,
    ApiKeyConfigError,
    Settings,
    parse_key_hashes,
)

log = structlog.get_logger(__name__)


class ApiKeyRing:
    """The accepted keys as ``{sha256 hex: key_id}``; the plain keys are never held.

    Keys from ``CA4_API_KEY_HASHES`` are fixed for the process; keys from ``CA4_API_KEYS_FILE``
    are re-read whenever the file changes, so revoking a key is an edit of the mounted secret.
    """

    def __init__(self, *, inline_hashes: str, keys_file: Path | None, dev_key: bool) -> None:
        self._inline = parse_key_hashes(inline_hashes, source="CA4_API_KEY_HASHES")
        if dev_key:
            self._inline[hashlib.sha256(DEV_API_KEY.encode()).hexdigest()] = DEV_API_KEY_ID
        self._keys_file = keys_file
        self._file_keys: dict[str, str] = {}
        self._file_stamp: tuple[float, int] | None = None
        if keys_file is not None:
            self._load_file()

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeyRing:
        """Build the ring; in dev without configured keys, accept the public dev key (warned)."""
        if settings.uses_dev_key:
            log.warning(
                "api_keys.dev_key_accepted",
                key_id=DEV_API_KEY_ID,
                hint="set CA4_API_KEY_HASHES or CA4_API_KEYS_FILE; never run like this in prod",
            )
        return cls(
            inline_hashes=settings.API_KEY_HASHES,
            keys_file=settings.API_KEYS_FILE,
            dev_key=settings.uses_dev_key,
        )

    def _load_file(self) -> None:
        assert self._keys_file is not None
        stat = self._keys_file.stat()
        stamp = (stat.st_mtime, stat.st_size)
        if stamp == self._file_stamp:
            return
        self._file_keys = parse_key_hashes(
            self._keys_file.read_text(encoding="utf-8"), source=str(self._keys_file)
        )
        self._file_stamp = stamp
        log.info("api_keys.loaded", source=str(self._keys_file), key_ids=sorted(self.key_ids))

    async def reload(self) -> None:
        """Re-read the keys file if it changed; a broken file keeps the previous keys (logged)."""
        if self._keys_file is None:
            return
        try:
            await asyncio.to_thread(self._load_file)
        except (OSError, ApiKeyConfigError) as error:
            log.error("api_keys.reload_failed", source=str(self._keys_file), error=str(error))

    async def reload_forever(self, interval_s: float) -> None:
        """Background task: pick up key rotations and revocations without a restart."""
        while True:
            await asyncio.sleep(interval_s)
            await self.reload()

    @property
    def key_ids(self) -> set[str]:
        """Ids of every accepted key (for logs, never the keys)."""
        return {*self._inline.values(), *self._file_keys.values()}

    def identify(self, presented_key: str) -> str | None:
        """The key id of ``presented_key``, or ``None``.

        Compares against every stored digest with :func:`hmac.compare_digest` and never stops
        early, so timing reveals neither which key nor how much of it matched.
        """
        presented = hashlib.sha256(presented_key.encode()).hexdigest().encode()
        found: str | None = None
        for digest, key_id in (*self._inline.items(), *self._file_keys.items()):
            if hmac.compare_digest(presented, digest.encode()):
                found = key_id
        return found


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """Token bucket per key id: ``rate`` reports per second, bursts up to ``burst`` reports.

    In-process state: with several replicas, each enforces its own share.
    """

    rate: float
    burst: int
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def try_acquire(self, key_id: str, now: float | None = None, *, tokens: int = 1) -> float:
        """Take ``tokens``; return ``0`` when allowed, else seconds until that many are available.

        A refused call takes nothing, so a large request never starves the small ones.
        """
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(tokens=float(self.burst), updated=now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= tokens:
            bucket.tokens -= tokens
            return 0.0
        return (tokens - bucket.tokens) / self.rate

    @staticmethod
    def retry_after_header(wait_s: float) -> str:
        """``Retry-After`` in whole seconds, never ``0``."""
        return str(max(1, math.ceil(wait_s)))
