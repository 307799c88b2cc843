"""``ReadSlots`` on its own: who gets a freed slot, how many waiters a freed slot wakes, and
that a waiter that gives up (deadline, cancellation) leaves the queue without leaking a slot."""

from __future__ import annotations

import asyncio

import pytest
from ca4_auth import InFlight
from ca4_worker.api.read_slots import ReadRefusedError, ReadSlots
from ca4_worker.core.config import Settings


class CountingInFlight(InFlight):
    """An ``InFlight`` that counts how often a key's turn is checked."""

    checks: int = 0

    def fits(self, key_id: str, limit: int, amount: int = 1) -> bool:
        self.checks += 1
        return super().fits(key_id, limit, amount)


def _slots(**caps: float) -> ReadSlots:
    settings: dict[str, float] = {
        "per_tenant": 1,
        "total": 16,
        "max_waiting": 256,
        "max_waiting_total": 1024,
        "wait_s": 5.0,
    }
    settings.update(caps)
    return ReadSlots(
        per_tenant=int(settings["per_tenant"]),
        total=int(settings["total"]),
        max_waiting=int(settings["max_waiting"]),
        max_waiting_total=int(settings["max_waiting_total"]),
        wait_s=settings["wait_s"],
    )


async def _settle() -> None:
    """Let every task that can run run (woken waiters re-check, take the lock in turn...)."""
    for _ in range(2000):
        await asyncio.sleep(0)


async def _cancel(waiters: list[asyncio.Task[None]]) -> None:
    """Cancel the waiters a test leaves, and let them finish."""
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def _enter(slots: ReadSlots, key_id: str, served: list[str], name: str) -> None:
    await slots.enter(key_id)
    served.append(name)


async def test_a_freed_slot_wakes_one_waiter_not_every_waiter_of_the_key() -> None:
    """``leave`` woke all of a key's 256 waiters and each re-checked its turn on the event loop
    the store and projection stages share (0.40 ms of loop time per read): a freed slot now
    goes to the first waiter whose key has room, checked a few times, not once per waiter."""
    slots = _slots(per_tenant=1, total=16)
    counting = CountingInFlight()
    slots._in_flight = counting  # count the turn checks of this instance
    await slots.enter("a")
    served: list[str] = []
    waiters = [asyncio.create_task(_enter(slots, "a", served, f"a{n}")) for n in range(256)]
    await _settle()
    assert served == []

    checks = []
    for _ in range(3):
        counting.checks = 0
        await slots.leave("a")
        await _settle()
        checks.append(counting.checks)

    assert served == ["a0", "a1", "a2"]  # first come, first served, one per freed slot
    assert max(checks) <= 4, checks
    await _cancel(waiters)


async def test_a_key_at_its_cap_does_not_hold_back_other_keys_behind_it() -> None:
    slots = _slots(per_tenant=1, total=2)
    await slots.enter("a")
    served: list[str] = []
    a_waiters = [asyncio.create_task(_enter(slots, "a", served, f"a{n}")) for n in range(3)]
    await _settle()
    # "a" is at its cap with three waiting; "b" arrives later and there is room in all.
    await asyncio.wait_for(slots.enter("b"), 1)
    c_waiter = asyncio.create_task(_enter(slots, "c", served, "c0"))
    await _settle()
    assert served == []  # the worker is full now: a and b

    await slots.leave("b")  # "a" is still at its cap: "c", behind a's three, gets b's slot
    await _settle()
    assert served == ["c0"]
    await slots.leave("a")  # a's own next waiter, in the order they came
    await _settle()
    assert served == ["c0", "a0"]
    await slots.leave("c")  # room in all, but "a" is at its cap again: nobody is served
    await _settle()
    assert served == ["c0", "a0"]
    await slots.leave("a")
    await _settle()
    assert served == ["c0", "a0", "a1"]
    await c_waiter
    await _cancel(a_waiters)


async def test_keys_waiting_for_the_whole_worker_are_served_in_turn() -> None:
    """With the worker full, a key with many waiters does not go before every other key's."""
    slots = _slots(per_tenant=2, total=2)
    await slots.enter("a")
    await slots.enter("a")
    served: list[str] = []
    tasks = [asyncio.create_task(_enter(slots, "a", served, f"a{n}")) for n in range(3)]
    await _settle()
    tasks += [asyncio.create_task(_enter(slots, "b", served, f"b{n}")) for n in range(2)]
    await _settle()

    for key_id in ("a", "a", "b", "a", "b"):
        await slots.leave(key_id)
        await _settle()

    assert served == ["a0", "b0", "a1", "b1", "a2"]
    await asyncio.gather(*tasks)


