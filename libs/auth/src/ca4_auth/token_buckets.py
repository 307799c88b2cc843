"""Token buckets by id, refilled lazily: the processor's rate limits (tokens per report, per
key and per tenant) and the worker's read budgets (seconds of reads per tenant) are both one.

In-process state: with several replicas, each enforces its own share.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Bucket:
    level: float
    updated: float


@dataclass
class TokenBuckets:
    """A bucket per id, full (``burst``) when first seen and refilled at ``rate`` per second.

    :meth:`take` may overdraw a bucket (a read paid for after it ran); the id then waits the
    debt off. ``clock`` is the time source (tests pass their own).
    """

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def wait_for(self, bucket_id: str, amount: float, now: float | None = None) -> float:
        """Seconds until ``bucket_id`` holds ``amount`` (``0``: it does now); takes nothing."""
        level = self._refilled(bucket_id, now).level
        return 0.0 if level >= amount else (amount - level) / self.rate

    def take(self, bucket_id: str, amount: float, now: float | None = None) -> None:
        """Take ``amount`` from ``bucket_id``, below zero if need be."""
        self._refilled(bucket_id, now).level -= amount

    def _refilled(self, bucket_id: str, now: float | None) -> _Bucket:
        now = self.clock() if now is None else now
        bucket = self._buckets.get(bucket_id)
        if bucket is None:
            bucket = self._buckets[bucket_id] = _Bucket(float(self.burst), now)
        bucket.level = min(float(self.burst), bucket.level + (now - bucket.updated) * self.rate)
        bucket.updated = now
        return bucket
