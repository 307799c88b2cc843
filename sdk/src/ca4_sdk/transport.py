"""HTTP delivery of report batches to the processor, and the retry timing around it.

``requests`` only (Colab ships it). One call to :meth:`Transport.send` is one POST to
``/v1/metadata/batch``; it never sleeps and never raises for network trouble: it says which
reports were accepted, which the server refused for good, and which should be tried again and
when. Reports are sent as already-built dicts, so a retried report keeps its ``event_id``.

An answer is read only so far: up to a cap on its decoded bytes that follows from what the
processor can answer for the batch, and by a deadline on the whole answer. What an edge in the
middle (a proxy, anyone on the path of an ``http://`` URL) sends past either is not read. Answers
are asked for in gzip or deflate, and the transport undoes those itself, never inflating past
the cap whatever urllib3 does; one in any other coding (``br``, ``zstd``, codings chained) is
not read either.

A redirect is never followed: ``requests`` would turn the POST into a GET after a ``301`` or
``302`` (which the API refuses for good) and drop the key on the way to another host or port
after a ``307`` or ``308``. It is a setup error (``url`` is not the edge's own URL): the reports
are kept, and the error names the URL to use instead.
"""

from __future__ import annotations

import contextlib
import email.utils
import gzip
import html
import json
import logging
import random
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import urllib3.exceptions

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
ANSWER_FLOOR_BYTES = 1024 * 1024
"""The cap on an answer's decoded bytes before the allowance per report: room for any answer
about the request as a whole (a ``413``'s message, a ``422`` listing its 101 errors at most,
a proxy's error page)."""
ANSWER_BYTES_PER_REPORT = 32 * 1024
"""Added to the cap for each report sent. The processor's result for a report is about 180
bytes when accepted (its receipt) and about 12 KiB at most when rejected (100 errors, then one
counting the rest); this leaves room for longer field paths and messages. The cap is then
about 4.1 MiB for the reporter's batches of 100, 17 MiB for the processor's largest (500)."""
ANSWER_WITHIN_S = 60.0
"""The deadline on reading an answer's body when the caller gives none (or a later one): the
read timeout starts again with each byte, so an edge sending one now and then would hold the
sending thread for good. Answers are kilobytes, a few MiB at most: a minute is plenty on a
slow link. (The status line and headers come before: only the read timeout bounds them.)"""
NGROK_ENDPOINT_GONE = frozenset({"ERR_NGROK_3200"})
"""ngrok's code for an endpoint that is offline: no agent serves that URL (now, or any more)."""
_QUOTED_CHARS = 200
"""At most this much of a page, a title or a ``Location`` is quoted in an error."""
_SYSTEM_REASON = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")
"""The operating system's reason inside urllib3's connection errors (refused, unknown host)."""
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_TITLE_WITHIN_BYTES = 64 * 1024
"""A page's ``<title>`` is looked for in its first bytes only."""
_READ_CHUNK_BYTES = 16 * 1024
"""Bytes asked for per read, as they came: urllib3 undoes no coding (before 2.6 it inflates all
it reads at once, a thousand times this for gzip). The transport inflates them itself, this
much at a step at most, and never more than what is left of the cap."""
ACCEPTED_CODINGS = "gzip, deflate"
"""The ``Accept-Encoding`` sent, and the only codings read (``requests`` asks for ``br`` and
``zstd`` too where the brotli or zstandard packages are installed)."""


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
    isolated: list[str] = field(default_factory=list)
    """Event ids of reports that failed sent alone while other reports of the same call got
    through (:meth:`Transport.send_isolating`): each is likely what makes its batches fail."""

    @property
    def server_failed(self) -> bool:
        """Whether the reports in ``retry`` failed in a way one bad report can cause (a server
        error, or no answer), not for the key, the rate limit, the URL, or an API shedding
        load (a ``Retry-After`` says when to come back, whatever the reports)."""
        return bool(self.retry) and (
            not self.auth_failed
            and not self.rate_limited
            and self.retry_after_s is None
            and (self.status is None or self.status >= 500)
        )


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
                "Accept-Encoding": ACCEPTED_CODINGS,
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
        """In a child made by ``os.fork()``: a session of its own, with the same headers and
        response hooks. The inherited one shares pooled sockets with the parent, so it is
        dropped, not closed."""
        inherited = self._session
        self._session = requests.Session()
        self._session.headers.update(inherited.headers)
        self._session.hooks["response"] = _response_hooks(inherited)

    def _post(
        self, reports: Sequence[dict[str, Any]], timeout: tuple[float, float]
    ) -> requests.Response:
        body = json.dumps({"reports": list(reports)}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if len(body) >= GZIP_MIN_BYTES:
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        # Redirects are answers, never followed (see the module's docstring); streamed, so
        # that no answer is read but by _read_answer, within its cap and deadline. A request's
        # response hooks replace the session's: the caller's are passed on with ours.
        return self._session.post(
            self.url,
            data=body,
            headers=headers,
            timeout=timeout,
            stream=True,
            allow_redirects=False,
            hooks={"response": [*_response_hooks(self._session), _leave_redirect_unread]},
        )

    def send(
        self, reports: Sequence[dict[str, Any]], *, deadline: float | None = None
    ) -> SendOutcome:
        """POST ``reports`` once (halving on 413/422); never raises for network or HTTP errors.

        ``deadline`` (a ``time.monotonic()`` value) caps the connect and read timeouts of each
        POST and the reading of each answer, so a caller that must return by then (a reporter
        being stopped) does.

        An answer cut off (larger than its cap, not read by the deadline, or in a coding not
        read) keeps every report for retry, even a ``2xx``: a ``2xx`` read whole that lists no
        results is the API saying it took the batch, but one cut off is not known to be that
        API's answer at all, nor what it says of each report. Sending a report again is safe
        (the worker deduplicates by ``event_id``); dropping one is not.
        """
        outcome = SendOutcome()
        if reports:
            self._send_into(list(reports), outcome, deadline)
        return outcome

    def send_isolating(
        self, reports: Sequence[dict[str, Any]], *, deadline: float | None = None
    ) -> SendOutcome:
        """POST ``reports``, a batch that keeps failing whole with a server error, in halves,
        to isolate the report that makes it fail (as a 413 is split, but only on evidence).

        A half that fails is halved in turn as long as another half got through in this call,
        down to single reports: those that fail alone are listed in ``isolated``. When both
        halves of the batch fail, nothing points at one report (the API is down, or several
        reports fail): it stops there, after two POSTs. One bad report among ``n`` is isolated
        in about ``2 * log2(n)`` POSTs, and a call makes no more than that (plus two) whatever
        fails; a halving that fails for the key, the rate limit, the URL or an API shedding load
        (``Retry-After``), or the deadline, stops the call with what is left kept for retry.
        """
        if len(reports) < 2:
            return self.send(reports, deadline=deadline)
        outcome = SendOutcome()
        failed = [list(reports)]  # each known to fail as a whole
        first = True
        got_through, stopped = False, False
        posts_left = 2 * (len(reports) - 1).bit_length() + 2  # one bad report's isolation
        while failed:
            group = failed.pop(0)
            stopped = stopped or posts_left < 2
            if stopped or len(group) == 1 or not (first or got_through):
                outcome.retry.extend(group)
                if len(group) == 1 and got_through and not stopped:
                    outcome.isolated.append(str(group[0]["event_id"]))
                continue
            first = False
            middle = len(group) // 2
            for half in (group[:middle], group[middle:]):
                if stopped or (deadline is not None and time.monotonic() >= deadline):
                    stopped = True
                    outcome.retry.extend(half)
                    continue
                part = SendOutcome()
                posts_left -= 1
                self._send_into(half, part, deadline)
                outcome.accepted.extend(part.accepted)
                outcome.rejected.extend(part.rejected)
                outcome.session_forbidden.extend(part.session_forbidden)
                got_through = got_through or len(part.retry) < len(half)
                if not part.retry:
                    continue
                outcome.error = outcome.error or part.error
                outcome.status = outcome.status or part.status
                outcome.auth_failed = outcome.auth_failed or part.auth_failed
                outcome.rate_limited = outcome.rate_limited or part.rate_limited
                if part.retry_after_s is not None:
                    outcome.retry_after_s = max(outcome.retry_after_s or 0.0, part.retry_after_s)
                if part.server_failed:
                    failed.append(part.retry)
                else:
                    stopped = True
                    outcome.retry.extend(part.retry)
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
            with self._post(reports, timeout) as response:
                if 300 <= response.status_code < 400:
                    # Its body is left unread: nothing uses it.
                    outcome.retry.extend(reports)
                    outcome.status = response.status_code
                    outcome.error = f"HTTP {response.status_code}: " + self._redirect_error(
                        response.headers.get("Location")
                    )
                    return
                read = _read_answer(response, cap=answer_cap(len(reports)), deadline=deadline)
        except requests.RequestException as error:
            outcome.retry.extend(reports)
            outcome.error = f"{type(error).__name__}: {self._describe(error)}{self._hint(error)}"
            return
        if isinstance(read, _CutOff):
            outcome.retry.extend(reports)
            outcome.status = read.status
            outcome.error = f"HTTP {read.status}: {read.reason}"
            return
        answer = read
        status = answer.status_code
        if status >= 500 or (status not in SPLITTABLE_STATUS and not _from_the_api(answer)):
            # A server error, or a tunnel, proxy or captive portal answering with a page of its
            # own: nothing says the reports reached the API, so keep them.
            outcome.retry.extend(reports)
            outcome.auth_failed = status in AUTH_STATUS
            outcome.status = status
            outcome.error = (
                f"HTTP {status}: {_detail(answer)}"
                if _from_the_api(answer)
                else self._not_the_api_error(answer)
            )
            outcome.retry_after_s = parse_retry_after(answer.headers.get("Retry-After"))
            return
        if status in (200, 202, 207) or (status == 422 and _has_results(answer)):
            self._read_results(reports, answer, outcome)
        elif status in SPLITTABLE_STATUS and len(reports) > 1:
            middle = len(reports) // 2
            self._send_into(reports[:middle], outcome, deadline)
            self._send_into(reports[middle:], outcome, deadline)
        elif status in RETRYABLE_STATUS or status in AUTH_STATUS:
            outcome.retry.extend(reports)
            outcome.error = f"HTTP {status}: {_detail(answer)}"
            outcome.retry_after_s = parse_retry_after(answer.headers.get("Retry-After"))
            outcome.auth_failed = status in AUTH_STATUS
            outcome.rate_limited = status == 429
            outcome.status = status
        else:
            reason = f"HTTP {status}: {_detail(answer)}"
            outcome.rejected.extend((str(report["event_id"]), reason) for report in reports)

    def _redirect_error(self, location: str | None) -> str:
        """What a redirect of the batch's POST says to fix: the ``url`` to use instead."""
        if not location:
            return "the edge redirects (with no Location): is url= the edge's base URL?"
        target = urljoin(self.url, _printable(location))
        parts = urlsplit(target)
        if parts.path.rstrip("/").endswith(BATCH_PATH):
            base_path = parts.path.rstrip("/")[: -len(BATCH_PATH)]
            base = urlunsplit((parts.scheme, parts.netloc, base_path, "", ""))
            use = f"use {_clipped(base)} as url="
        else:
            use = "use that URL as url="
        return f"the edge redirects to {_clipped(target)}: {use}"

    def _describe(self, error: requests.RequestException) -> str:
        """``error`` in a line a person reads: a connection that failed names the URL and the
        system's reason (``[Errno 111] Connection refused``) instead of urllib3's pool message,
        whose reason comes last, past where a summary cuts it."""
        reason = _SYSTEM_REASON.search(str(error))
        if (
            isinstance(error, requests.exceptions.ConnectionError)
            # A proxy's failure is not the edge's: the whole error names the proxy.
            and not isinstance(error, requests.exceptions.ProxyError)
            and reason is not None
        ):
            return f"cannot connect to {self.url}: {reason.group(0).rstrip()}"
        return str(error)

    def _hint(self, error: requests.RequestException) -> str:
        """What to check, for the errors a setup mistake gives (appended to the error)."""
        if isinstance(error, requests.exceptions.ProxyError):
            return "; check HTTPS_PROXY/HTTP_PROXY, or NO_PROXY for this host"
        text = str(error).lower()
        if (
            isinstance(error, requests.exceptions.SSLError)
            and self.url.lower().startswith("https://")
            and ("wrong_version_number" in text or "wrong version number" in text)
        ):
            return "; is the edge plain http? try http://"
        return ""

    def _not_the_api_error(self, answer: _Answer) -> str:
        """The error for a page that is not the API's (a tunnel's, a proxy's, a portal's): its
        ``ngrok-error-code`` and ``<title>`` when it has them, else its first characters."""
        status = answer.status_code
        media_type = answer.headers.get("Content-Type") or "no Content-Type"
        quoted = []
        ngrok_code = answer.headers.get("ngrok-error-code")
        if ngrok_code:
            quoted.append(f"ngrok-error-code {_clipped(_printable(ngrok_code))}")
        title = _title(answer)
        if title:
            quoted.append(f"title {title!r}")
        # In one line: a page's line breaks would split the log line that says what is wrong.
        one_line = _printable(" ".join(answer.text.split()))
        page = "; ".join(quoted) if quoted else one_line[:_QUOTED_CHARS]
        error = f"HTTP {status} that is not the CA4 API's answer ({media_type}): {page}"
        if ngrok_code and ngrok_code.strip().upper() in NGROK_ENDPOINT_GONE:
            # A free ngrok URL changes whenever the agent starts again: the old one is gone.
            error += (
                " (the ngrok URL is offline or changed: start ngrok, then set the URL it prints "
                "as CA4_EDGE_API_URL and make the Reporter again)"
            )
        elif status == 404 and self.url.lower().startswith("http://"):
            # A wrong port or path is the usual cause; an HTTPS-only ingress answers 404 too.
            error += " (is this the CA4 edge's URL? a wrong port or path, or an HTTPS-only edge)"
        return error

    @staticmethod
    def _read_results(reports: list[dict[str, Any]], answer: _Answer, outcome: SendOutcome) -> None:
        try:
            results = answer.json()["results"]
            by_index = {int(item["index"]): item for item in results}
        except (ValueError, KeyError, TypeError, ArithmeticError, RecursionError):
            # Whatever the edge answered (an index of 1e999, results nested 100,000 deep)
            # reads as results that cannot be read, never as an error of the sending thread.
            if answer.status_code == 422:  # results that can't be read: refused all the same
                reason = f"HTTP 422: {_detail(answer)}"
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


def answer_cap(reports: int) -> int:
    """The most decoded bytes read of the answer to a batch of ``reports``."""
    return ANSWER_FLOOR_BYTES + ANSWER_BYTES_PER_REPORT * reports


@dataclass(frozen=True)
class _Answer:
    """An answer read whole: what the helpers below look at."""

    status_code: int
    headers: Mapping[str, str]
    """Case-insensitive, as ``requests`` gives them."""
    body: bytes
    """Decoded (its gzip or deflate undone)."""
    encoding: str | None = None
    """The charset its ``Content-Type`` names (``requests``' reading of it)."""

    @cached_property
    def text(self) -> str:
        try:
            return self.body.decode(self.encoding or "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON (``ValueError`` when it is not), read as ``requests`` would."""
        return json.loads(self.text)


@dataclass(frozen=True)
class _CutOff:
    """An answer not read whole, and why."""

    status: int
    reason: str


def _response_hooks(session: requests.Session) -> list[Callable[..., Any]]:
    """``session``'s response hooks, as a list (a single callable is one too)."""
    hooks: Any = session.hooks.get("response") or []
    return [hooks] if callable(hooks) else list(hooks)


def _leave_redirect_unread(response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
    """Close a redirect unread. Even with ``allow_redirects=False``, ``requests`` reads a
    redirect's body whole (however large, however slowly it comes: no cap or deadline of
    ours applies) to prepare ``Response.next``; only its status and headers are used."""
    if response.is_redirect:
        response.close()


def _read_answer(
    response: requests.Response, *, cap: int, deadline: float | None
) -> _Answer | _CutOff:
    """Read ``response``'s body (decoded) up to ``cap`` bytes, by ``deadline`` or within
    :data:`ANSWER_WITHIN_S`, whichever comes first.

    Its bytes are read as they came and decoded by a :class:`_Decoder`, never more at a step
    than what is left of the cap; an answer in a coding it does not undo is not read. The
    deadline is checked after each read and kept by a :class:`_ReadTimer` too.
    """
    status = response.status_code
    coding = response.headers.get("Content-Encoding", "")
    decoder = _Decoder.for_coding(coding)
    if decoder is None:
        quoted = _clipped(_printable(coding))
        return _CutOff(
            status, f"answer in Content-Encoding {quoted!r}, not gzip or deflate; not read"
        )
    read_by = time.monotonic() + ANSWER_WITHIN_S
    late = f"answer not read within {ANSWER_WITHIN_S:g} s"
    if deadline is not None and deadline <= read_by:
        read_by, late = deadline, "answer not read within the deadline"
    timer = _ReadTimer(response.raw, read_by)
    try:
        read = _read_body(response.raw, decoder, cap=cap, read_by=read_by, late=late)
    except zlib.error as error:
        read = f"answer not valid {decoder.coding} ({error}); not read"
    except Exception:
        # A read the timer ended fails any way the socket and TLS layers like.
        if not timer.fired:
            raise
        read = late
    finally:
        timer.finish()
    if timer.fired:  # an answer without a length ends where the timer cut it
        read = late
    if isinstance(read, str):
        return _CutOff(status, read)
    return _Answer(status, response.headers, read, response.encoding)


def _read_body(raw: Any, decoder: _Decoder, *, cap: int, read_by: float, late: str) -> bytes | str:
    """The body of ``raw`` (urllib3's response) decoded, or why it was not read whole: larger
    than ``cap`` (as it came or decoded), or ``late`` (not read by ``read_by``)."""
    too_large = f"answer larger than {cap} bytes; not read"
    body = bytearray()
    received = 0
    for chunk in _raw_chunks(raw):
        received += len(chunk)
        if received > cap:  # however little it decodes to (a stream of empty gzip members)
            return too_large
        decoder.feed(chunk)
        while piece := decoder.take(min(_READ_CHUNK_BYTES, cap + 1 - len(body))):
            body += piece
            if len(body) > cap:
                return too_large
        if time.monotonic() >= read_by:
            return late
    return bytes(body)


def _raw_chunks(raw: Any) -> Iterator[bytes]:
    """The body of ``raw`` (urllib3's response) as it came, no coding undone, in reads of
    :data:`_READ_CHUNK_BYTES`; urllib3's errors raised as ``requests``' own, as
    ``Response.iter_content`` raises them."""
    try:
        yield from raw.stream(_READ_CHUNK_BYTES, decode_content=False)
    except urllib3.exceptions.ProtocolError as error:
        raise requests.exceptions.ChunkedEncodingError(error) from error
    except urllib3.exceptions.SSLError as error:
        raise requests.exceptions.SSLError(error) from error
    except urllib3.exceptions.HTTPError as error:  # ReadTimeoutError and the like
        raise requests.exceptions.ConnectionError(error) from error


class _ReadTimer:
    """Ends a read of ``raw`` (urllib3's response) still going at ``at`` (a
    ``time.monotonic()`` value) by shutting its socket for reading, unless reading has finished.

    A read waits for all the bytes it asked for, so one byte now and then holds it well past
    any deadline checked between reads. Where no thread can be started (Python 3.12.0 and
    3.12.1 start none at interpreter shutdown, where the reporter's last flush runs), only the
    checks between reads remain.
    """

    def __init__(self, raw: Any, at: float) -> None:
        self._raw = raw
        self._stopping = threading.Lock()
        self._finished = False
        self.fired = False
        """Whether it ended the read (what was read is then cut off)."""
        self._timer = threading.Timer(max(0.0, at - time.monotonic()), self._stop)
        self._timer.daemon = True
        with contextlib.suppress(RuntimeError):  # "can't create new thread at interpreter shutdown"
            self._timer.start()

    def _stop(self) -> None:
        with self._stopping:  # never once reading has finished: the socket may be another's
            if not self._finished:
                self.fired = True
                _stop_reading(self._raw)

    def finish(self) -> None:
        """Reading is over: the timer is not to touch the socket from now on."""
        with self._stopping:
            self._finished = True
        self._timer.cancel()


class _Decoder:
    """Undoes an answer's ``Content-Encoding`` a step at a time: :meth:`feed` it the bytes as
    they came, then :meth:`take` what they decode to, never more at once than asked for (zlib's
    ``max_length``), so that a bomb is inflated no further than the reader's cap."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        """``identity``, ``gzip`` or ``deflate``."""
        self._input = b""
        """Fed, not yet given to zlib (or taken, for ``identity``)."""
        self._inflater: Any = None
        """zlib's decompressor for the stream (gzip: the member) being read."""
        self._members = 0
        """Gzip members read whole."""
        self._ended = False
        """The stream has ended: bytes after it are dropped."""

    @classmethod
    def for_coding(cls, content_encoding: str) -> _Decoder | None:
        """The decoder for a ``Content-Encoding`` (None when it is not one undone here)."""
        codings = [coding.strip().lower() for coding in content_encoding.split(",")]
        codings = [coding for coding in codings if coding and coding != "identity"]
        if not codings:
            return cls("identity")
        if len(codings) > 1:
            return None  # chained: each coding multiplies the other's ratio
        coding = {"x-gzip": "gzip"}.get(codings[0], codings[0])
        return cls(coding) if coding in ("gzip", "deflate") else None

    def feed(self, data: bytes) -> None:
        """Give it more of the answer's bytes, as they came."""
        if not self._ended:
            self._input += data

    def take(self, most: int) -> bytes:
        """At most ``most`` (at least 1) decoded bytes; ``b""`` when it needs more fed first.
        Raises ``zlib.error`` for bytes that are not the coding's."""
        if self.coding == "identity":
            piece, self._input = self._input[:most], self._input[most:]
            return piece
        while self._input and not self._ended:
            if self._inflater is None:
                if self.coding == "deflate" and len(self._input) < 2:
                    return b""  # its first two bytes tell zlib-wrapped from raw deflate
                self._inflater = zlib.decompressobj(self._window_bits())
            try:
                inflated: bytes = self._inflater.decompress(self._input, most)
            except zlib.error:
                if not self._members:
                    raise
                self._ended, self._input = True, b""  # what follows a gzip member: ignored,
                return b""  # as urllib3 does (a server's padding)
            if self._inflater.eof:
                self._input, self._inflater = self._inflater.unused_data, None
                self._members += 1
                if self.coding == "deflate":  # only gzip has further members
                    self._ended, self._input = True, b""
            else:
                self._input = self._inflater.unconsumed_tail
            if inflated:
                return inflated
        return b""

    def _window_bits(self) -> int:
        """zlib's ``wbits`` for the stream: a gzip member, or deflate zlib-wrapped or raw
        (servers differ), told apart by whether its first two bytes are a zlib header."""
        if self.coding == "gzip":
            return 16 + zlib.MAX_WBITS
        first, second = self._input[0], self._input[1]
        wrapped = (
            first & 0x0F == zlib.DEFLATED and first >> 4 <= 7 and (first << 8 | second) % 31 == 0
        )
        return zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS


def _stop_reading(raw: Any) -> None:
    """End a read blocked on ``raw`` (urllib3's response) from another thread: shut its socket
    for reading, so the read returns (with what it has, or an error). Never raises: it runs on
    the timer's thread, where an exception is a traceback printed under the notebook's cell."""
    with contextlib.suppress(Exception):  # released to the pool, or closed: no read to stop
        try:
            raw.shutdown()  # urllib3 >= 2.3
        except (AttributeError, NotImplementedError, ValueError):
            _shut_for_reading(raw)  # an older urllib3, or a socket it did not note


def _shut_for_reading(raw: Any) -> None:
    """Shut ``raw``'s socket for reading through a duplicate of its descriptor (closing the
    duplicate leaves the socket open; shutting it down shuts the socket). Never raises: where
    the read has ended already, urllib3 before 2.3 raises ``AttributeError`` for the file
    http.client has closed, and a closed socket ``OSError``."""
    with (
        contextlib.suppress(Exception),
        socket.fromfd(raw.fileno(), socket.AF_INET, socket.SOCK_STREAM) as duplicate,
    ):
        duplicate.shutdown(socket.SHUT_RD)


def _has_results(answer: _Answer) -> bool:
    """Whether ``answer`` is a batch answer with a result per report (a ``422`` is one when
    every report was rejected; otherwise the request as a whole was unusable)."""
    try:
        body = answer.json()
    except (ValueError, RecursionError):
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


def _from_the_api(answer: _Answer) -> bool:
    """Whether ``answer`` is JSON, as every answer of the CA4 API is."""
    media_type = answer.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    return media_type == "application/json"


def _detail(answer: _Answer) -> str:
    try:
        detail = answer.json().get("detail")
    except (ValueError, AttributeError, RecursionError):
        detail = None
    text = detail if isinstance(detail, str) else json.dumps(detail) if detail else answer.text
    return text[:300]


def _title(answer: _Answer) -> str | None:
    """The ``<title>`` of an HTML page, unescaped, in one line (None without one)."""
    found = _TITLE.search(answer.body[:_TITLE_WITHIN_BYTES])
    if found is None:
        return None
    raw = found.group(1).decode(answer.encoding or "utf-8", errors="replace")
    title = " ".join(_printable(html.unescape(raw)).split())
    return _clipped(title) or None


def _printable(text: str) -> str:
    """``text`` without control characters (an edge's header or page, shown in a log line)."""
    return "".join(character for character in text if character.isprintable())


def _clipped(text: str) -> str:
    return text if len(text) <= _QUOTED_CHARS else text[: _QUOTED_CHARS - 3] + "..."
