"""Setup mistakes are caught by ``Reporter(...)`` with a message that says what to fix, and the
ones only the edge can see (a refused key, a URL that is not the API) are named as such."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from ca4_sdk import Reporter

from tests.unit.sdk.reporter_support import StaticCollector, make_reporter
from tests.unit.sdk.stub_api import stub_api
from tests.unit.sdk.support import assert_valid_report


def _bare(url: str, tmp_path: Path, **kwargs: object) -> Reporter:
    return Reporter(
        url=url,
        session_id="unit-session",
        collector=StaticCollector(),
        spool_dir=tmp_path / "spool",
        **kwargs,  # type: ignore[arg-type]
    )


def test_no_url_says_a_notebook_restart_forgets_one_set_in_a_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After "Restart session" the reporter cell alone raised "set CA4_EDGE_API_URL" to a user
    who had: the first cell set it from a Colab secret, and the restart forgot it."""
    monkeypatch.delenv("CA4_EDGE_API_URL", raising=False)
    with pytest.raises(ValueError, match="no API URL") as refused:
        Reporter(api_key="k", spool_dir=tmp_path / "spool")
    assert str(refused.value) == (
        "no API URL: pass url=... or set CA4_EDGE_API_URL (in a notebook, a value set by an "
        "earlier cell is gone after a restart: run that cell again)"
    )


@pytest.mark.parametrize("key", [None, ""])
def test_no_api_key_is_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str | None
) -> None:
    monkeypatch.delenv("CA4_API_KEY", raising=False)
    with pytest.raises(ValueError, match=r"no API key: pass api_key=\.\.\. or set CA4_API_KEY"):
        _bare("https://edge.example", tmp_path, api_key=key)


def test_the_key_may_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CA4_API_KEY", "from-env")
    with stub_api() as (url, state):
        assert _bare(url, tmp_path).report_once().delivered
    assert state.requests[0]["headers"]["Authorization"] == "Bearer from-env"


def test_a_session_id_from_a_file_or_secret_loses_its_line_break(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``CA4_SESSION_ID`` read from a file kept its line break: the SDK's check let it through
    (``$`` matches before one), and the API refused every report of the session."""
    monkeypatch.setenv("CA4_SESSION_ID", "team-a-7f3e9c2d41\n")
    with stub_api() as (url, state):
        reporter = Reporter(
            url=url, api_key="k", collector=StaticCollector(), spool_dir=tmp_path / "spool"
        )
        assert reporter.session_id == "team-a-7f3e9c2d41"
        assert reporter.report_once().delivered
    assert_valid_report(state.requests[0]["body"]["reports"][0])


def test_a_session_id_the_contract_refuses_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="session id") as refused:
        make_reporter("https://edge.example", tmp_path, session_id="run\n2")
    assert str(refused.value) == (
        r"the session id (session_id= or CA4_SESSION_ID) must match "
        r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$ (got 'run\n2')"
    )


@pytest.mark.parametrize(
    "url", ["127.0.0.1:8000", "edge.example", "localhost:8000/", "ftp://edge.example", "http://"]
)
def test_a_url_without_http_scheme_and_host_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValueError, match=r"http:// or https://") as caught:
        make_reporter(url, tmp_path)
    assert repr(url) in str(caught.value)


@pytest.mark.parametrize(
    ("url", "meant"),
    [
        ("abc.ngrok-free.app", "https://abc.ngrok-free.app"),
        ("https//abc.ngrok-free.app", "https://abc.ngrok-free.app"),
        ("https:/abc.ngrok-free.app", "https://abc.ngrok-free.app"),
        ("HTTP:127.0.0.1:8002", "http://127.0.0.1:8002"),
        ("httpbin.example", "https://httpbin.example"),
        ("127.0.0.1:8002", "http://127.0.0.1:8002"),
        ("localhost:8002/", "http://localhost:8002/"),
        ("[::1]:8002", "http://[::1]:8002"),
    ],
)
def test_a_url_without_its_scheme_is_refused_naming_the_url_meant(
    tmp_path: Path, url: str, meant: str
) -> None:
    """The hint put ``http://`` before whatever was typed: an ngrok host with its key sent in
    clear text, and ``http://https//...`` for a scheme missing its colon."""
    with pytest.raises(ValueError, match="did you mean") as caught:
        make_reporter(url, tmp_path)
    assert str(caught.value).endswith(f"; did you mean {meant!r}?)")


@pytest.mark.parametrize("interval", [0.0, -15.0, float("nan"), float("inf"), 1e12])
def test_an_interval_the_thread_cannot_wait_is_refused_at_once(
    tmp_path: Path, interval: float
) -> None:
    """NaN passed ``interval <= 0`` and made the thread spin on a core; an infinite or huge
    one passed and killed the thread (OverflowError) at its first wait of a whole interval."""
    with pytest.raises(ValueError, match="interval must be a positive number of seconds"):
        make_reporter("https://edge.example", tmp_path, interval=interval)


@pytest.mark.parametrize(
    "suffix", ["/v1/metadata", "/v1/metadata/", "/v1/metadata/batch", "/metadata", "/sdk", "/sdk/"]
)
def test_a_url_of_an_api_path_is_refused_naming_the_base_url(tmp_path: Path, suffix: str) -> None:
    with pytest.raises(ValueError, match=r"base URL") as caught:
        make_reporter(f"https://edge.example{suffix}", tmp_path)
    assert "e.g. https://edge.example " in str(caught.value) + " "


def test_a_path_prefix_is_kept_and_trailing_slashes_stripped(tmp_path: Path) -> None:
    """An edge behind a proxy under a path of its own still works (only API paths are refused)."""
    with stub_api() as (url, state):
        reporter = make_reporter(f"{url}/ca4//", tmp_path)
        assert reporter.url == f"{url}/ca4"
        assert reporter.report_once().delivered
    assert [request["path"] for request in state.requests] == ["/ca4/v1/metadata/batch"]


def test_trailing_slash_is_stripped(tmp_path: Path) -> None:
    with stub_api() as (url, state):
        reporter = make_reporter(f"{url}/", tmp_path)
        assert reporter.url == url
        reporter.report_once()
    assert state.requests[0]["path"] == "/v1/metadata/batch"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Warnings other than the self-check's (which warns of the CPU collector here)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "self-check" not in r.getMessage()
    ]


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_named_and_the_reports_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    with stub_api() as (url, state):
        state.status = status
        reporter = make_reporter(url, tmp_path)
        reporter.report_once()
        reporter.report_once()
    assert len(reporter.spool) == 2
    spool = reporter.spool.directory
    assert _warnings(caplog) == [
        f"ca4 API refused the key (HTTP {status}: stub says no): check api_key / CA4_API_KEY; "
        f"1 report kept in {spool}, next try in 300s",
        f"ca4 API refused the key (HTTP {status}: stub says no): check api_key / CA4_API_KEY; "
        f"2 reports kept in {spool}, next try in 300s",
    ]


def test_a_404_names_the_url_posted_to_and_the_reports_are_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with stub_api() as (url, state):
        state.status = 404
        reporter = make_reporter(url, tmp_path)
        reporter.report_once()
    assert len(reporter.spool) == 1
    (warning,) = _warnings(caplog)
    assert warning.startswith(
        f"ca4 API unreachable (HTTP 404: stub says no, from POST {url}/v1/metadata/batch); "
        "1 report kept in "
    )
