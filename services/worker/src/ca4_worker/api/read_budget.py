"""Seconds of read handling per tenant, in one worker: a tenant that keeps the read API busy
waits, instead of taking the event loop from the store and projection stages.

The read slots (:mod:`ca4_worker.api.read_slots`) bound how many reads a tenant has running at
once, not how many it sends: four connections each asking again as soon as answered kept a
worker's event loop (which the consumers share) busy with one tenant's pages. So each read also
pays for the time it held its slot, from a token bucket of seconds per tenant: refilled at
``rate`` seconds per second, holding at most ``burst`` seconds. A read is let in while its
tenant's bucket is not empty and pays when it ends, so one long read (a usage report, a page
that hit its deadline) can overdraw it, and the tenant's next reads wait that off. The time is
wall time with the slot held: the database's share, and the loop's when it is congested, count
too, so a tenant whose reads slow everyone down is slowed down first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ca4_worker.core.metrics import READ_SECONDS, READS_REFUSED


@dataclass
class _Balance:
    seconds: float
    updated: float


@dataclass
class ReadBudget:
    """Per tenant (see :func:`~ca4_worker.api.read_slots.slot_owner`): ``rate`` seconds of
    reads per second, ``burst`` seconds at most saved up; ``rate`` ``0`` turns it off."""

    rate: float
    burst: float
    _balances: dict[str, _Balance] = field(default_factory=dict)

    def wait_for(self, owner: str, now: float | None = None) -> float:
        """Seconds until ``owner`` may read again (``0``: now)."""
        if self.rate <= 0:
            return 0.0
        balance = self._refilled(owner, time.monotonic() if now is None else now)
        return 0.0 if balance.seconds > 0 else max(-balance.seconds, 1e-3) / self.rate

    def charge(self, owner: str, seconds: float, now: float | None = None) -> None:
        """``owner``'s read held its slot ``seconds``."""
        READ_SECONDS.labels(owner).inc(seconds)
        READS_REFUSED.labels(owner)  # at 0 from the tenant's first read, so a refusal shows
        if self.rate > 0:
            self._refilled(owner, time.monotonic() if now is None else now).seconds -= seconds

    def _refilled(self, owner: str, now: float) -> _Balance:
        balance = self._balances.get(owner)
        if balance is None:
            balance = self._balances[owner] = _Balance(self.burst, now)
        balance.seconds = min(self.burst, balance.seconds + (now - balance.updated) * self.rate)
        balance.updated = now
        return balance
