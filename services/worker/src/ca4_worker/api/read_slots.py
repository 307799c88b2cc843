"""Reads in flight per key and in all, in one worker: a read over a cap waits its turn.

Pages are bounded by bytes, so the caps bound what reads hold in memory; but a client that
reads many small things at once (the status of each event it sent, say) should wait a few
milliseconds, not get ``429``. So a read over a cap waits, up to the read deadline, and is
refused at once only when its key already has ``max_waiting`` reads waiting, or the process
``max_waiting_total`` (what many keys can park together).

Waiters queue per key, first come first served, and the keys take turns: a freed slot goes to
the first waiter of the next key in turn that has room, and only that waiter is woken. (Waking
every waiter to re-check its turn cost 0.40 ms of the event loop per read with one key's 256
waiting, on the loop the store and projection stages share.) A key at its own cap is passed
over, so it never holds back another key's waiters behind it. The same slots bound usage
reports per tenant (``what`` and ``owner`` name them in the ``429`` detail).
"""

from __future__ import annotations

import asyncio
from collections import deque

from ca4_auth import InFlight

EVERY_TENANT = "*"
"""The owner of a ``read:all`` key's usage reports, which read every tenant's records (no
tenant id has a ``*``)."""


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
        what: str = "reads",
        owner: str = "key",
    ) -> None:
        self._per_key = per_key
        self._total = total
        self._max_waiting = max_waiting
        self._max_waiting_total = max_waiting_total
        self._waiting_total = 0
        self._wait_s = wait_s
        self._what = what
        self._owner = owner
        self._in_flight = InFlight()
        self._waiting: dict[str, int] = {}
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        """Each key's waiters, first come first; the keys in the order of their turn."""

    async def leave(self, key_id: str) -> None:
        """One read of ``key_id`` is answered: its slot goes to the next in turn."""
        self._give_back(key_id)

    def _give_back(self, key_id: str) -> None:
        self._in_flight.leave(key_id)
        self._hand_over()

    def _fits(self, key_id: str) -> bool:
        return self._in_flight.total < self._total and self._in_flight.fits(key_id, self._per_key)

    def _hand_over(self) -> None:
        """Give what room there is to waiters: each key in turn hands its first waiter a slot
        when it has room, then goes to the back of the turn; a key at its cap is passed over.
        Only the waiters handed a slot are woken, and the keys checked are at most those at
        their cap (``total / per_key``) plus one per slot handed."""
        passed: set[str] = set()
        while self._queues and self._in_flight.total < self._total:
            key_id = next(iter(self._queues))
            if key_id in passed:
                return  # every key left waiting is at its own cap
            queue = self._queues.pop(key_id)
            while queue and queue[0].done():  # cancelled, and not yet out of the queue
                queue.popleft()
            if not queue:
                continue
            if self._in_flight.fits(key_id, self._per_key):
                self._in_flight.add(key_id)
                queue.popleft().set_result(None)
                passed.clear()
            else:
                passed.add(key_id)
            if queue:
                self._queues[key_id] = queue  # to the back of the turn

    async def enter(self, key_id: str) -> None:
        """Take a slot of ``key_id``, waiting for one up to ``wait_s``; else raise
        :class:`ReadRefusedError`."""
        # No waiter could take this slot: a freed slot is handed over as it is freed, so a
        # key with waiters is at its cap, or the worker is full.
        if self._fits(key_id):
            self._in_flight.add(key_id)
            return
        waiting = self._waiting.get(key_id, 0)
        if waiting >= self._max_waiting:
            raise ReadRefusedError(self._cap(key_id, f"{waiting} more waiting"))
        if self._waiting_total >= self._max_waiting_total:
            raise ReadRefusedError(
                self._cap(key_id, f"{self._waiting_total} more of every {self._owner} waiting")
            )
        self._waiting[key_id] = waiting + 1
        self._waiting_total += 1
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key_id, deque()).append(turn)
        try:
            async with asyncio.timeout(self._wait_s):
                await turn
        except TimeoutError:
            if not _handed(turn):
                self._forget(key_id, turn)
                raise ReadRefusedError(
                    self._cap(key_id, f"none freed within {self._wait_s:g} s")
                ) from None
            # Handed a slot in the same loop turn as the deadline passed: it is this read's.
        except BaseException:
            # Cancelled (the client went away): a slot handed meanwhile goes to the next.
            if _handed(turn):
                self._give_back(key_id)
            else:
                self._forget(key_id, turn)
            raise
        finally:
            self._waiting_total -= 1
            left = self._waiting.pop(key_id) - 1
            if left:
                self._waiting[key_id] = left

    def _forget(self, key_id: str, turn: asyncio.Future[None]) -> None:
        """Take a waiter that gave up out of its key's queue (it may be out already)."""
        queue = self._queues.get(key_id)
        if queue is None:
            return
        try:
            queue.remove(turn)
        except ValueError:
            return
        if not queue:
            del self._queues[key_id]

    def _cap(self, key_id: str, why: str) -> str:
        if self._in_flight.total >= self._total:
            return f"this worker already has {self._total} {self._what} in flight ({why})"
        return (
            f"{self._name(key_id)} already has {self._per_key} {self._what} in flight here ({why})"
        )

    def _name(self, key_id: str) -> str:
        if key_id == EVERY_TENANT:
            return "read:all (every tenant)"
        return f"{self._owner} {key_id!r}"


def _handed(turn: asyncio.Future[None]) -> bool:
    """Whether a waiter was handed its slot (it holds one, and must use or give it back)."""
    return turn.done() and not turn.cancelled()
