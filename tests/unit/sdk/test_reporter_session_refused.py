"""A session the API refuses as another tenant's: the reporter switches once to a fresh session
and sends the refused reports again with their event ids; it never loops, and never leaves a
session id its caller chose.

A pre-tenancy session after the upgrade (owned by tenant ``legacy``) and a key moved to another
tenant both look like this to the SDK: every report of the runtime's session is refused
(``session_forbidden``) until the runtime restarts. Against the stub API, whose answers carry
the processor's own error item (unit only: the SDK's integration tests need the dev stack).
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import pytest
from ca4_sdk import Reporter
from ca4_sdk.runtime import stable_session_id
from ca4_sdk.spool import default_spool_dir

from tests.unit.sdk.reporter_support import StaticCollector, wait_for
from tests.unit.sdk.stub_api import EverySession, StubState, stub_api


@pytest.fixture(autouse=True)
def _own_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime's session file and the default spool live in this test's directory."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.delenv("CA4_SESSION_ID", raising=False)


def _reporter(url: str, **kwargs: object) -> Reporter:
    return Reporter(url=url, api_key="k", collector=StaticCollector(), **kwargs)  # type: ignore[arg-type]


def _spool_during_outage(reporter: Reporter, state: StubState, count: int) -> list[str]:
    """``count`` reports of the reporter's session, spooled while the API answers 503."""
    state.status = 503
    event_ids = [reporter.report_once().event_id for _ in range(count)]
    assert len(reporter.spool) == count
    state.status, state.requests[:] = 202, []
    return event_ids


