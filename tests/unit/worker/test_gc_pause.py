"""The collector is paused for exactly as long as a store batch is in flight."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Iterator

import pytest
from ca4_worker.core import gc_pause
from ca4_worker.core.gc_pause import collect_garbage_now_and_then, gc_paused


@pytest.fixture(autouse=True)
def collector_enabled() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_paused_inside_and_enabled_after_even_on_error() -> None:
    enabled_inside: list[bool] = []

    def failing_batch() -> None:
        with gc_paused():
            enabled_inside.append(gc.isenabled())
            raise RuntimeError("batch failed")

    with pytest.raises(RuntimeError):
        failing_batch()

    assert enabled_inside == [False]
    assert gc.isenabled()


async def test_overlapping_pauses_resume_when_the_last_ends() -> None:
    first_in, second_in, first_may_leave = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def first() -> None:
        with gc_paused():
            first_in.set()
            await first_may_leave.wait()
        assert not gc.isenabled()  # the second is still inside

    async def second() -> None:
        await first_in.wait()
        with gc_paused():
            second_in.set()
            first_may_leave.set()
            await asyncio.sleep(0.01)

    await asyncio.gather(first(), second())

    assert gc.isenabled()


def test_a_collector_disabled_by_someone_else_stays_disabled() -> None:
    gc.disable()

    with gc_paused():
        assert not gc.isenabled()

    assert not gc.isenabled()


class _Node:
    """A garbage-collected object that can be part of a reference cycle."""

    def __init__(self) -> None:
        self.other: _Node | None = None


def test_what_outlives_a_batch_is_frozen_until_it_is_next_collected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gc_pause._OpenPauses, "collected_at", time.monotonic())
    with gc_paused():
        first, second = _Node(), _Node()
        first.other, second.other = second, first
        cycle_alive = weakref.ref(first)
    del first, second

    assert gc.get_freeze_count() > 0
    gc.collect()  # neither an automatic nor an explicit pass looks at frozen objects
    assert cycle_alive() is not None

    collect_garbage_now_and_then()  # the interval has not passed yet
    assert cycle_alive() is not None

    monkeypatch.setattr(gc_pause._OpenPauses, "collected_at", 0.0)
    collect_garbage_now_and_then()
    assert gc.get_freeze_count() == 0
    gc.collect()  # the collector's next full pass
    assert cycle_alive() is None


def test_cycles_made_in_pauses_are_freed_once_the_tracked_objects_grew_by_a_quarter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Freezing resets the collector's own count towards a full pass: without one run here,
    cycles made during pauses would never be freed while the worker is busy."""

    def five_minutes_later() -> None:
        monkeypatch.setattr(gc_pause._OpenPauses, "collected_at", 0.0)
        monkeypatch.setattr(gc_pause._OpenPauses, "checked_at", 0.0, raising=False)
        collect_garbage_now_and_then()

    gc.collect()
    monkeypatch.setattr(gc_pause._OpenPauses, "left_by_full_pass", 0, raising=False)
    five_minutes_later()  # the first count
    gc.freeze()
    left = gc.get_freeze_count()
    gc.unfreeze()
    cycles: weakref.WeakSet[_Node] = weakref.WeakSet()
    kept: list[list[_Node]] = []
    freed_in_round = None
    for round_ in range(1, 6):
        with gc_paused():
            for _ in range(100):
                first, second = _Node(), _Node()
                first.other, second.other = second, first
                cycles.add(first)
            kept.append([_Node() for _ in range(left // 10)])  # a tenth more, kept
        del first, second
        five_minutes_later()
        if not cycles:
            freed_in_round = round_
            break

    assert freed_in_round == 3  # a tenth more each round: past a quarter on the third


def test_a_batch_that_keeps_failing_still_unfreezes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler that raises never reaches the call after its batch (an outage can last)."""
    monkeypatch.setattr(gc_pause._OpenPauses, "collected_at", time.monotonic())

    def failing_batch() -> None:
        with gc_paused():
            raise RuntimeError("database unavailable")

    with pytest.raises(RuntimeError):
        failing_batch()
    assert gc.get_freeze_count() > 0

    monkeypatch.setattr(gc_pause._OpenPauses, "collected_at", 0.0)
    with pytest.raises(RuntimeError):
        failing_batch()
    assert gc.get_freeze_count() == 0
