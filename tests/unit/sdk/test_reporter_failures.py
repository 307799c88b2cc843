"""The reporter when collecting or stopping goes wrong: a collector failing every interval, a
collection that hangs, a long drain under stop(), and several reporters at interpreter exit."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ca4_sdk import reporter as reporter_module
from ca4_sdk.collectors.base import CollectorResult

from tests.unit.sdk.reporter_support import FakeAtexit, make_reporter, silent_edge, wait_for
from tests.unit.sdk.stub_api import stub_api


class FailingCollector:
    """Raises ``error`` on every collection while it is set; reads no GPU otherwise."""

    name = "nvml"

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.calls = 0

    def collect(self) -> CollectorResult:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return CollectorResult(collector="none")


class HangingCollector:
    """Its second collection hangs until ``release`` is set (an NVML call on a GPU that fell
    off the bus)."""

    name = "nvml"

    def __init__(self) -> None:
        self.calls = 0
        self.hanging = threading.Event()
        self.release = threading.Event()

    def collect(self) -> CollectorResult:
        self.calls += 1
        if self.calls >= 2:
            self.hanging.set()
            self.release.wait(30)
        return CollectorResult(collector="none")


def test_a_collection_failing_every_interval_is_logged_once_per_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fake_atexit: FakeAtexit
) -> None:
    """A GPU gone for good logged a whole traceback at every interval."""
    collector = FailingCollector(RuntimeError("GPU is lost"))
    caplog.set_level(logging.INFO, logger="ca4_sdk")
    with stub_api() as (url, _state):
        reporter = make_reporter(url, tmp_path, interval=0.02, collector=collector).start()
        try:
            wait_for(lambda: collector.calls >= 5)
            collector.error = RuntimeError("Driver/library version mismatch")
            calls = collector.calls
            wait_for(lambda: collector.calls >= calls + 5)
            collector.error = None
            wait_for(lambda: reporter.stats.collected >= 1)
        finally:
            reporter.stop()
    failed = [r for r in caplog.records if "collection failed" in r.getMessage()]
    assert [r.getMessage() for r in failed] == [
        "ca4 collection failed (said again only when the error changes): RuntimeError: GPU is lost",
        "ca4 collection failed (said again only when the error changes): RuntimeError: "
        "Driver/library version mismatch",
    ]
    assert all(r.exc_info for r in failed)  # the traceback, once each
    assert "ca4 collection works again" in [r.getMessage() for r in caplog.records]


def test_stop_ends_a_drain_in_progress(
    tmp_path: Path, fake_atexit: FakeAtexit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spool left by a long outage was drained on under stop(timeout): POSTs went on after
    stop returned, and stop blamed the edge, which answered every one of them."""
    with stub_api() as (url, state):
        reporter = make_reporter(url, tmp_path, interval=60, max_batch=1)
        reporter.spool.put([reporter.collect() for _ in range(100)])
        # When each POST began, seen by the reporter: the stub records a POST only once its own
        # thread has read it, which a loaded machine can delay past stop()'s return for the
        # final flush's last POST, given up at the deadline (sent, and not yet read).
        posts: list[float] = []
        post = reporter._transport._post

        def counted_post(*args: Any, **kwargs: Any) -> Any:
            posts.append(time.monotonic())
            return post(*args, **kwargs)

        monkeypatch.setattr(reporter._transport, "_post", counted_post)
        state.delay_s = 0.05
        reporter.start()
        wait_for(lambda: len(state.requests) >= 3)
        started = time.monotonic()
        reporter.stop(timeout=1.0)
        returned = time.monotonic()
        assert returned - started < 1.5
        assert not reporter.running
        time.sleep(0.3)
        assert max(posts) < returned  # no POST began after stop() returned
    assert 0 < len(reporter.spool) < 100  # the rest is sent by the next run
    assert fake_atexit.due() == []


def test_a_hung_collection_is_named_and_report_once_gives_up(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    fake_atexit: FakeAtexit,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """stop() blamed the edge for a collection that hangs, and report_once() waited for it
    with no end."""
    monkeypatch.setattr(reporter_module, "COLLECT_WAIT_S", 0.3)
    collector = HangingCollector()
    with stub_api() as (url, _state):
        reporter = make_reporter(url, tmp_path, interval=0.05, collector=collector).start()
        try:
            assert collector.hanging.wait(10)
            reporter.stop(timeout=0.5)
            assert reporter.running
            said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            assert any(
                m.startswith("ca4: reporter still collecting (a GPU query has not returned)")
                for m in said
            )
            outcome: list[BaseException | object] = []

            def once() -> None:
                try:
                    outcome.append(reporter.report_once())
                except BaseException as error:
                    outcome.append(error)

            caller = threading.Thread(target=once, daemon=True)
            caller.start()
            caller.join(5)
            assert not caller.is_alive(), "report_once() waited for the hung collection"
            (error,) = outcome
            assert isinstance(error, TimeoutError)
            assert "another collection has not returned for 0.3s" in str(error)
        finally:
            collector.release.set()
            wait_for(lambda: not reporter.running)


def test_interpreter_exit_waits_once_for_every_reporter(
    tmp_path: Path, fake_atexit: FakeAtexit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each reporter's exit flush waited its own timeout in turn: four reporters of an edge
    that never answers held the interpreter's exit four times as long."""
    monkeypatch.setattr(reporter_module, "AT_EXIT_TIMEOUT_S", 1.0)
    with silent_edge() as edge:
        reporters = [
            make_reporter(edge.url, tmp_path / str(n), session_id=f"session-{n}", interval=60)
            for n in range(3)
        ]
        for reporter in reporters:
            reporter.start()
        wait_for(lambda: edge.accepted >= 3)  # every thread waits for the edge
        started = time.monotonic()
        for hook in list(fake_atexit.registered):  # what the interpreter runs at exit
            hook()
        took = time.monotonic() - started
    assert took < 1.8, f"the exit flush took {took:.1f} s"
    wait_for(lambda: not any(reporter.running for reporter in reporters))  # the edge is gone
    assert all(len(reporter.spool) == 1 for reporter in reporters)
    for reporter in reporters:
        reporter.stop()  # out of this process's reporters, for the tests that follow
