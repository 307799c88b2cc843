"""Pause Python's cyclic garbage collector while a store batch is in flight.

A store batch builds about a million small objects (records, events, documents) that all live
until the batch ends, so the generational collector's premise fails: every gen-0 and gen-1 pass
scans survivors only to promote them, and full passes rescan the whole batch. Measured on 20,000
events, that more than doubled the CPU per event (decode 45 -> 105 us, document 15 -> 46 us).
Reference counting still frees everything as soon as the batch is dropped; the collector runs
again, for the rare cycle, once the batch is done.

What outlives a batch (its records until they are committed, the handoff's decisions, owner
caches) would then be scanned by the next young passes only to be promoted, so everything is
frozen when the last pause ends, and every ``COLLECT_EVERY_S`` unfrozen into the oldest
generation before a young pass. Freezing resets the collector's count towards a full pass, and
unfrozen objects do not count as new in the oldest generation, so the collector would never
start a full pass by itself again, and cycles made during pauses would pile up for good. A full
pass runs here instead, by CPython's own rule for the oldest generation (once the tracked
objects grew by a quarter since the last one), checked every ``FULL_PASS_CHECK_S``: a full pass
scans the whole heap (about 100 ms per 1.5 million objects), which every 10 s showed in the
latency.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager

COLLECT_EVERY_S = 10.0
"""What pauses froze is unfrozen, and the young generations collected, at least this often, even
when the two stages' pauses overlap without a break (a worker that is behind is never idle)."""
FULL_PASS_CHECK_S = 300.0
"""How often the tracked objects are counted (a walk of the heap, about 15 ms per 1.5 million)
to decide on a full pass."""
FULL_PASS_GROWTH = 0.25
"""A full pass runs once the tracked objects grew by this share since the last one left them,
or since the first count (CPython's threshold for its own full passes)."""


class _OpenPauses:
    """How many ``gc_paused`` blocks are open, across tasks; when what they froze was last
    unfrozen; when the tracked objects were last counted, and how many the last full pass (or
    the first count) left."""

    count = 0
    collected_at = time.monotonic()
    checked_at = time.monotonic()
    left_by_full_pass = 0


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable automatic collection inside the block (nestable, also across tasks)."""
    if _OpenPauses.count == 0 and not gc.isenabled():  # disabled by someone else: leave it
        yield
        return
    _OpenPauses.count += 1
    gc.disable()
    try:
        yield
    finally:
        _OpenPauses.count -= 1
        if _OpenPauses.count == 0:
            # Also here, not only after a batch that succeeded: a handler that keeps failing
            # (an outage) would otherwise never unfreeze.
            if not collect_garbage_now_and_then():
                gc.freeze()
            gc.enable()


def collect_garbage_now_and_then() -> bool:
    """Unfreeze and collect the young generations when ``COLLECT_EVERY_S`` passed since the last
    time, so cycles (tracebacks, futures) are freed even if some pause is always open; whether
    it did."""
    now = time.monotonic()
    if now - _OpenPauses.collected_at < COLLECT_EVERY_S:
        return False
    _OpenPauses.collected_at = now
    gc.unfreeze()
    if now - _OpenPauses.checked_at < FULL_PASS_CHECK_S:
        gc.collect(1)
        return True
    _OpenPauses.checked_at = now
    tracked = _tracked_objects()
    if not _OpenPauses.left_by_full_pass:
        _OpenPauses.left_by_full_pass = tracked
    elif tracked > (1 + FULL_PASS_GROWTH) * _OpenPauses.left_by_full_pass:
        gc.collect()
        _OpenPauses.left_by_full_pass = _tracked_objects()
    return True


def _tracked_objects() -> int:
    """Every object the collector tracks (which leaves them all in the oldest generation:
    freezing and unfreezing only move lists, counting walks one)."""
    gc.freeze()
    tracked = gc.get_freeze_count()
    gc.unfreeze()
    return tracked
