"""Running the notebook cell ``reporter = Reporter(...); reporter.start()`` again stops the
reporter the earlier run started (it has no handle left), and ``ca4_sdk.stop_all()`` stops all."""

from __future__ import annotations

import logging
from pathlib import Path

import ca4_sdk
import pytest

from tests.unit.sdk.reporter_support import FakeAtexit, make_reporter, wait_for
from tests.unit.sdk.stub_api import stub_api

RERUN_LINE = (
    "ca4: stopped the reporter started earlier for session unit-session in this process "
    "(cell run again)"
)


def _rerun_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "started earlier" in r.getMessage()]


def test_starting_the_cell_again_stops_the_earlier_reporter_of_the_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fake_atexit: FakeAtexit
) -> None:
    caplog.set_level(logging.INFO, logger="ca4_sdk")
    with stub_api() as (url, state):
        first = make_reporter(url, tmp_path, interval=60).start()
        wait_for(lambda: len(state.accepted_ids()) == 1)
        second = make_reporter(url, tmp_path, interval=60).start()  # the cell, run again
        try:
            assert not first.running
            assert second.running
            wait_for(lambda: len(state.accepted_ids()) == 2)
            assert _rerun_lines(caplog) == [RERUN_LINE]
            assert fake_atexit.due() == [second]
        finally:
            second.stop()
            first.stop()


def test_starting_the_same_reporter_twice_stops_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fake_atexit: FakeAtexit
) -> None:
    caplog.set_level(logging.INFO, logger="ca4_sdk")
    with stub_api() as (url, _state):
        reporter = make_reporter(url, tmp_path, interval=60).start()
        try:
            assert reporter.start() is reporter
            assert reporter.running
            assert _rerun_lines(caplog) == []
        finally:
            reporter.stop()


def test_reporters_of_other_sessions_keep_running(tmp_path: Path, fake_atexit: FakeAtexit) -> None:
    with stub_api() as (url, _state):
        first = make_reporter(url, tmp_path / "a", session_id="session-a", interval=60).start()
        second = make_reporter(url, tmp_path / "b", session_id="session-b", interval=60).start()
        try:
            assert first.running
            assert second.running
        finally:
            first.stop()
            second.stop()


def test_stop_all_stops_every_running_reporter(tmp_path: Path, fake_atexit: FakeAtexit) -> None:
    assert "stop_all" in ca4_sdk.__all__
    with stub_api() as (url, state):
        first = make_reporter(url, tmp_path / "a", session_id="session-a", interval=60).start()
        second = make_reporter(url, tmp_path / "b", session_id="session-b", interval=60).start()
        wait_for(lambda: len(state.accepted_ids()) == 2)
        try:
            assert ca4_sdk.stop_all() == 2
            assert not first.running
            assert not second.running
            assert fake_atexit.due() == []
            assert ca4_sdk.stop_all() == 0
        finally:
            first.stop()
            second.stop()


def test_a_stopped_reporter_can_start_again_after_stop_all(
    tmp_path: Path, fake_atexit: FakeAtexit
) -> None:
    with stub_api() as (url, state):
        reporter = make_reporter(url, tmp_path, interval=60).start()
        wait_for(lambda: len(state.accepted_ids()) == 1)
        ca4_sdk.stop_all()
        reporter.start()
        try:
            assert reporter.running
            wait_for(lambda: len(state.accepted_ids()) == 2)
        finally:
            reporter.stop()


def test_a_reporter_with_other_labels_says_it_stopped_the_earlier_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fake_atexit: FakeAtexit
) -> None:
    """The README's ``with Reporter(labels=...)`` around a phase of work, in a notebook whose
    first cells started a reporter, stopped that one with an INFO line the notebook did not
    show, saying "cell run again": it is a warning now, and says how to get it back."""
    caplog.set_level(logging.INFO, logger="ca4_sdk")
    with stub_api() as (url, state):
        notebook = make_reporter(url, tmp_path, interval=60, labels={"a": "1"}).start()
        wait_for(lambda: len(state.accepted_ids()) == 1)
        with make_reporter(url, tmp_path, interval=60, labels={"b": "2"}):
            assert not notebook.running
        notebook.start()  # what the warning says
        try:
            assert notebook.running
            stopped = [
                r.getMessage()
                for r in caplog.records
                if r.levelno == logging.WARNING and "stopped the reporter" in r.getMessage()
            ]
            assert stopped == [
                "ca4: stopped the reporter started earlier for session unit-session (labels "
                "{'a': '1'}): one reporter reports a session at a time; start it again (its "
                "start()) once this one (labels {'b': '2'}) stops"
            ]
            assert RERUN_LINE not in _rerun_lines(caplog)
        finally:
            notebook.stop()


def test_the_cell_run_again_with_a_new_url_replaces_the_earlier_reporter_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fake_atexit: FakeAtexit
) -> None:
    """A new ngrok URL, or another interval, is still the same cell run again."""
    caplog.set_level(logging.INFO, logger="ca4_sdk")
    with stub_api() as (url, _state), stub_api() as (new_url, _new_state):
        first = make_reporter(url, tmp_path, interval=60).start()
        second = make_reporter(new_url, tmp_path, interval=30).start()
        try:
            assert not first.running
            assert _rerun_lines(caplog) == [RERUN_LINE]
            assert not [
                r
                for r in caplog.records
                if r.levelno == logging.WARNING and "stopped" in r.getMessage()
            ]
        finally:
            second.stop()
