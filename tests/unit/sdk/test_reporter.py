"""The Reporter against the stub API: background delivery, spooling, retries, context manager."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ca4_sdk import Reporter
from ca4_sdk.collectors.base import CollectorResult

from tests.unit.sdk.stub_api import stub_api


class StaticCollector:
    """A CPU-only collector: the reporter logic doesn't depend on GPUs."""

    name = "none"

    def collect(self) -> CollectorResult:
        return CollectorResult(collector="none")


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _reporter(url: str, tmp_path: Path, **kwargs: object) -> Reporter:
    return Reporter(
        url=url,
        api_key="k",
        session_id="unit-session",
        collector=StaticCollector(),
        spool_dir=tmp_path / "spool",
        **kwargs,  # type: ignore[arg-type]
    )


def test_background_reports_arrive_and_self_check_is_set(tmp_path: Path) -> None:
    with stub_api() as (url, state), _reporter(url, tmp_path, interval=0.1) as reporter:
        _wait_for(lambda: len(state.accepted_ids()) >= 3)
        assert reporter.self_check == {
            "collector": "none",
            "unavailable_fields": [],
            "errors": [],
            "gpus": 0,
        }
    assert not reporter.running
    assert reporter.stats.delivered >= 3


def test_report_once_sends_synchronously(tmp_path: Path) -> None:
    with stub_api() as (url, state):
        result = _reporter(url, tmp_path).report_once()
    assert result.delivered
    assert state.accepted_ids() == [result.event_id]


def test_report_too_large_for_kafka_is_counted_and_never_retried(tmp_path: Path) -> None:
    with stub_api() as (url, state):
        state.status = 413
        reporter = _reporter(url, tmp_path)
        result = reporter.report_once()
        flushed = reporter.flush()
    assert not result.delivered
    assert result.error is not None
    assert "413" in result.error
    assert reporter.stats.rejected == 1
    assert reporter.stats.send_failures == 0
    assert flushed
    assert len(reporter.spool) == 0
    assert len(state.requests) == 1


def test_outage_spools_then_delivers_every_report_once_with_same_ids(tmp_path: Path) -> None:
    with stub_api() as (url, state):
        state.status = 503
        reporter = _reporter(url, tmp_path, interval=0.05, backoff_base_s=0.05, backoff_max_s=0.2)
        reporter.start()
        _wait_for(lambda: len(reporter.spool) >= 5)
        attempted = {r["event_id"] for req in state.requests for r in req["body"]["reports"]}
        state.status = 202
        # What the outage spooled gets through; not an empty spool, which the reporter fills
        # again every 50 ms: a delivery that takes about as long (a loaded machine) leaves it
        # empty too briefly for a poll to see.
        _wait_for(lambda: attempted <= set(state.accepted_ids()) and len(state.accepted_ids()) >= 8)
        reporter.stop()
    assert attempted
    assert len(reporter.spool) == 0  # stop's flush sent what was collected since
    accepted = state.accepted_ids()
    assert len(accepted) == len(set(accepted))  # nothing delivered twice
    assert attempted <= set(accepted)  # every retried report kept its event_id
    assert reporter.stats.send_failures >= 1


def test_spool_left_by_an_earlier_run_is_flushed_at_start(tmp_path: Path) -> None:
    with stub_api() as (url, state):
        state.status = 503
        first = _reporter(url, tmp_path)
        first.report_once()
        first.report_once()
        assert len(first.spool) == 2
        state.status = 202
        with _reporter(url, tmp_path, interval=60) as second:
            # The stub counts a report before it answers; the reporter empties its spool after.
            _wait_for(lambda: len(state.accepted_ids()) == 3 and len(second.spool) == 0)


def test_stop_flushes_what_is_pending(tmp_path: Path) -> None:
    with stub_api() as (url, state):
        reporter = _reporter(url, tmp_path, interval=60)
        state.status = 503
        reporter.start()
        _wait_for(lambda: len(reporter.spool) == 1)
        state.status = 202
        reporter.stop()
        assert state.accepted_ids()
        assert len(reporter.spool) == 0


SLOW_API_S = 1.0
"""How long the slow API takes to answer each POST."""


def test_main_thread_is_never_blocked_by_a_slow_api(tmp_path: Path) -> None:
    """Notebook code keeps running while every POST takes a second and reports pile up."""
    with stub_api() as (url, state):
        state.delay_s = SLOW_API_S
        reporter = _reporter(url, tmp_path, interval=0.05)
        reporter.start()
        max_gap, last = 0.0, time.perf_counter()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            time.sleep(0.002)
            now = time.perf_counter()
            max_gap, last = max(max_gap, now - last - 0.002), now
        start_stop = time.perf_counter()
        state.delay_s = 0.0
        reporter.stop()
        stop_s = time.perf_counter() - start_stop
        print(f"max main-thread gap {max_gap * 1000:.1f} ms; stop() took {stop_s:.2f} s")
    assert len(state.requests) >= 2
    # Waiting on a POST would stall it for the API's whole delay; a loaded machine's scheduling
    # alone has stalled it past 50 ms (a fixed bound that once failed the suite).
    assert max_gap < SLOW_API_S / 4, f"main thread stalled {max_gap * 1000:.1f} ms"


def test_a_delivery_that_keeps_failing_unexpectedly_is_backed_off(tmp_path: Path) -> None:
    # Any fault the thread did not expect (a spool it cannot write, an answer it cannot read)
    # was tried again at once, forever: hundreds of tries a second, a traceback each.
    tries = 0

    def broken_put(reports: object) -> None:
        nonlocal tries
        tries += 1
        raise OSError("No space left on device")

    with stub_api() as (url, state):
        reporter = _reporter(url, tmp_path, interval=3600)
        reporter.spool.put = broken_put  # type: ignore[method-assign]
        reporter.start()
        time.sleep(1.5)
        reporter.stop(timeout=1)
    assert 1 <= tries <= 6  # a try, its backoff, the next, and the final flush at stop
    assert state.requests == []
