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
