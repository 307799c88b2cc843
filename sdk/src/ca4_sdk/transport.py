"""HTTP delivery of report batches to the processor, and the retry timing around it.

``requests`` only (Colab ships it). One call to :meth:`Transport.send` is one POST to
``/v1/metadata/batch``; it never sleeps and never raises for network trouble: it says which
reports were accepted, which the server refused for good, and which should be tried again and
when. Reports are sent as already-built dicts, so a retried report keeps its ``event_id``.
"""

from __future__ import annotations

import email.utils
import gzip
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from ca4_sdk._version import SDK_NAME, SDK_VERSION

logger = logging.getLogger("ca4_sdk")

BATCH_PATH = "/v1/metadata/batch"
GZIP_MIN_BYTES = 1024
"""Smaller bodies are sent plain: gzip would cost more than it saves."""
RETRYABLE_STATUS = frozenset({404, 408, 425, 429, 500, 502, 503, 504})
"""Kept and sent again later. ``404`` too: a tunnel whose agent is down (ngrok) answers it, and
a wrong edge URL is better fixed with the reports still spooled than after they are dropped."""
AUTH_STATUS = frozenset({401, 403})
SPLITTABLE_STATUS = frozenset({413, 422})
"""A whole batch refused for its size or shape: halve it, so one bad report can't sink others.
A ``422`` that lists a result per report (every report rejected) is read like a ``207``."""
SESSION_FORBIDDEN = "session_forbidden"
"""The error type of a report whose session belongs to another tenant (the processor's)."""


