"""Seconds of read handling per tenant, in one worker: a tenant that keeps the read API busy
waits, instead of taking the event loop from the store and projection stages.

The read slots (:mod:`ca4_worker.api.read_slots`) bound how many reads a tenant has running at
once, not how many it sends: four connections each asking again as soon as answered kept a
worker's event loop (which the consumers share) busy with one tenant's pages. So each read also
pays for the time it held its slot, from a token bucket of seconds per tenant: refilled at
``rate`` seconds per second, holding at most ``burst`` seconds. A read is let in while its
tenant's bucket is not empty, checked again once it has its slot (reads let in meanwhile may
have spent it), and pays when it ends, so one long read (a usage report, a page that hit its
deadline) can overdraw it, and the tenant's next reads wait that off. The time is wall time
with the slot held: the database's share, and the loop's when it is congested, count too, so a
tenant whose reads slow everyone down is slowed down first. Not counted: a usage report's wait
for its own slot (behind other tenants' reports), and a read that failed because the database
was unavailable (an outage is nobody's read).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ca4_auth import TokenBuckets

from ca4_worker.core.metrics import READ_SECONDS, READS_REFUSED

_LEFT_TO_START = 1e-3
"""Seconds a tenant must have left for a read to start: any, but not none."""


@dataclass
class ReadBudget:
    """Per tenant (see :func:`~ca4_worker.api.read_slots.slot_owner`): ``rate`` seconds of
    reads per second, ``burst`` seconds at most saved up; ``rate`` ``0`` turns it off."""

    rate: float
    burst: float
    buckets: TokenBuckets = field(init=False)

    def __post_init__(self) -> None:
        self.buckets = TokenBuckets(rate=self.rate, burst=self.burst)

    def now(self) -> float:
        """The budget's clock (monotonic seconds; tests set the buckets' ``clock``)."""
        return self.buckets.clock()

    def wait_for(self, owner: str) -> float:
        """Seconds until ``owner`` may read again (``0``: now)."""
        if self.rate <= 0:
            return 0.0
        return self.buckets.wait_for(owner, _LEFT_TO_START)

    def refuse(self, owner: str) -> None:
        """Count a read of ``owner`` refused for its spent budget."""
        READS_REFUSED.labels(owner).inc()

    def charge(self, owner: str, seconds: float) -> None:
        """``owner``'s read held its slot ``seconds`` (what it waited for other tenants left
        out by the caller)."""
        READ_SECONDS.labels(owner).inc(seconds)
        READS_REFUSED.labels(owner)  # at 0 from the tenant's first read, so a refusal shows
        if self.rate > 0:
            self.buckets.take(owner, seconds)
