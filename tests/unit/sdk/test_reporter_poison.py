"""One report the API fails on (a 500 for every batch that holds it) must not hold back the
reports spooled after it: its batches are sent in halves until it is alone, and one that keeps
failing alone for long is moved out of the queue. An API that is down isolates nothing."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import pytest
from ca4_sdk import Reporter
from ca4_sdk import reporter as reporter_module
from ca4_sdk.transport import SendOutcome, Transport

from tests.unit.sdk.reporter_support import make_reporter
from tests.unit.sdk.stub_api import StubState, stub_api


def _turn(reporter: Reporter) -> None:
    """One turn of the reporter thread: a report collected, then the spool sent."""
    reporter._deliver([reporter.collect()])
    reporter._next_send_at = 0.0  # no backoff between the turns of a test


def _spooled_ids(reporter: Reporter) -> list[str]:
    return [str(item.report["event_id"]) for item in reporter.spool.peek(1000)]


def _posts(state: StubState) -> int:
    with state.lock:
        return len(state.requests)


def test_a_report_that_fails_its_batches_no_longer_holds_back_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every batch holding it answered 500, and the spool sends its oldest reports first:
    nothing was delivered again, ever."""
    with stub_api() as (url, state):
        reporter = make_reporter(url, tmp_path, max_batch=100)
        reporter.spool.put([reporter.collect() for _ in range(10)])
        poison = _spooled_ids(reporter)[3]
        state.failing_event_ids.add(poison)
        for _ in range(reporter_module.ISOLATE_AFTER):
            _turn(reporter)
        assert state.accepted_ids() == []
        posts = _posts(state)
        _turn(reporter)  # in halves now
        assert _spooled_ids(reporter) == [poison]
        spooled = 10 + reporter_module.ISOLATE_AFTER + 1
        assert len(state.accepted_ids()) == spooled - 1 == len(set(state.accepted_ids()))
        assert _posts(state) - posts <= 8  # halves down to the report: not one POST a report
        for _ in range(reporter_module.DEAD_AFTER_TRIES):
            _turn(reporter)  # it fails alone, the new report gets through
        assert _spooled_ids(reporter) == [poison]  # not for long enough yet
        monkeypatch.setattr(reporter_module, "DEAD_AFTER_S", 0.0)
        caplog.clear()
        _turn(reporter)
    assert _spooled_ids(reporter) == []
    dead = tmp_path / "spool" / "dead"
    (moved,) = dead.iterdir()
    assert moved.name.endswith(f"-{poison}.json")
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1
    times = reporter_module.DEAD_AFTER_TRIES + 2  # the first isolation, the tries, this one
    assert said[0].startswith(f"ca4: report {poison} failed alone {times} times over 0 min")
    assert said[0].endswith(f"not sent again: moved to {moved}")
    assert reporter.stats.rejected == 1
    assert len(state.accepted_ids()) == spooled - 1 + reporter_module.DEAD_AFTER_TRIES + 1


def test_an_api_that_is_down_isolates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every batch fails alike: each try is two POSTs at most, and no report is moved out."""
    monkeypatch.setattr(reporter_module, "DEAD_AFTER_S", 0.0)
    with stub_api() as (url, state):
        state.status = 500
        reporter = make_reporter(url, tmp_path)
        for turn in range(reporter_module.DEAD_AFTER_TRIES * 2):
            posts = _posts(state)
            _turn(reporter)
            assert _posts(state) - posts <= 2
            assert len(reporter.spool) == turn + 1
    assert not (tmp_path / "spool" / "dead").exists()
    assert reporter.stats.rejected == 0


def test_a_report_that_cannot_be_moved_out_stays_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second read found the report deleted, uncounted, under a warning that said it was
    not moved, when ``dead/`` could not be made."""
    monkeypatch.setattr(reporter_module, "DEAD_AFTER_S", 0.0)  # stands for the hour
    with stub_api() as (url, state):
        reporter = make_reporter(url, tmp_path, max_batch=100)
        reporter.spool.put([reporter.collect() for _ in range(4)])
        poison = _spooled_ids(reporter)[1]
        state.failing_event_ids.add(poison)
        (tmp_path / "spool" / "dead").write_text("a file, not a folder")
        good = [event_id for event_id in _spooled_ids(reporter) if event_id != poison]
        for _ in range(reporter_module.ISOLATE_AFTER + reporter_module.DEAD_AFTER_TRIES + 1):
            _turn(reporter)
        accepted = state.accepted_ids()
    assert poison in _spooled_ids(reporter)
    assert set(good) <= set(accepted)
    assert reporter.stats.rejected == 0


@pytest.mark.parametrize("shed", [0.6, 0.85, 0.95])
def test_an_api_shedding_load_isolates_nothing(
    shed: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 with ``Retry-After`` (the processor waiting for Kafka) says when to come back,
    whatever the reports: with some POSTs getting through, it was read as a bad report's, and
    every failing half was halved again, down to single reports (94 POSTs in one call)."""
    draws = random.Random(1)
    posts = 0

    def send_into(
        self: Transport, reports: list[dict[str, Any]], outcome: SendOutcome, deadline: object
    ) -> None:
        nonlocal posts
        posts += 1
        if draws.random() < shed:
            outcome.retry.extend(reports)
            outcome.status, outcome.retry_after_s = 503, 1.0
            outcome.error = "HTTP 503: waiting for Kafka"
        else:
            outcome.accepted.extend(str(report["event_id"]) for report in reports)

    monkeypatch.setattr(Transport, "_send_into", send_into)
    transport = Transport("http://127.0.0.1:9", "k")
    reports = [{"event_id": f"e-{index}"} for index in range(100)]
    most = 0
    for _ in range(50):
        before = posts
        outcome = transport.send_isolating(reports)
        most = max(most, posts - before)
        assert outcome.isolated == []
    assert most <= 2