async def test_a_waiter_past_the_deadline_is_refused_and_leaves_the_queue() -> None:
    slots = _slots(per_tenant=1, total=1, max_waiting=1, wait_s=0.05)
    await slots.enter("a")
    with pytest.raises(ReadRefusedError) as refused:
        await asyncio.wait_for(slots.enter("a"), 5)
    assert str(refused.value) == (
        "this worker already has 1 reads in flight (none freed within 0.05 s)"
    )
    # It no longer counts as waiting (a new one may wait), and gets the slot once freed.
    late = asyncio.create_task(slots.enter("a"))
    await _settle()
    await slots.leave("a")
    await asyncio.wait_for(late, 1)
    await slots.leave("a")
    await asyncio.wait_for(slots.enter("b"), 1)  # nothing leaked: the worker has room


async def test_a_cancelled_waiter_leaves_the_queue_and_the_next_one_is_served() -> None:
    slots = _slots(per_tenant=1, total=1)
    await slots.enter("a")
    served: list[str] = []
    first = asyncio.create_task(_enter(slots, "a", served, "first"))
    second = asyncio.create_task(_enter(slots, "b", served, "second"))
    await _settle()
    first.cancel()
    await _settle()

    await slots.leave("a")
    await _settle()

    assert first.cancelled()
    assert served == ["second"]
    await second
    await slots.leave("b")
    await asyncio.wait_for(slots.enter("c"), 1)


async def test_a_waiter_cancelled_as_it_is_handed_a_slot_gives_the_slot_back() -> None:
    """The client goes away in the same loop turn as its read is handed the freed slot: the
    slot must go to the next waiter, not stay counted for a read that never runs."""
    slots = _slots(per_tenant=1, total=1)
    await slots.enter("a")
    served: list[str] = []
    doomed = asyncio.create_task(_enter(slots, "a", served, "doomed"))
    after = asyncio.create_task(_enter(slots, "b", served, "after"))
    await _settle()

    await slots.leave("a")  # the slot goes to "doomed", which has not run yet
    doomed.cancel()
    await _settle()

    assert doomed.cancelled()
    assert served == ["after"]
    await after
    await slots.leave("b")
    await asyncio.wait_for(slots.enter("c"), 1)  # nothing leaked


async def test_what_may_wait_is_still_bounded_per_key_and_in_all() -> None:
    slots = _slots(per_tenant=1, total=1, max_waiting=1, max_waiting_total=2)
    await slots.enter("a")
    waiting = [asyncio.create_task(slots.enter("a")), asyncio.create_task(slots.enter("b"))]
    await _settle()
    with pytest.raises(ReadRefusedError, match=r"\(1 more waiting\)"):
        await slots.enter("a")
    with pytest.raises(ReadRefusedError, match=r"\(2 more of every tenant waiting\)"):
        await slots.enter("c")
    for key_id in ("a", "a"):
        await slots.leave(key_id)
        await _settle()
    await asyncio.wait_for(asyncio.gather(*waiting), 1)


def test_the_per_key_read_caps_of_before_still_set_the_per_tenant_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Renamed when the caps moved from keys to tenants: an operator's old variable must not
    # be dropped in silence at the upgrade.
    monkeypatch.setenv("CA4_READ_MAX_IN_FLIGHT_PER_KEY", "9")
    monkeypatch.setenv("CA4_READ_MAX_WAITING_PER_KEY", "17")
    settings = Settings()
    assert (settings.read_max_in_flight_per_tenant, settings.read_max_waiting_per_tenant) == (9, 17)

    monkeypatch.setenv("CA4_READ_MAX_IN_FLIGHT_PER_TENANT", "3")
    assert Settings().read_max_in_flight_per_tenant == 3


def test_the_per_tenant_read_caps_take_no_variable_without_the_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("READ_MAX_IN_FLIGHT_PER_TENANT", "9")
    assert Settings().read_max_in_flight_per_tenant == 4
    assert Settings(read_max_in_flight_per_tenant=2).read_max_in_flight_per_tenant == 2
