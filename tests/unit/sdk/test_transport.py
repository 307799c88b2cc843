"""Transport: one POST per batch, gzip, headers, per-item results, retry timing."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import pytest
import requests
import urllib3.response
from ca4_sdk import transport as transport_module
from ca4_sdk.transport import Backoff, Transport, parse_retry_after

from tests.unit.sdk.stub_api import stub_api


def _reports(count: int, pad: int = 0) -> list[dict[str, Any]]:
    return [{"event_id": str(uuid.uuid4()), "pad": "x" * pad} for _ in range(count)]


def test_batch_is_gzipped_with_key_and_ngrok_header() -> None:
    with stub_api() as (url, state):
        reports = _reports(3, pad=1000)
        outcome = Transport(url, "secret-key").send(reports)
    assert outcome.accepted == [r["event_id"] for r in reports]
    (request,) = state.requests
    assert request["path"] == "/v1/metadata/batch"
    assert request["headers"]["Content-Encoding"] == "gzip"
    assert request["headers"]["Authorization"] == "Bearer secret-key"
    assert request["headers"]["ngrok-skip-browser-warning"] == "1"
    assert request["body"]["reports"] == reports


def test_small_bodies_are_sent_plain() -> None:
    with stub_api() as (url, state):
        Transport(url, None).send(_reports(1))
    assert "Content-Encoding" not in state.requests[0]["headers"]
    assert "Authorization" not in state.requests[0]["headers"]


def test_per_item_rejections_are_not_retried() -> None:
    reports = _reports(3)
    with stub_api() as (url, state):
        state.reject_event_ids = {reports[1]["event_id"]}
        outcome = Transport(url, "k").send(reports)
    assert outcome.accepted == [reports[0]["event_id"], reports[2]["event_id"]]
    assert [event_id for event_id, _ in outcome.rejected] == [reports[1]["event_id"]]
    assert outcome.retry == []


def test_unavailable_api_means_retry_with_retry_after() -> None:
    reports = _reports(2)
    with stub_api() as (url, state):
        state.status, state.retry_after = 503, "7"
        outcome = Transport(url, "k").send(reports)
    assert outcome.retry == reports
    assert outcome.retry_after_s == 7.0
    assert outcome.error is not None
    assert "503" in outcome.error


def test_auth_failure_is_flagged() -> None:
    with stub_api() as (url, state):
        state.status = 401
        outcome = Transport(url, "wrong").send(_reports(1))
    assert outcome.auth_failed
    assert len(outcome.retry) == 1


@pytest.mark.parametrize("status", [200, 202, 404, 400, 401, 520])
def test_a_page_that_is_not_the_api_keeps_the_reports(status: int) -> None:
    """An ngrok tunnel whose agent is down answers 404 with an HTML page; a captive portal
    answers 200. Both dropped the reports (404 as refused for good, 200 as accepted)."""
    reports = _reports(2)
    with stub_api() as (url, state):
        state.status, state.page = status, "<html>ERR_NGROK_3200: endpoint is offline</html>"
        outcome = Transport(url, "k").send(reports)
    assert outcome.retry == reports
    assert outcome.accepted == []
    assert outcome.rejected == []
    # A 404 page at an http:// URL may be another server's (a wrong port or path) or an
    # HTTPS-only ingress's: the hint says so.
    hint = " (is this the CA4 edge's URL? a wrong port or path, or an HTTPS-only edge)"
    hint = hint if status == 404 else ""
    assert outcome.error == (
        f"HTTP {status} that is not the CA4 API's answer (text/html; charset=utf-8): "
        f"<html>ERR_NGROK_3200: endpoint is offline</html>{hint}"
    )
    assert outcome.auth_failed == (status == 401)


@pytest.mark.parametrize("status", [404, 501, 507])
def test_a_404_or_any_server_error_of_the_api_keeps_the_reports(status: int) -> None:
    with stub_api() as (url, state):
        state.status = status
        outcome = Transport(url, "k").send(_reports(1))
    assert len(outcome.retry) == 1
    assert outcome.rejected == []
    assert outcome.error == f"HTTP {status}: stub says no"


def test_too_large_batch_is_halved_until_it_fits() -> None:
    with stub_api() as (url, state):
        state.status = 413
        outcome = Transport(url, "k").send(_reports(4))
    # 4 -> 2 + 2 -> 1+1+1+1, each single report refused for good.
    assert len(state.requests) == 7
    assert len(outcome.rejected) == 4


def test_a_batch_whose_every_report_is_rejected_is_read_not_halved() -> None:
    # The processor answers 422 with a result per report when none is accepted: halving it
    # sent 2n - 1 requests, and the last ones' results were never read.
    reports = _reports(4)
    with stub_api() as (url, state):
        state.reject_event_ids = {report["event_id"] for report in reports}
        outcome = Transport(url, "k").send(reports)
    assert len(state.requests) == 1
    assert [event_id for event_id, _ in outcome.rejected] == [r["event_id"] for r in reports]
    assert (outcome.accepted, outcome.retry) == ([], [])


def test_a_422_without_results_still_halves_the_batch() -> None:
    with stub_api() as (url, state):
        state.status = 422  # {"detail": ...}: the request as a whole was unusable
        outcome = Transport(url, "k").send(_reports(2))
    assert len(state.requests) == 3
    assert len(outcome.rejected) == 2


@pytest.mark.parametrize("others", [0, 2], ids=["alone (422)", "with others (207)"])
def test_reports_of_another_tenants_session_are_set_apart_not_rejected(others: int) -> None:
    refused = [{**report, "session_id": "theirs"} for report in _reports(2)]
    mine = [{**report, "session_id": "mine"} for report in _reports(others)]
    with stub_api() as (url, state):
        state.foreign_sessions = {"theirs"}
        outcome = Transport(url, "k").send([*refused, *mine])
    assert outcome.session_forbidden == refused
    assert outcome.accepted == [report["event_id"] for report in mine]
    assert (outcome.rejected, outcome.retry, len(state.requests)) == ([], [], 1)


def test_connection_refused_is_a_retry_not_an_exception() -> None:
    reports = _reports(1)
    outcome = Transport("http://127.0.0.1:9", "k", connect_timeout_s=0.5).send(reports)
    assert outcome.retry == reports
    assert outcome.error is not None


def test_full_jitter_backoff_grows_and_honours_retry_after() -> None:
    backoff = Backoff(base_s=1.0, max_s=8.0, rng=random.Random(4))
    delays = [backoff.next_delay() for _ in range(6)]
    assert all(0 <= d <= min(8.0, 2**i) for i, d in enumerate(delays))
    assert backoff.next_delay(retry_after_s=30.0) >= 30.0
    backoff.reset()
    assert backoff.next_delay() <= 1.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [("120", 120.0), (None, None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after_parsing(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


@pytest.mark.parametrize(
    "answer",
    [
        b'{"results": [{"index": 1e999, "status": "accepted"}]}',
        b'{"results": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["infinite index", "nested 100,000 deep"],
)
def test_results_that_cannot_be_read_are_read_as_none_given(answer: bytes) -> None:
    # A hostile edge (or a man in the middle of an http:// URL) made the sending thread raise
    # OverflowError or RecursionError: a hundred POSTs a second, a traceback each.
    reports = _reports(2)
    with stub_api() as (url, state):
        state.raw_answer = answer
        outcome = Transport(url, "k").send(reports)
    assert outcome.accepted == [str(report["event_id"]) for report in reports]
    assert outcome.retry == []


def test_a_422_whose_json_cannot_be_read_is_not_an_exception() -> None:
    # Read for its per-report results before being read as a 422 of the whole request: the
    # nesting raised RecursionError out of send().
    with stub_api() as (url, state):
        state.status, state.raw_answer = 422, b'{"results": ' + b"[" * 100_000 + b"]" * 100_000
        outcome = Transport(url, "k").send(_reports(1))
    assert len(outcome.rejected) == 1
    assert outcome.rejected[0][1].startswith('HTTP 422: {"results": [[[')


def _cap(reports: int) -> int:
    return int(
        transport_module.ANSWER_FLOOR_BYTES + transport_module.ANSWER_BYTES_PER_REPORT * reports
    )


def test_an_answer_over_the_cap_is_cut_off_and_its_reports_kept() -> None:
    """An edge answering megabytes (gigabytes, for all the client knew) was read whole into
    memory. An answer cut off is not the API's word on the reports: they are kept."""
    reports = _reports(2)
    with stub_api() as (url, state):
        transport = Transport(url, "k")
        state.padding = 4 * 1024 * 1024
        outcome = transport.send(reports)
        assert (outcome.retry, outcome.accepted, outcome.rejected) == (reports, [], [])
        assert outcome.error == f"HTTP 202: answer larger than {_cap(2)} bytes; not read"
        assert outcome.status == 202
        # A padded answer within the cap is read, on the same transport (the cut-off
        # connection was closed, not handed back half read).
        state.padding = 512 * 1024
        assert transport.send(reports).accepted == [report["event_id"] for report in reports]


