"""Requests in flight per key, and in all, in one process: a key holder who opens many
connections at once gets ``429`` instead of taking the process from every other key.

In-process state, like the rate limit: with several replicas, each enforces its own share.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class InFlight:
    """Requests in flight per key id, and their total, in this process.

    A caller checks :attr:`total` against its process-wide cap before :meth:`enter`, so it can
    tell the client which cap refused it; nothing awaits in between, so no other request can
    enter meanwhile.
    """

    total: int = 0
    """Requests in flight, every key's."""
    _counts: dict[str, int] = field(default_factory=dict)

    def enter(self, key_id: str, limit: int) -> bool:
        """Count one more request of ``key_id``, unless it already has ``limit``."""
        count = self._counts.get(key_id, 0)
        if count >= limit:
            return False
        self._counts[key_id] = count + 1
        self.total += 1
        return True

    def leave(self, key_id: str) -> None:
        """One request of ``key_id`` is answered."""
        count = self._counts.pop(key_id) - 1
        if count:
            self._counts[key_id] = count
        self.total -= 1
