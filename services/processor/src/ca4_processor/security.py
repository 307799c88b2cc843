"""Per-key rate limits. The key ring itself is shared with the worker: see :mod:`ca4_auth`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


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
