"""Setup mistakes only the edge's answer shows (a redirect, the wrong scheme, a dead tunnel, a
proxy setting pointing at nothing): the reports are kept, and the error says what to fix."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from ca4_sdk.transport import Transport

from tests.unit.sdk.stub_api import stub_api


def _reports(count: int) -> list[dict[str, Any]]:
    return [{"event_id": str(uuid.uuid4())} for _ in range(count)]


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed_and_names_the_url_to_use(status: int) -> None:
    """Behind an http -> https redirect, ``requests`` turned the POST into a GET (301, 302):
    the API answered 405 and every report was dropped as refused. After a 307 or 308 to
    another port it dropped the key, and the key read as refused."""
    reports = _reports(2)
    with stub_api() as (url, state):
        state.redirects, state.redirect_status = 1, status
        state.redirect_to = f"{url}/secure/v1/metadata/batch"
        outcome = Transport(url, "k").send(reports)
    assert (outcome.retry, outcome.accepted, outcome.rejected) == (reports, [], [])
    assert outcome.status == status
    assert not outcome.auth_failed
    assert outcome.error == (
        f"HTTP {status}: the edge redirects to {url}/secure/v1/metadata/batch: "
        f"use {url}/secure as url="
    )
    assert [request["path"] for request in state.requests] == ["/v1/metadata/batch"]


@pytest.mark.parametrize(
    ("location", "said"),
    [
        ("/login?next=%2F", "redirects to {url}/login?next=%2F: use that URL as url="),
        ("", "redirects (with no Location): is url= the edge's base URL?"),
        ("https://x/" + "a" * 500, "redirects to https://x/" + "a" * 187 + "...: use that"),
    ],
    ids=["relative", "none", "long"],
)
def test_a_redirects_location_is_resolved_and_clipped(location: str, said: str) -> None:
    with stub_api() as (url, state):
        state.redirects, state.redirect_status, state.redirect_to = 1, 302, location
        outcome = Transport(url, "k").send(_reports(1))
    assert outcome.error is not None
    assert said.format(url=url) in outcome.error


def test_https_against_a_plain_http_edge_hints_at_http() -> None:
    reports = _reports(1)
    with stub_api() as (url, _state):
        https_url = url.replace("http://", "https://")
        outcome = Transport(https_url, "k", connect_timeout_s=2).send(reports)
    assert outcome.retry == reports
    assert outcome.error is not None
    assert outcome.error.startswith("SSLError: ")
    assert outcome.error.endswith("; is the edge plain http? try http://")


WRONG_URL_HINT = "(is this the CA4 edge's URL? a wrong port or path, or an HTTPS-only edge)"


@pytest.mark.parametrize(
    ("status", "hinted"), [(404, True), (403, False)], ids=["404 page", "403 page"]
)
def test_a_404_page_at_an_http_url_hints_at_the_url(status: int, hinted: bool) -> None:
    """Another server on a wrong port or path, or an HTTPS-only ingress, answers an http:// URL
    with its 404 page: a hint, wrong port or path first, not a refusal. It said "is the edge
    HTTPS only?" alone, for what was most often a wrong port."""
    with stub_api() as (url, state):
        state.status, state.page = status, "<html><body>default backend - 404</body></html>"
        outcome = Transport(url, "k").send(_reports(1))
    assert len(outcome.retry) == 1
    assert outcome.error is not None
    assert outcome.error.endswith(WRONG_URL_HINT) == hinted


def test_a_page_of_many_lines_is_quoted_in_one() -> None:
    """Its line breaks and indentation went into the log line, which ran over several."""
    page = "<html>\n  <body>\n    <p>Not   Found</p>\r\n  </body>\n</html>\n"
    with stub_api() as (url, state):
        state.status, state.page = 404, page
        outcome = Transport(url, "k").send(_reports(1))
    assert outcome.error == (
        "HTTP 404 that is not the CA4 API's answer (text/html; charset=utf-8): "
        f"<html> <body> <p>Not Found</p> </body> </html> {WRONG_URL_HINT}"
    )


def test_a_dead_ngrok_tunnel_is_quoted_by_its_error_code_and_title() -> None:
    """The first 200 characters of ngrok's page are markup and styles: its error code and the
    page's title say what is wrong, and what to do (a free ngrok URL changes whenever the agent
    starts again; the hint was given for http:// URLs only, and ngrok's are https://)."""
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><style>" + "body{}" * 60 + "</style>"
        "<title>\n  Endpoint  offline &amp; gone\n</title></head><body>...</body></html>"
    )
    with stub_api() as (url, state):
        state.status, state.page = 404, page
        state.page_headers = {"ngrok-error-code": "ERR_NGROK_3200"}
        outcome = Transport(url, "k").send(_reports(1))
    assert outcome.error == (
        "HTTP 404 that is not the CA4 API's answer (text/html; charset=utf-8): "
        "ngrok-error-code ERR_NGROK_3200; title 'Endpoint offline & gone' (the ngrok URL is "
        "offline or changed: start ngrok, then set the URL it prints as CA4_EDGE_API_URL and "
        "make the Reporter again)"
    )


def test_a_page_with_a_title_only_is_quoted_by_its_title() -> None:
    page = "<html><head><title>502 Bad Gateway</title></head><body>" + "x" * 300 + "</body>"
    with stub_api() as (url, state):
        state.status, state.page = 502, page
        outcome = Transport(url, "k").send(_reports(1))
    assert outcome.error == (
        "HTTP 502 that is not the CA4 API's answer (text/html; charset=utf-8): "
        "title '502 Bad Gateway'"
    )


def test_a_proxy_that_is_not_there_hints_at_the_proxy_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens on the discard port
    reports = _reports(1)
    outcome = Transport("http://edge.example", "k", connect_timeout_s=2).send(reports)
    assert outcome.retry == reports
    assert outcome.error is not None
    assert outcome.error.startswith("ProxyError: ")
    assert "cannot connect to http://edge.example" not in outcome.error  # the proxy failed
    assert outcome.error.endswith("; check HTTPS_PROXY/HTTP_PROXY, or NO_PROXY for this host")
