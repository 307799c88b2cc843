"""The tenancy guard's owner lookup in the event store: bounded reads whatever a session's size,
and a lookup that times out split, never sent again whole."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import pytest
from ca4_worker.application.ports import TimedOutError
from ca4_worker.application.tenancy import OWNER_LOOKUP_CHUNK, TenantGuard
from ca4_worker.persistence.events import OWNER_DOCUMENTS_PER_SESSION, owners_in_bounded_reads
from ca4_worker.persistence.memory import InMemoryEventStore, InMemoryProjections

from tests.unit.worker.factories import TENANT_A, TENANT_B, positioned


class CrowdedIndex:
    """The ``events`` collection as an owner read sees it: ``$in`` on the session index with a
    limit, answered heaviest session first (the worst order a server may pick)."""

    def __init__(self, stored: dict[str, tuple[str, int]]) -> None:
        self.stored = stored
        """``{session_id: (owner, stored events)}``."""
        self.reads: list[list[str]] = []
        self.found: list[set[str]] = []
        """The sessions each read found."""

    async def read(self, group: list[str]) -> tuple[dict[str, str], bool]:
        self.reads.append(group)
        limit = OWNER_DOCUMENTS_PER_SESSION * len(group)
        matching = sorted(
            (session_id for session_id in group if session_id in self.stored),
            key=lambda session_id: -self.stored[session_id][1],
        )
        owners: dict[str, str] = {}
        returned = 0
        for session_id in matching:
            if returned == limit:
                break
            owners[session_id] = self.stored[session_id][0]
            returned += min(self.stored[session_id][1], limit - returned)
        self.found.append(set(owners))
        return owners, returned < limit or len(owners) == len(group)


def sessions(count: int, prefix: str = "s") -> list[str]:
    return [f"{prefix}-{n:05d}" for n in range(count)]


@pytest.mark.parametrize("events_in_big_session", [10, 10_000, 10_000_000])
async def test_one_big_session_costs_the_same_few_reads_whatever_its_size(
    events_in_big_session: int,
) -> None:
    wanted = sessions(2500)
    stored = dict.fromkeys(wanted[::25], (TENANT_B, 3))  # 100 small ones
    stored["s-01234"] = (TENANT_A, events_in_big_session)
    index = CrowdedIndex(stored)

    owners = await owners_in_bounded_reads(wanted, index.read)

    assert owners == {session_id: owner for session_id, (owner, _) in stored.items()}
    assert len(index.reads) <= 9  # the first read, cut short, then 8 pieces answered whole
    assert all(index.reads.count(group) == 1 for group in index.reads)


async def test_reads_never_outnumber_sessions_even_when_every_one_is_big() -> None:
    wanted = sessions(500)
    stored = {session_id: (TENANT_A, 1000 + n) for n, session_id in enumerate(wanted)}
    index = CrowdedIndex(stored)

    owners = await owners_in_bounded_reads([*wanted, *sessions(100, "new")], index.read)

    assert owners == dict.fromkeys(wanted, TENANT_A)
    assert len(index.reads) <= len(wanted) + 100
    for n, group in enumerate(index.reads):  # a session once found is never asked for again
        assert set(group).isdisjoint(set().union(*index.found[:n]))


async def test_no_sessions_no_reads() -> None:
    index = CrowdedIndex({})

    assert await owners_in_bounded_reads([], index.read) == {}
    assert index.reads == []


class SlowForMany(InMemoryEventStore):
    """An event store whose owner lookup times out when asked about more than ``fits`` sessions
    at once: slow because of its input, not because the database is down."""

    def __init__(self, fits: int) -> None:
        super().__init__()
        self.fits = fits
        self.calls: list[frozenset[str]] = []

    async def session_owners(self, session_ids: Collection[str]) -> dict[str, str]:
        self.calls.append(frozenset(session_ids))
        if len(session_ids) > self.fits:
            raise TimedOutError("database call timed out")
        return await super().session_owners(session_ids)


async def test_a_lookup_slow_because_of_its_sessions_is_split_not_retried_whole() -> None:
    store = SlowForMany(fits=100)
    events = [positioned(0, n, session_id=f"s-{n:04d}", tenant=TENANT_A) for n in range(1200)]
    await store.append(events[::10])  # 120 sessions stored already, all of tenant A
    intruders = [
        positioned(1, n, session_id=f"s-{n:04d}", tenant=TENANT_B) for n in range(0, 1200, 5)
    ]
    guard = TenantGuard(InMemoryProjections(), store, max_backoff_s=0.001)

    async with asyncio.timeout(5):  # the old guard resent the same 1,200 sessions forever
        own, foreign = await guard.split([*events, *intruders], {})

    assert len(own) == 1200
    # Stored sessions' intruders are foreign; the rest are later than the first event by
    # partition order, so the tenant of the first (A) owns those sessions too.
    assert {item.event.tenant for item in foreign} == {TENANT_B}
    assert len(foreign) == len(intruders)
    sizes = [len(call) for call in store.calls]
    assert max(sizes) == OWNER_LOOKUP_CHUNK  # chunked, never asked about all at once
    assert len(set(store.calls)) == len(store.calls)  # no call sent again: split instead
    answered = [call for call in store.calls if len(call) <= store.fits]
    assert set().union(*answered) == {item.event.session_id for item in events}


async def test_an_unavailable_store_is_waited_out_with_the_same_sessions() -> None:
    store = InMemoryEventStore()
    await store.append([positioned(0, 0, session_id="old", tenant=TENANT_B)])
    store.outage.failures_left = 3
    asked: list[set[str]] = []
    lookup = store.session_owners

    async def recorded(session_ids: Collection[str]) -> dict[str, str]:
        asked.append(set(session_ids))
        return await lookup(session_ids)

    store.session_owners = recorded  # type: ignore[method-assign]
    guard = TenantGuard(InMemoryProjections(), store, max_backoff_s=0.001)

    own, foreign = await guard.split(
        [
            positioned(0, 1, session_id="old", tenant=TENANT_A),
            positioned(0, 2, session_id="new", tenant=TENANT_A),
        ],
        {},
    )

    assert asked == [{"new", "old"}] * 4  # three failures, then the answer: nothing split
    assert [item.event.session_id for item in own] == ["new"]
    assert [item.event.session_id for item in foreign] == ["old"]
