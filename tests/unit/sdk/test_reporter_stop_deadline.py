"""Stopping obeys its deadline when the edge accepts the connection and never answers: the
notebook is not frozen for the read timeout, the reports stay spooled, and nothing is closed or
unregistered under a reporter thread that is still running."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from ca4_sdk import reporter as reporter_module

from tests.unit.sdk.reporter_support import FakeAtexit, make_reporter, silent_edge, wait_for


def test_leaving_the_with_block_returns_within_the_stop_timeout_mid_post(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    fake_atexit: FakeAtexit,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The thread is inside a POST the edge never answers (read timeout 10 s) when the block
    ends: ``__exit__`` returns after the stop timeout, not the read timeout."""
    monkeypatch.setattr(reporter_module, "STOP_TIMEOUT_S", 1.0, raising=False)
    with silent_edge() as edge:
        reporter = make_reporter(edge.url, tmp_path, interval=60)
        transport_closed: list[bool] = []
        real_close = reporter._transport.close
        monkeypatch.setattr(
            reporter._transport, "close", lambda: (transport_closed.append(True), real_close())
        )
        started = time.monotonic()
        with reporter:
            wait_for(lambda: edge.accepted >= 1)
            time.sleep(0.1)  # the POST is on its way
            entered_exit = time.monotonic()
        exit_s = time.monotonic() - entered_exit
        assert exit_s < 2.0, f"leaving the block took {exit_s:.1f} s"
        assert reporter.running  # still waiting for the edge, which never answers
        assert transport_closed == []  # not closed under the running thread
        assert fake_atexit.due() == [reporter]  # exit flush still due
        assert len(reporter.spool) == 1  # the report in flight is on disk, not only in memory
        messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert (
            f"ca4: reporter still sending after 1s; 1 report stays spooled in "
            f"{reporter.spool.directory}" in messages
        )
    # The edge goes away: the POST fails, the thread ends and releases what close() left it.
    wait_for(lambda: not reporter.running, timeout=5)
    wait_for(lambda: transport_closed == [True], timeout=5)
    assert len(reporter.spool) == 1  # nothing lost
    assert time.monotonic() - started < 8


def test_the_final_flush_is_cut_short_by_the_stop_deadline(
    tmp_path: Path, fake_atexit: FakeAtexit
) -> None:
    """The thread is idle with a report spooled when stop() is called, and the edge now never
    answers: the last POST gets only what is left of the stop timeout."""
    with silent_edge() as edge:
        edge.silent = False  # connections are closed at once: the first POST fails fast
        reporter = make_reporter(
            edge.url, tmp_path, interval=60, backoff_base_s=1e6, backoff_max_s=1e6
        )
        reporter.start()
        wait_for(lambda: reporter.stats.send_failures == 1)
        time.sleep(0.1)  # the thread is back to waiting (no retry for a long while)
        assert len(reporter.spool) == 1
        edge.silent = True
        started = time.monotonic()
        reporter.stop(timeout=1.0)
        stop_s = time.monotonic() - started
        assert stop_s < 1.5, f"stop(timeout=1.0) took {stop_s:.1f} s"
        assert not reporter.running
        assert edge.accepted >= 2  # the final flush did try
        assert len(reporter.spool) == 1
        assert fake_atexit.due() == []


def test_default_stop_timeout_is_a_few_seconds() -> None:
    assert 1.0 <= reporter_module.STOP_TIMEOUT_S <= 5.0