def test_a_gzip_bomb_is_cut_off_at_the_cap_on_its_inflated_bytes() -> None:
    # About 16 KiB on the wire, far under the cap; 16 MiB once inflated.
    reports = _reports(2)
    with stub_api() as (url, state):
        transport = Transport(url, "k")
        state.gzip_answer, state.padding = True, 16 * 1024 * 1024
        outcome = transport.send(reports)
        assert (outcome.retry, outcome.accepted) == (reports, [])
        assert outcome.error == f"HTTP 202: answer larger than {_cap(2)} bytes; not read"
        state.padding = 64 * 1024  # a gzipped answer within the cap is read
        assert transport.send(reports).accepted == [report["event_id"] for report in reports]


@pytest.mark.parametrize("urllib3_shutdown", [True, False], ids=["urllib3 >= 2.3", "older"])
def test_a_trickling_answer_is_given_up_at_the_deadline(
    urllib3_shutdown: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One byte every 20 ms: no read waits as long as the read timeout, so only a deadline on
    the whole answer stops it (older urllib3 has no ``HTTPResponse.shutdown``: the socket's
    own ``shutdown`` wakes the blocked read instead)."""
    if not urllib3_shutdown:
        for cls in urllib3.response.HTTPResponse.__mro__:  # BaseHTTPResponse: urllib3 2 only
            if "shutdown" in vars(cls):
                monkeypatch.delattr(cls, "shutdown")
    reports = _reports(1)
    with stub_api() as (url, state):
        state.trickle_s, state.padding = 0.02, 200  # about 6 s for the whole answer
        started = time.monotonic()
        outcome = Transport(url, "k").send(reports, deadline=started + 0.3)
        took_s = time.monotonic() - started
    assert (outcome.retry, outcome.accepted) == (reports, [])
    assert took_s < 1.5, f"send() took {took_s:.1f} s"
    assert outcome.error == "HTTP 202: answer not read within the deadline"


def test_a_trickling_answer_is_given_up_without_a_deadline_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The reporter's background sends pass no deadline: a trickle held its thread (and so
    # every collection after it) for as long as the edge liked.
    monkeypatch.setattr(transport_module, "ANSWER_WITHIN_S", 0.3, raising=False)
    reports = _reports(1)
    with stub_api() as (url, state):
        state.trickle_s, state.padding = 0.02, 200
        started = time.monotonic()
        outcome = Transport(url, "k").send(reports)
        took_s = time.monotonic() - started
    assert (outcome.retry, outcome.accepted) == (reports, [])
    assert took_s < 1.5, f"send() took {took_s:.1f} s"
    assert outcome.error == "HTTP 202: answer not read within 0.3 s"


def test_a_redirects_body_is_left_unread() -> None:
    """``requests`` reads a redirect's body whole (however large, however slowly it comes)
    before it follows the redirect, where no cap or deadline of the transport applies. A
    redirect is not followed at all now (see test_transport_setup_errors.py): the reports are
    kept, and its body is never read."""
    reports = _reports(1)
    with stub_api() as (url, state):
        state.redirects, state.redirect_body_s = 1, 4.0
        started = time.monotonic()
        outcome = Transport(url, "k").send(reports)
        took_s = time.monotonic() - started
    assert (outcome.retry, outcome.accepted, outcome.status) == (reports, [], 307)
    assert len(state.requests) == 1  # not sent again where the 307 said
    assert took_s < 1.5, f"send() took {took_s:.1f} s"


@pytest.mark.parametrize("as_list", [True, False], ids=["list", "callable"])
def test_the_callers_response_hooks_still_fire_once(as_list: bool) -> None:
    """The transport's own hook (closing a redirect unread) was passed per request, which
    replaces the session's response hooks: a caller's hook on its session stopped firing."""
    seen: list[int] = []

    def hook(response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        seen.append(response.status_code)

    session = requests.Session()
    session.hooks["response"] = [hook] if as_list else hook  # type: ignore[assignment]
    with stub_api() as (url, state):
        transport = Transport(url, "k", session=session)
        assert len(transport.send(_reports(1)).accepted) == 1
        state.redirects, state.redirect_body_s = 1, 4.0
        started = time.monotonic()
        outcome = transport.send(_reports(1))
        took_s = time.monotonic() - started
        transport.after_fork_in_child()  # the child's own session keeps the caller's hooks
        assert len(transport.send(_reports(1)).accepted) == 1
    assert seen == [202, 307, 202]
    assert outcome.status == 307
    assert took_s < 1.5, f"send() took {took_s:.1f} s"  # the redirect is still left unread