@dataclass
class SendOutcome:
    """What became of each report in one POST."""

    accepted: list[str] = field(default_factory=list)
    """Event ids the processor acknowledged (Kafka ``acks=all``)."""
    rejected: list[tuple[str, str]] = field(default_factory=list)
    """``(event_id, reason)`` for reports the server refused for good (they break the contract)."""
    session_forbidden: list[dict[str, Any]] = field(default_factory=list)
    """Reports refused only because their session belongs to another tenant: valid, and
    neither published nor stored, so they may be sent again, unchanged but for the session."""
    retry: list[dict[str, Any]] = field(default_factory=list)
    """Reports to send again later, unchanged."""
    retry_after_s: float | None = None
    """The server's ``Retry-After``, when it gave one."""
    error: str | None = None
    """Why the reports in ``retry`` weren't delivered."""
    auth_failed: bool = False
    """The API key was refused: retrying soon will not help."""
    rate_limited: bool = False
    """The edge answered 429 (the key's rate limit, or its requests in flight or reports
    waiting for Kafka): send again after Retry-After."""
    status: int | None = None
    """The HTTP status that made ``retry`` necessary (None: no answer, or none needed)."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class Backoff:
    """Exponential backoff with full jitter, never shorter than the server's ``Retry-After``.

    Full jitter (a uniform draw between 0 and the exponential cap) spreads many notebooks that
    lost the API at the same moment, so they don't all come back in lockstep.
    """

    base_s: float = 1.0
    max_s: float = 60.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self, retry_after_s: float | None = None) -> float:
        """The wait before the next try; each call counts one more failed attempt."""
        cap = min(self.max_s, self.base_s * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        delay = self.rng.uniform(0.0, cap)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_s * 5))
        return delay

    def reset(self) -> None:
        """Back to the first-attempt delay after a success."""
        self.attempt = 0


class Transport:
    """Posts batches of report dicts with gzip, a Bearer key and the ngrok header."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        connect_timeout_s: float = 3.05,
        read_timeout_s: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url.rstrip("/") + BATCH_PATH
        self._timeout = (connect_timeout_s, read_timeout_s)
        self._session = session or requests.Session()
        self._session.headers.update(
            {
                "User-Agent": f"{SDK_NAME}/{SDK_VERSION}",
                "Accept": "application/json",
                # Free ngrok tunnels answer browsers with an HTML warning page unless told not to.
                "ngrok-skip-browser-warning": "1",
            }
        )
        if api_key:
            self._session.headers["Authorization"] = f"Bearer {api_key}"

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def after_fork_in_child(self) -> None:
        """In a child made by ``os.fork()``: a session of its own, with the same headers. The
        inherited one shares pooled sockets with the parent, so it is dropped, not closed."""
        inherited = self._session
        self._session = requests.Session()
        self._session.headers.update(inherited.headers)

    def _post(
        self, reports: Sequence[dict[str, Any]], timeout: tuple[float, float]
    ) -> requests.Response:
        body = json.dumps({"reports": list(reports)}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if len(body) >= GZIP_MIN_BYTES:
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        return self._session.post(self.url, data=body, headers=headers, timeout=timeout)

    def send(
        self, reports: Sequence[dict[str, Any]], *, deadline: float | None = None
    ) -> SendOutcome:
        """POST ``reports`` once (halving on 413/422); never raises for network or HTTP errors.

        ``deadline`` (a ``time.monotonic()`` value) caps the connect and read timeouts of each
        POST, so a caller that must return by then (a reporter being stopped) does.
        """
        outcome = SendOutcome()
        if reports:
            self._send_into(list(reports), outcome, deadline)
        return outcome

    def _send_into(
        self, reports: list[dict[str, Any]], outcome: SendOutcome, deadline: float | None
    ) -> None:
        timeout = self._timeout
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                outcome.retry.extend(reports)
                outcome.error = outcome.error or "no time left to send before the deadline"
                return
            timeout = (min(timeout[0], left), min(timeout[1], left))
        try:
            response = self._post(reports, timeout)
        except requests.RequestException as error:
            outcome.retry.extend(reports)
            outcome.error = f"{type(error).__name__}: {error}"
            return
        status = response.status_code
        if status >= 500 or (status not in SPLITTABLE_STATUS and not _from_the_api(response)):
            # A server error, or a tunnel, proxy or captive portal answering with a page of its
            # own: nothing says the reports reached the API, so keep them.
            outcome.retry.extend(reports)
            outcome.auth_failed = status in AUTH_STATUS
            outcome.status = status
            outcome.error = (
                f"HTTP {status}: {_detail(response)}"
                if _from_the_api(response)
                else f"HTTP {status} that is not the CA4 API's answer "
                f"({response.headers.get('Content-Type') or 'no Content-Type'}): "
                f"{response.text[:200]}"
            )
            outcome.retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
            return
        if status in (200, 202, 207) or (status == 422 and _has_results(response)):
            self._read_results(reports, response, outcome)
        elif status in SPLITTABLE_STATUS and len(reports) > 1:
            middle = len(reports) // 2
            self._send_into(reports[:middle], outcome, deadline)
            self._send_into(reports[middle:], outcome, deadline)
        elif status in RETRYABLE_STATUS or status in AUTH_STATUS:
            outcome.retry.extend(reports)
            outcome.error = f"HTTP {status}: {_detail(response)}"
            outcome.retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
            outcome.auth_failed = status in AUTH_STATUS
            outcome.rate_limited = status == 429
            outcome.status = status
        else:
            reason = f"HTTP {status}: {_detail(response)}"
            outcome.rejected.extend((str(report["event_id"]), reason) for report in reports)

    @staticmethod
    def _read_results(
        reports: list[dict[str, Any]], response: requests.Response, outcome: SendOutcome
    ) -> None:
        try:
            results = response.json()["results"]
            by_index = {int(item["index"]): item for item in results}
        except (ValueError, KeyError, TypeError, ArithmeticError, RecursionError):
            # Whatever the edge answered (an index of 1e999, results nested 100,000 deep)
            # reads as results that cannot be read, never as an error of the sending thread.
            if response.status_code == 422:  # results that can't be read: refused all the same
                reason = f"HTTP 422: {_detail(response)}"
                outcome.rejected.extend((str(report["event_id"]), reason) for report in reports)
                return
            # A 2xx without per-item results still means the whole batch was taken.
            outcome.accepted.extend(str(report["event_id"]) for report in reports)
            return
        for index, report in enumerate(reports):
            item = by_index.get(index)
            event_id = str(report["event_id"])
            if item is None:
                outcome.retry.append(report)
                outcome.error = outcome.error or "report missing from the batch response"
            elif item.get("status") == "accepted":
                outcome.accepted.append(event_id)
            elif item.get("status") == "rejected" and _only_session_forbidden(item):
                outcome.session_forbidden.append(report)
            elif item.get("status") == "rejected":
                outcome.rejected.append((event_id, json.dumps(item.get("errors"))[:500]))
            else:
                outcome.retry.append(report)
                outcome.error = outcome.error or f"report {index}: {item.get('status')}"


def _has_results(response: requests.Response) -> bool:
    """Whether ``response`` is a batch answer with a result per report (a ``422`` is one when
    every report was rejected; otherwise the request as a whole was unusable)."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("results"), list)


def _only_session_forbidden(item: dict[str, Any]) -> bool:
    """Whether a rejected result's only reason is its session's owner (the report is valid)."""
    errors = item.get("errors")
    return (
        isinstance(errors, list)
        and bool(errors)
        and all(isinstance(e, dict) and e.get("type") == SESSION_FORBIDDEN for e in errors)
    )


def _from_the_api(response: requests.Response) -> bool:
    """Whether ``response`` is JSON, as every answer of the CA4 API is."""
    media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    return media_type == "application/json"


def _detail(response: requests.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = detail if isinstance(detail, str) else json.dumps(detail) if detail else response.text
    return text[:300]
