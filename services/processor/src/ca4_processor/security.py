"""Rate limits per key and per tenant. The key ring itself is shared with the worker: see
:mod:`ca4_auth`."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ca4_auth import ApiKey, TokenBuckets


@dataclass(frozen=True)
class RateRefusal:
    """Which bucket refused a request, and for how long."""

    wait_s: float
    rate: float
    whose: str
    """``key 'id'`` or ``tenant 'name' (all its keys together)``, for the error body."""


@dataclass
class RateLimits:
    """A key's bucket and its tenant's, shared by all the tenant's keys: a request is paid
    from both, or refused by the one that is short and takes nothing from either.

    The tenant's bucket is ``tenant_keys`` times a key's (refill and burst), so handing a
    tenant more keys (one per notebook or team) does not multiply its share of the processors,
    while a tenant with one key never meets its tenant bucket first.
    """

    per_key: TokenBuckets
    per_tenant: TokenBuckets
    new_sessions: TokenBuckets | None = None
    """Sessions each tenant may start (``None``: no limit)."""

    @classmethod
    def create(
        cls,
        *,
        rate: float,
        burst: int,
        tenant_keys: float,
        new_sessions_rate: float = 0.0,
        new_sessions_burst: int = 1,
    ) -> RateLimits:
        """Buckets of ``rate``/``burst`` per key and ``tenant_keys`` times that per tenant,
        and of ``new_sessions_rate``/``new_sessions_burst`` new sessions per tenant."""
        return cls(
            per_key=TokenBuckets(rate=rate, burst=burst),
            per_tenant=TokenBuckets(rate=rate * tenant_keys, burst=math.ceil(burst * tenant_keys)),
            new_sessions=(
                TokenBuckets(rate=new_sessions_rate, burst=new_sessions_burst)
                if rate > 0 and new_sessions_rate > 0
                else None
            ),
        )

    def give_back(self, key: ApiKey, tokens: int) -> None:
        """Return ``tokens`` a refused request paid to ``key``'s bucket and its tenant's."""
        if self.enabled and tokens > 0:
            self.per_key.take(key.key_id, -tokens)
            self.per_tenant.take(key.tenant, -tokens)

    def try_start_sessions(self, tenant: str, count: int) -> RateRefusal | None:
        """Take ``count`` new sessions from ``tenant``'s bucket; ``None`` when paid."""
        if self.new_sessions is None or count == 0:
            return None
        wait_s = self.new_sessions.wait_for(tenant, count)
        if wait_s > 0:
            return RateRefusal(wait_s, self.new_sessions.rate, f"tenant {tenant!r}")
        self.new_sessions.take(tenant, count)
        return None

    @property
    def enabled(self) -> bool:
        """``False`` when ``RATE_LIMIT_PER_SECOND`` is ``0``: no bucket refuses anything."""
        return self.per_key.rate > 0

    @property
    def burst(self) -> int:
        """The most tokens one request can ever pay (a key's bucket; a tenant's holds more)."""
        return int(self.per_key.burst)

    def try_acquire(
        self, key: ApiKey, tokens: int = 1, now: float | None = None
    ) -> RateRefusal | None:
        """Take ``tokens`` from ``key``'s bucket and its tenant's; ``None`` when paid."""
        if not self.enabled:
            return None
        now = self.per_key.clock() if now is None else now
        key_wait = self.per_key.wait_for(key.key_id, tokens, now)
        if key_wait > 0:
            return RateRefusal(key_wait, self.per_key.rate, f"key {key.key_id!r}")
        tenant_wait = self.per_tenant.wait_for(key.tenant, tokens, now)
        if tenant_wait > 0:
            whose = f"tenant {key.tenant!r} (all its keys together)"
            return RateRefusal(tenant_wait, self.per_tenant.rate, whose)
        self.per_key.take(key.key_id, tokens, now)
        self.per_tenant.take(key.tenant, tokens, now)
        return None
