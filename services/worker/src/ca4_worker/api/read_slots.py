"""Reads in flight per key and in all, in one worker: a read over a cap waits its turn.

Pages are bounded by bytes, so the caps bound what reads hold in memory; but a client that
reads many small things at once (the status of each event it sent, say) should wait a few
milliseconds, not get ``429``. So a read over a cap waits, up to the read deadline, and is
refused at once only when its key already has ``max_waiting`` reads waiting, or the process
``max_waiting_total`` (what many keys can park together).
"""

from __future__ import annotations

import asyncio

from ca4_auth import InFlight


class ReadRefusedError(Exception):
    """The read got no slot: the message names the cap."""


class ReadSlots:
    """``per_key`` reads of one key and ``total`` of all at once; the rest wait in turn."""

    def __init__(
        self,
        *,
        per_key: int,
        total: int,
        max_waiting: int,
        max_waiting_total: int,
        wait_s: float,
    ) -> None:
        self._per_key = per_key
        self._total = total
        self._max_waiting = max_waiting
        self._max_waiting_total = max_waiting_total
        self._waiting_total = 0
        self._wait_s = wait_s
        self._in_flight = InFlight()
        self._waiting: dict[str, int] = {}
        self._turn = asyncio.Condition()

    async def leave(self, key_id: str) -> None:
        """One read of ``key_id`` is answered: its slot goes to the next in turn."""
        self._in_flight.leave(key_id)
        async with self._turn:
            self._turn.notify_all()

    def _try_enter(self, key_id: str) -> bool:
        return self._in_flight.total < self._total and self._in_flight.enter(key_id, self._per_key)

    async def enter(self, key_id: str) -> None:
        """Take a slot of ``key_id``, waiting for one up to ``wait_s``; else raise
        :class:`ReadRefusedError`."""
        if self._try_enter(key_id):
            return
        waiting = self._waiting.get(key_id, 0)
        if waiting >= self._max_waiting:
            raise ReadRefusedError(self._cap(key_id, f"{waiting} more waiting"))
        if self._waiting_total >= self._max_waiting_total:
            raise ReadRefusedError(
                self._cap(key_id, f"{self._waiting_total} more of every key waiting")
            )
        self._waiting[key_id] = waiting + 1
        self._waiting_total += 1
        try:
            async with asyncio.timeout(self._wait_s), self._turn:
                await self._turn.wait_for(lambda: self._try_enter(key_id))
        except TimeoutError:
            raise ReadRefusedError(
                self._cap(key_id, f"none freed within {self._wait_s:g} s")
            ) from None
        finally:
            self._waiting_total -= 1
            left = self._waiting.pop(key_id) - 1
            if left:
                self._waiting[key_id] = left

    def _cap(self, key_id: str, why: str) -> str:
        if self._in_flight.total >= self._total:
            return f"this worker already has {self._total} reads in flight ({why})"
        return f"key {key_id!r} already has {self._per_key} reads in flight here ({why})"
