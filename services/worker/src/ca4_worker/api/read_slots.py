"""Reads in flight per tenant and in all, in one worker: a read over a cap waits its turn.

Pages are bounded by bytes, so the caps bound what reads hold in memory; but a client that
reads many small things at once (the status of each event it sent, say) should wait a few
milliseconds, not get ``429``. So a read over a cap waits, up to the read deadline, and is
refused at once only when its tenant already has ``max_waiting`` reads waiting, or the process
``max_waiting_total`` (what many tenants can park together).

A slot belongs to the tenant whose data is read (:func:`slot_owner`), not to the key: a
tenant may hold any number of keys, and four keys of one tenant took every slot and every
waiting place of the worker. Every ``read:all`` key's reads count as one tenant's.

Waiters queue per tenant, first come first served, and the tenants take turns: a freed slot
goes to the first waiter of the next tenant in turn that has room, and only that waiter is
woken. (Waking every waiter to re-check its turn cost 0.40 ms of the event loop per read with
256 waiting, on the loop the store and projection stages share.) A tenant at its own cap is
passed over, so it never holds back another tenant's waiters behind it. The same slots bound
usage reports per tenant (``what`` names them in the ``429`` detail).
"""

from __future__ import annotations

import asyncio
from collections import deque

from ca4_auth import InFlight

EVERY_TENANT = "*"
"""The owner of a ``read:all`` key's reads and usage reports, which read every tenant's data
(no tenant id has a ``*``)."""


def slot_owner(read_tenant: str | None) -> str:
    """Whose slots a read takes: the tenant it reads (``None``, ``read:all``: every tenant)."""
    return EVERY_TENANT if read_tenant is None else read_tenant


class ReadRefusedError(Exception):
    """The read got no slot: the message names the cap."""


class ReadSlots:
    """``per_tenant`` reads of one tenant and ``total`` of all at once; the rest wait in turn."""

    def __init__(
        self,
        *,
        per_tenant: int,
        total: int,
        max_waiting: int,
        max_waiting_total: int,
        wait_s: float,
        what: str = "reads",
    ) -> None:
        self._per_tenant = per_tenant
        self._total = total
        self._max_waiting = max_waiting
        self._max_waiting_total = max_waiting_total
        self._waiting_total = 0
        self._wait_s = wait_s
        self._what = what
        self._in_flight = InFlight()
        self._waiting: dict[str, int] = {}
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        """Each tenant's waiters, first come first; the tenants in the order of their turn."""

    async def leave(self, tenant: str) -> None:
        """One read of ``tenant`` is answered: its slot goes to the next in turn."""
        self._give_back(tenant)

    def _give_back(self, tenant: str) -> None:
        self._in_flight.leave(tenant)
        self._hand_over()

    def _fits(self, tenant: str) -> bool:
        return self._in_flight.total < self._total and self._in_flight.fits(
            tenant, self._per_tenant
        )

    def _hand_over(self) -> None:
        """Give what room there is to waiters: each tenant in turn hands its first waiter a
        slot when it has room, then goes to the back of the turn; a tenant at its cap is passed
        over. Only the waiters handed a slot are woken, and the tenants checked are at most
        those at their cap (``total / per_tenant``) plus one per slot handed."""
        passed: set[str] = set()
        while self._queues and self._in_flight.total < self._total:
            tenant = next(iter(self._queues))
            if tenant in passed:
                return  # every tenant left waiting is at its own cap
            queue = self._queues.pop(tenant)
            while queue and queue[0].done():  # cancelled, and not yet out of the queue
                queue.popleft()
            if not queue:
                continue
            if self._in_flight.fits(tenant, self._per_tenant):
                self._in_flight.add(tenant)
                queue.popleft().set_result(None)
                passed.clear()
            else:
                passed.add(tenant)
            if queue:
                self._queues[tenant] = queue  # to the back of the turn

    async def enter(self, tenant: str) -> None:
        """Take a slot of ``tenant`` (see :func:`slot_owner`), waiting for one up to
        ``wait_s``; else raise :class:`ReadRefusedError`."""
        # No waiter could take this slot: a freed slot is handed over as it is freed, so a
        # tenant with waiters is at its cap, or the worker is full.
        if self._fits(tenant):
            self._in_flight.add(tenant)
            return
        waiting = self._waiting.get(tenant, 0)
        if waiting >= self._max_waiting:
            raise ReadRefusedError(self._cap(tenant, f"{waiting} more waiting"))
        if self._waiting_total >= self._max_waiting_total:
            raise ReadRefusedError(
                self._cap(tenant, f"{self._waiting_total} more of every tenant waiting")
            )
        self._waiting[tenant] = waiting + 1
        self._waiting_total += 1
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(tenant, deque()).append(turn)
        try:
            async with asyncio.timeout(self._wait_s):
                await turn
        except TimeoutError:
            if not _handed(turn):
                self._forget(tenant, turn)
                raise ReadRefusedError(
                    self._cap(tenant, f"none freed within {self._wait_s:g} s")
                ) from None
            # Handed a slot in the same loop turn as the deadline passed: it is this read's.
        except BaseException:
            # Cancelled (the client went away): a slot handed meanwhile goes to the next.
            if _handed(turn):
                self._give_back(tenant)
            else:
                self._forget(tenant, turn)
            raise
        finally:
            self._waiting_total -= 1
            left = self._waiting.pop(tenant) - 1
            if left:
                self._waiting[tenant] = left

    def _forget(self, tenant: str, turn: asyncio.Future[None]) -> None:
        """Take a waiter that gave up out of its tenant's queue (it may be out already)."""
        queue = self._queues.get(tenant)
        if queue is None:
            return
        try:
            queue.remove(turn)
        except ValueError:
            return
        if not queue:
            del self._queues[tenant]

    def _cap(self, tenant: str, why: str) -> str:
        if self._in_flight.total >= self._total:
            return f"this worker already has {self._total} {self._what} in flight ({why})"
        held = f"{self._per_tenant} {self._what}"
        return f"{owner_name(tenant)} already has {held} in flight here ({why})"


def owner_name(tenant: str) -> str:
    """How an error body names a slot owner."""
    if tenant == EVERY_TENANT:
        return "read:all (every tenant)"
    return f"tenant {tenant!r}"


def _handed(turn: asyncio.Future[None]) -> bool:
    """Whether a waiter was handed its slot (it holds one, and must use or give it back)."""
    return turn.done() and not turn.cancelled()
