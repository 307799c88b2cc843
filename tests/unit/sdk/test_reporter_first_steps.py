"""A new user's first steps: the setup mistakes a reporter must name (a redirecting edge, a URL
of an API page, a key pasted from a document) and the reports it must not lose (refused ones
shown in ``print(reporter)``, one interrupted by Ctrl-C, those left when stopping)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from tests.unit.sdk.reporter_support import FakeAtexit, make_reporter, wait_for
from tests.unit.sdk.stub_api import stub_api


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Warnings other than the self-check's (which warns of the CPU collector here)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "self-check" not in r.getMessage()
    ]


# -- a redirecting edge ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 308])
def test_behind_a_redirect_the_reports_are_kept_and_the_url_to_use_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    """Behind an http -> https redirect, every report was dropped as refused ("HTTP 405") and
    ``print(reporter)`` said ``last_error=None``."""
    with stub_api() as (url, state):
        state.redirects, state.redirect_status = 5, status
        state.redirect_to = f"{url}/edge/v1/metadata/batch"
        reporter = make_reporter(url, tmp_path)
        result = reporter.report_once()
    said = (
        f"HTTP {status}: the edge redirects to {url}/edge/v1/metadata/batch: use {url}/edge as url="
    )
    assert (result.delivered, result.error) == (False, said)
    assert len(reporter.spool) == 1
    assert (reporter.stats.rejected, reporter.stats.last_error) == (0, said)
    assert f"last_error={said!r}" in repr(reporter)
    (warning,) = _warnings(caplog)
    assert warning.startswith(f"ca4 API not reached ({said}); 1 report kept in ")


def test_reports_refused_by_the_api_show_in_last_error_until_one_gets_through(
    tmp_path: Path,
) -> None:
    with stub_api() as (url, state):
        reporter = make_reporter(url, tmp_path)
        state.status = 405
        reporter.report_once()
        refused = "1 report refused by the API, not retried: HTTP 405: stub says no"
        assert reporter.stats.last_error == refused
        assert f"last_error={refused!r}" in repr(reporter)
        state.status = 202
        assert reporter.report_once().delivered
        assert reporter.stats.last_error is None


# -- the URL of an API page ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "suffix",
    [
        "/docs",
        "/redoc",
        "/openapi.json",
        "/v1",
        "/v1/",
        "/v1/sessions",
        "/v1/gpus",
        "/v1/events",
        "/v1/usage",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/sessions/colab-0123456789abcdef0123",
        "/sdk/ca4-sdk/",
    ],
)
def test_the_url_of_an_api_page_is_refused_naming_the_base_url(tmp_path: Path, suffix: str) -> None:
    """Swagger's URL (``/docs``), a read endpoint's, a probe's: the SDK posted to
    ``/docs/v1/metadata/batch`` and retried for good."""
    for base in ("https://edge.example", "https://edge.example/ca4"):
        with pytest.raises(ValueError, match=r"base URL") as caught:
            make_reporter(base + suffix, tmp_path)
        assert f"e.g. {base} (the SDK adds /v1/metadata/batch itself)" in str(caught.value)


@pytest.mark.parametrize("path", ["/ca4", "/mydocs", "/team/metrics-edge", "/v1x"])
def test_a_proxys_own_path_prefix_is_kept(tmp_path: Path, path: str) -> None:
    reporter = make_reporter(f"https://edge.example{path}", tmp_path)
    assert reporter.url == f"https://edge.example{path}"


# -- a key pasted from a document ----------------------------------------------------------------


def test_a_key_with_surrounding_whitespace_is_stripped(tmp_path: Path) -> None:
    with stub_api() as (url, state):
        assert make_reporter(url, tmp_path, api_key="  pasted-key\n").report_once().delivered
    assert state.requests[0]["headers"]["Authorization"] == "Bearer pasted-key"


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("\u201cpasted-key\u201d", "U+201C (LEFT DOUBLE QUOTATION MARK) at position 1"),
        ("pasted-k\u00e9y", "U+00E9 (LATIN SMALL LETTER E WITH ACUTE) at position 9"),
        ("pasted\nkey", "U+000A (a control character) at position 7"),
    ],
    ids=["curly quotes", "latin-1", "line break inside"],
)
def test_a_key_that_is_not_printable_ascii_is_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, said: str
) -> None:
    """A non-latin-1 key raised UnicodeEncodeError from report_once(); a latin-1 or a broken
    one was sent (and refused, or failed as an invalid header) every 15 s for good."""
    for message in refusals_of(key, tmp_path, monkeypatch, match="printable ASCII only"):
        assert said in message
        assert f"{len(key)} characters" in message
        assert "pasted" not in message  # never the key itself


def refusals_of(
    key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, match: str
) -> list[str]:
    """What a reporter made with ``key`` says, given as the argument and as CA4_API_KEY."""
    messages = []
    for source in ("argument", "environment"):
        if source == "environment":
            monkeypatch.setenv("CA4_API_KEY", key)
        with pytest.raises(ValueError, match=match) as caught:
            make_reporter(
                "https://edge.example", tmp_path, api_key=key if source == "argument" else None
            )
        messages.append(str(caught.value))
    return messages


@pytest.mark.parametrize("key", ["Bearer pasted-key", "bearer pasted-key", " Bearer pasted-key"])
def test_a_key_pasted_with_its_bearer_prefix_is_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    """It was sent as ``Bearer Bearer ...`` and refused every 15 s as an invalid key."""
    for message in refusals_of(key, tmp_path, monkeypatch, match="starts with 'Bearer '"):
        assert "paste the key alone" in message
        assert "pasted" not in message  # never the key itself


# -- reports that must not be lost ---------------------------------------------------------------


def test_ctrl_c_during_report_once_leaves_the_report_spooled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with stub_api() as (url, state):
        reporter = make_reporter(url, tmp_path)

        def interrupted(*_args: Any, **_kwargs: Any) -> Any:
            raise KeyboardInterrupt

        monkeypatch.setattr(reporter._transport, "send", interrupted)
        with pytest.raises(KeyboardInterrupt):
            reporter.report_once()
        assert len(reporter.spool) == 1
        monkeypatch.undo()
        assert reporter.flush()
    assert len(state.accepted_ids()) == 1


def test_report_once_leaves_nothing_spooled_once_delivered_or_refused(tmp_path: Path) -> None:
    with stub_api() as (url, state):
        reporter = make_reporter(url, tmp_path)
        assert reporter.report_once().delivered
        state.status = 405
        assert not reporter.report_once().delivered
    assert len(reporter.spool) == 0


@pytest.mark.parametrize(
    ("colab", "after"),
    [
        (False, ""),
        # A deleted or recycled Colab runtime takes its disk, and the spool, with it: "sent on
        # the next run" promised what a new VM cannot keep.
        (
            True,
            " (not if this runtime is deleted or recycled: its disk goes with it; pass "
            "spool_dir= on a mounted Drive to keep them)",
        ),
    ],
    ids=["a host", "Colab"],
)
def test_stop_says_how_many_reports_stay_spooled(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    fake_atexit: FakeAtexit,
    monkeypatch: pytest.MonkeyPatch,
    colab: bool,
    after: str,
) -> None:
    for name in ("COLAB_RELEASE_TAG", "COLAB_GPU"):
        monkeypatch.delenv(name, raising=False)
    if colab:
        monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-20261201")
    with stub_api() as (url, state):
        state.status = 503
        reporter = make_reporter(url, tmp_path, interval=60).start()
        wait_for(lambda: len(state.requests) >= 1 and len(reporter.spool) == 1)
        reporter.stop()
    assert [message for message in _warnings(caplog) if " stay" in message] == [
        f"ca4: 1 report stays spooled in {reporter.spool.location}; it is sent when a reporter "
        f"starts again on this machine{after}"
    ]


def test_stop_says_nothing_when_everything_was_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fake_atexit: FakeAtexit
) -> None:
    with stub_api() as (url, state):
        reporter = make_reporter(url, tmp_path, interval=60).start()
        wait_for(lambda: len(state.accepted_ids()) == 1)
        reporter.stop()
    assert [message for message in _warnings(caplog) if " stay" in message] == []


@pytest.mark.parametrize("on_disk", [True, False], ids=["on disk", "in memory"])
def test_interpreter_exit_says_what_stays_spooled_or_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, on_disk: bool
) -> None:
    """The exit flush said nothing of the reports it could not deliver."""
    (tmp_path / "a-file").write_text("")  # as spool_dir: no usable directory, a spool in memory
    spool_dir = tmp_path / "spool" if on_disk else tmp_path / "a-file"
    with stub_api() as (url, state):
        state.status = 503
        reporter = make_reporter(url, tmp_path, spool_dir=spool_dir)
        reporter.report_once()
        caplog.clear()
        reporter._flush_at_exit()  # what atexit runs
    said = [message for message in _warnings(caplog) if "unreachable" not in message]
    assert said == [
        f"ca4: 1 report stays spooled in {reporter.spool.location}; it is sent when a reporter "
        "starts again on this machine"
        if on_disk
        else "ca4: 1 report in memory (no usable spool directory) lost: the API did not take it "
        "before this process ended"
    ]


def test_the_first_delivery_is_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``show_logs()`` promises progress: on a healthy run it showed nothing after the
    self-check, and nothing said that reports arrive."""
    caplog.set_level(logging.INFO, logger="ca4_sdk")
    with stub_api() as (url, _):
        reporter = make_reporter(url, tmp_path)
        assert reporter.report_once().delivered
        assert reporter.report_once().delivered
    said = [r.getMessage() for r in caplog.records if "delivered" in r.getMessage()]
    assert said == [
        f"ca4: first report delivered to {url} (session unit-session); print(reporter) shows "
        "the counts"
    ]
