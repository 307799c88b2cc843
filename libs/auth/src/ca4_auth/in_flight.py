"""What each key has in flight, and the total, in one process: requests, or the weight of
what they hold. A key holder who opens many connections at once, or sends while a dependency
answers slowly, gets ``429`` instead of taking the process from every other key.

In-process state, like the rate limit: with several replicas, each enforces its own share.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class InFlight:
    """An amount in flight per key id (requests, or the bytes of weight they hold), and its
    total over every key, in this process.

    A caller checks :meth:`fits_total` against its process-wide cap before :meth:`enter`, so
    it can tell the client which cap refused it; nothing awaits in between, so no other
    request can enter meanwhile.
    """

    total: int = 0
    """The amount in flight, every key's."""
    _counts: dict[str, int] = field(default_factory=dict)

    def fits(self, key_id: str, limit: int, amount: int = 1) -> bool:
        """Whether ``amount`` more stays within ``limit`` for ``key_id``; anything fits when
        the key has nothing in flight, so one request larger than ``limit`` is not refused for
        good."""
        count = self._counts.get(key_id, 0)
        return count == 0 or count + amount <= limit

    def fits_total(self, limit: int, amount: int = 1) -> bool:
        """Whether ``amount`` more stays within ``limit`` for every key together; anything fits
        when nothing is in flight."""
        return self.total == 0 or self.total + amount <= limit

    def held_by(self, key_id: str) -> int:
        """The amount ``key_id`` has in flight."""
        return self._counts.get(key_id, 0)

    def enter(self, key_id: str, limit: int, amount: int = 1) -> bool:
        """Count ``amount`` more for ``key_id``, unless it does not :meth:`fit <fits>`."""
        if not self.fits(key_id, limit, amount):
            return False
        self.add(key_id, amount)
        return True

    def add(self, key_id: str, amount: int = 1) -> None:
        """Count ``amount`` more for ``key_id``, once the caller has checked the caps."""
        self._counts[key_id] = self._counts.get(key_id, 0) + amount
        self.total += amount

    def leave(self, key_id: str, amount: int = 1) -> None:
        """``amount`` of ``key_id`` is done (answered, or no longer held)."""
        count = self._counts.pop(key_id) - amount
        if count:
            self._counts[key_id] = count
        self.total -= amount
