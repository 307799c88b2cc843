"""``print(reporter)`` says what the reporter is doing (never its key), and the stats tell a
recovered reporter from a failing one."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.unit.sdk.reporter_support import FakeAtexit, make_reporter, wait_for
from tests.unit.sdk.stub_api import stub_api


def test_repr_shows_the_state_and_not_the_key(tmp_path: Path, fake_atexit: FakeAtexit) -> None:
    with stub_api() as (url, state):
        reporter = make_reporter(url, tmp_path, api_key="secret-key-123", interval=15)
        assert repr(reporter) == (
            f"Reporter(url='{url}', session_id='unit-session', running=False, interval=15s, "
            "delivered=0, spooled=0, last_error=None)"
        )
        state.status = 503
        reporter.report_once()
        assert repr(reporter) == (
            f"Reporter(url='{url}', session_id='unit-session', running=False, interval=15s, "
            "delivered=0, spooled=1, last_error='HTTP 503: stub says no')"
        )
        state.status = 202
        with reporter:
            wait_for(lambda: len(reporter.spool) == 0 and reporter.stats.delivered == 2)
            assert repr(reporter).startswith(
                f"Reporter(url='{url}', session_id='unit-session', "
                "running=True, interval=15s, delivered=2, spooled=0"
            )
        assert "secret-key-123" not in repr(reporter)
        assert str(reporter) == repr(reporter)


def test_sub_second_interval_is_shown_as_given(tmp_path: Path) -> None:
    reporter = make_reporter("https://edge.example", tmp_path, interval=0.5)
    assert "interval=0.5s" in repr(reporter)


def test_recovery_clears_last_error_sets_last_success_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fake_atexit: FakeAtexit
) -> None:
    caplog.set_level(logging.INFO, logger="ca4_sdk")
    with stub_api() as (url, state):
        state.first_statuses = [503, 503]
        reporter = make_reporter(url, tmp_path, interval=60, backoff_base_s=0.05)
        assert reporter.stats.last_success_at is None
        before = datetime.now(UTC)
        with reporter:
            # The thread clears the error last, after the delivery and the spool's removal:
            # wait for all three (until then a poll can see delivered=1 and the old error).
            wait_for(
                lambda: (
                    reporter.stats.delivered == 1
                    and len(reporter.spool) == 0
                    and reporter.stats.last_error is None
                )
            )
            last_success = reporter.stats.last_success_at
            assert last_success is not None
            assert before <= last_success <= datetime.now(UTC)
            assert reporter.report_once().delivered  # a later success: no second line
    recovered = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in recovered] == [
        (logging.INFO, "ca4 API reachable again: delivered 1 spooled report")
    ]
    assert reporter.stats.send_failures == 2
    assert any(
        "ca4 API unreachable (HTTP 503: stub says no)" in r.getMessage() for r in caplog.records
    )


def test_last_error_stays_while_reports_are_still_spooled(
    tmp_path: Path, fake_atexit: FakeAtexit
) -> None:
    """A single report_once success does not mean the spooled backlog got through."""
    with stub_api() as (url, state):
        reporter = make_reporter(url, tmp_path)
        state.status = 503
        reporter.report_once()
        state.status = 202
        assert reporter.report_once().delivered
        assert len(reporter.spool) == 1
        assert reporter.stats.last_error == "HTTP 503: stub says no"
        assert reporter.stats.last_success_at is not None
        assert reporter.flush()
        assert reporter.stats.last_error is None


def test_reports_a_full_spool_dropped_are_counted_shown_and_said_once_at_recovery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full spool said so at every collection, and nothing counted what it dropped."""
    caplog.set_level(logging.INFO, logger="ca4_sdk")
    with stub_api() as (url, state):
        reporter = make_reporter(url, tmp_path, spool_max_reports=2)
        state.status = 503
        for _ in range(4):
            reporter.report_once()
        assert reporter.stats.dropped == 2
        assert ", spooled=2, dropped=2, last_error=" in repr(reporter)
        state.status = 202
        assert reporter.flush()
    said = [r.getMessage() for r in caplog.records]
    assert len([message for message in said if "spool full" in message]) == 1
    recovered = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in recovered] == [
        (
            logging.WARNING,
            "ca4 API reachable again: delivered 2 spooled reports; 2 dropped while the spool "
            "was full",
        )
    ]