def _said(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """Warnings and errors logged, but the collector's self-check (no GPU here)."""
    return [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if record.levelno >= logging.WARNING and "self-check" not in record.getMessage()
    ]


def _sessions_sent(state: StubState) -> list[list[str]]:
    return [[r["session_id"] for r in request["body"]["reports"]] for request in state.requests]


@pytest.mark.parametrize("spool_dir", [None, "chosen-spool"], ids=["default spool", "spool_dir"])
def test_a_refused_session_is_left_for_a_fresh_one_and_the_spool_follows(
    tmp_path: Path, spool_dir: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    with stub_api() as (url, state):
        reporter = _reporter(url, spool_dir=tmp_path / spool_dir if spool_dir else None)
        old, old_spool = reporter.session_id, reporter.spool.directory
        event_ids = _spool_during_outage(reporter, state, 3)
        state.foreign_sessions = {old}  # e.g. a session from before tenancy, now tenant legacy's
        caplog.clear()  # the outage's warning

        with caplog.at_level(logging.WARNING, logger="ca4_sdk"):
            assert reporter.flush()

    new = reporter.session_id
    assert re.fullmatch(rf"{reporter.runtime}-[0-9a-f]{{20}}", new), new
    assert new != old
    # One refused request, one under the fresh session: the same reports, the same event ids.
    assert _sessions_sent(state) == [[old] * 3, [new] * 3]
    assert state.accepted_ids() == event_ids
    assert (reporter.stats.rejected, reporter.stats.delivered, len(reporter.spool)) == (0, 3, 0)
    ((level, warning),) = _said(caplog)
    assert level == logging.WARNING
    assert old in warning
    assert new in warning
    assert "another tenant" in warning
    # The runtime keeps the fresh id: a reporter made again (the cell run again) reports there.
    assert stable_session_id(reporter.runtime) == new
    if spool_dir is None:
        assert reporter.spool.directory == default_spool_dir(new)
        assert not old_spool.exists()
    else:
        assert reporter.spool.directory == old_spool


def test_report_once_sends_a_refused_report_again_under_the_fresh_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with stub_api() as (url, state):
        reporter = _reporter(url)
        old = reporter.session_id
        state.foreign_sessions = {old}
        with caplog.at_level(logging.WARNING, logger="ca4_sdk"):
            result = reporter.report_once()
            later = reporter.report_once()

    new = reporter.session_id
    assert (result.delivered, result.error, later.delivered) == (True, None, True)
    assert _sessions_sent(state) == [[old], [new], [new]]
    assert state.accepted_ids() == [result.event_id, later.event_id]
    assert [level for level, _ in _said(caplog)] == [logging.WARNING]


def test_the_switch_names_another_tenants_key_in_this_runtime_as_a_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On a shared host, or after a key swap in the notebook, another tenant's key may have
    reported under this runtime's session first: the warning gave only the other reasons."""
    with stub_api() as (url, state):
        reporter = _reporter(url)
        state.foreign_sessions = {reporter.session_id}
        with caplog.at_level(logging.WARNING, logger="ca4_sdk"):
            reporter.report_once()
    ((_, warning),) = _said(caplog)
    assert (
        "(a session reported before the API's tenancy upgrade belongs to no key, this API key "
        "now belongs to another tenant, or another tenant's key reported from this runtime)"
    ) in warning


def test_a_fresh_session_refused_too_drops_its_reports_and_never_spins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with stub_api() as (url, state):
        reporter = _reporter(url)
        old = reporter.session_id
        _spool_during_outage(reporter, state, 3)
        state.foreign_sessions = EverySession()
        caplog.clear()  # the outage's warning

        with caplog.at_level(logging.WARNING, logger="ca4_sdk"):
            assert reporter.flush()  # nothing left to send: refused for good
            later = reporter.report_once()

    new = reporter.session_id
    assert new != old
    # Refused, sent once under the fresh session, refused again: dropped. No third switch, no
    # retry of the dropped reports; the next report is sent once and dropped too.
    assert _sessions_sent(state) == [[old] * 3, [new] * 3, [new]]
    assert (reporter.stats.rejected, reporter.stats.delivered, len(reporter.spool)) == (4, 0, 0)
    assert not later.delivered
    assert later.error is not None
    assert f"refused session {new}" in later.error
    levels = _said(caplog)
    assert [level for level, _ in levels] == [logging.WARNING, logging.ERROR]  # error said once
    assert new in levels[1][1]
    assert old in levels[1][1]
    assert "never switches twice" in levels[1][1]


def test_a_session_id_the_caller_chose_is_never_left(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CA4_SESSION_ID", "my-experiment")
    with stub_api() as (url, state):
        reporter = _reporter(url)
        state.foreign_sessions = {"my-experiment"}
        with caplog.at_level(logging.WARNING, logger="ca4_sdk"):
            first, second = reporter.report_once(), reporter.report_once()

    assert reporter.session_id == "my-experiment"
    assert _sessions_sent(state) == [["my-experiment"], ["my-experiment"]]
    assert (first.delivered, second.delivered, reporter.stats.rejected) == (False, False, 2)
    assert first.error is not None
    assert "CA4_SESSION_ID" in first.error
    ((level, error),) = _said(caplog)
    assert level == logging.ERROR
    assert "my-experiment" in error


def test_the_background_thread_switches_too(fake_atexit: object) -> None:
    with stub_api() as (url, state):
        reporter = _reporter(url, interval=3600)
        old = reporter.session_id
        state.foreign_sessions = {old}
        reporter.start()
        wait_for(lambda: reporter.stats.delivered == 1)
        reporter.stop()

    assert _sessions_sent(state) == [[old], [reporter.session_id]]
    assert reporter.session_id != old
    assert reporter.stats.delivered == 1


def test_another_reporter_of_the_runtime_follows_once_it_is_refused_too(
    fake_atexit: object,
) -> None:
    # Two processes of one runtime (a notebook and `!python train.py`, torchrun's ranks) share
    # the session id and so the spool directory. The first to switch moved that spool away
    # with its directory, and the other's every delivery then failed before any POST: it
    # never learned of the refusal and lost every report from then on.
    with stub_api() as (url, state):
        first, other = _reporter(url), _reporter(url, interval=3600)
        old = first.session_id
        assert other.spool.directory == first.spool.directory
        state.foreign_sessions = {old}
        first.report_once()
        assert first.session_id != old

        other.start()  # its thread spools each report before it sends it
        wait_for(lambda: other.stats.delivered == 1)
        other.stop()

        assert other.session_id == first.session_id  # adopted from the runtime's session file
        assert _sessions_sent(state)[-1] == [first.session_id]
