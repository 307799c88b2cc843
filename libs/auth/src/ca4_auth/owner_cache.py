"""Owners of sessions already confirmed, remembered in one process and shared fairly between
tenants.

Claims never change, so both services keep the owners they have confirmed and skip the
database for sessions that report again. The room is bounded; a plain LRU gave all of it to
whoever made new sessions fastest: one key making a fresh session per report (1,000 a second
at its rate) turned every other tenant's owners out within two minutes, and each of their
reports then paid a database round trip again, under its deadline. Here a full cache makes
room from the tenant holding the most owners (its least recently used one): max-min fair. A
tenant making sessions as fast as it can takes room only from tenants holding more than it,
and only down to its own share, so every tenant holding less than the largest shares keeps all
of its owners; alone, a tenant has all of the room.
"""

from __future__ import annotations

from collections import OrderedDict


class SessionOwnerCache:
    """At most ``size`` session owners; full, it forgets one of the tenant holding the most."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._owner_of: dict[str, str] = {}
        self._sessions_of: dict[str, OrderedDict[str, None]] = {}
        """Each tenant's sessions, least recently used first."""
        self._tenants_holding: dict[int, set[str]] = {}
        """The tenants by how many sessions they hold, to find the largest at once."""
        self._most = 0

    def __len__(self) -> int:
        return len(self._owner_of)

    def get(self, session_id: str) -> str | None:
        """The owner of ``session_id``, if remembered (it is then the most recently used)."""
        owner = self._owner_of.get(session_id)
        if owner is not None:
            self._sessions_of[owner].move_to_end(session_id)
        return owner

    def put(self, session_id: str, owner: str) -> None:
        """Remember ``owner`` for ``session_id`` (a confirmed owner never changes, so a known
        session is left as it is: its last :meth:`get` placed it)."""
        if session_id in self._owner_of:
            return
        self._owner_of[session_id] = owner
        sessions = self._sessions_of.setdefault(owner, OrderedDict())
        sessions[session_id] = None
        self._recount(owner, len(sessions) - 1)
        if len(self._owner_of) > self._size:
            self._forget_one_of_the_largest()

    def _forget_one_of_the_largest(self) -> None:
        largest = next(iter(self._tenants_holding[self._most]))
        sessions = self._sessions_of[largest]
        session_id, _ = sessions.popitem(last=False)
        del self._owner_of[session_id]
        if not sessions:
            del self._sessions_of[largest]
        self._recount(largest, len(sessions) + 1)

    def _recount(self, tenant: str, before: int) -> None:
        """``tenant`` held ``before`` sessions and now holds its current count."""
        after = len(self._sessions_of.get(tenant, ()))
        if before:
            holding = self._tenants_holding[before]
            holding.discard(tenant)
            if not holding:
                del self._tenants_holding[before]
                if before == self._most and after < before:
                    self._most = after
        if after:
            self._tenants_holding.setdefault(after, set()).add(tenant)
            self._most = max(self._most, after)
