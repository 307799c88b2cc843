"""Reading the edge's answer: only the codings asked for, never inflated past the cap on any
urllib3, and a reading timer that can neither fail to start the send nor raise on its thread."""

from __future__ import annotations

import json
import threading
import tracemalloc
import uuid
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import requests
import requests.utils
from ca4_sdk import transport as transport_module
from ca4_sdk.transport import SendOutcome, Transport, answer_cap

from tests.unit.sdk.stub_api import stub_api

T = TypeVar("T")

GZIP, ZLIB, RAW_DEFLATE = 16 + zlib.MAX_WBITS, zlib.MAX_WBITS, -zlib.MAX_WBITS
"""``wbits`` for zlib: a gzip member, zlib-wrapped deflate, raw deflate."""
MIB = 1024 * 1024
MEMORY_OVER_CAP = MIB
"""What reading an answer may hold at its peak beyond the cap on its decoded bytes."""


def _reports(count: int) -> list[dict[str, Any]]:
    return [{"event_id": str(uuid.uuid4())} for _ in range(count)]


def _results(reports: list[dict[str, Any]]) -> bytes:
    """The processor's answer accepting every report."""
    results = [{"index": index, "status": "accepted"} for index in range(len(reports))]
    return json.dumps({"accepted": len(reports), "rejected": 0, "results": results}).encode()


def _compressed(data: bytes, wbits: int, *, spaces: int = 0) -> bytes:
    """``data`` then ``spaces`` spaces (made a MiB at a time: a bomb is never whole here)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    parts = [compressor.compress(data)]
    block = b" " * MIB
    for start in range(0, spaces, MIB):
        parts.append(compressor.compress(block[: min(MIB, spaces - start)]))
    parts.append(compressor.flush())
    return b"".join(parts)


def _peak_bytes(call: Callable[[], T]) -> tuple[T, int]:
    """What ``call`` returns, and the most memory Python held at once while it ran (beyond
    what it held before), every thread's, the stub server's included."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = call()
        return result, tracemalloc.get_traced_memory()[1] - before
    finally:
        if not tracing:
            tracemalloc.stop()


def _send_answered(
    answer: bytes, coding: str | None, reports: list[dict[str, Any]], *, chunked: bool = False
) -> tuple[SendOutcome, int]:
    """Send ``reports`` to a stub answering 202 with ``answer`` as it is, in ``coding``: the
    outcome and the peak memory of the send."""
    with stub_api() as (url, state):
        state.raw_answer, state.content_encoding, state.chunked = answer, coding, chunked
        transport = Transport(url, "k")
        return _peak_bytes(lambda: transport.send(reports))


@pytest.mark.parametrize(
    ("coding", "wbits", "chunked"),
    [
        (None, None, False),
        ("identity", None, True),
        ("gzip", GZIP, False),
        ("gzip", GZIP, True),
        ("x-gzip", GZIP, False),
        ("GZip", GZIP, False),
        ("deflate", ZLIB, False),
        ("deflate", ZLIB, True),
        ("deflate", RAW_DEFLATE, False),
        ("deflate", RAW_DEFLATE, True),
    ],
    ids=[
        "none",
        "identity, chunked",
        "gzip",
        "gzip, chunked",
        "x-gzip",
        "GZip",
        "zlib deflate",
        "zlib deflate, chunked",
        "raw deflate",
        "raw deflate, chunked",
    ],
)
def test_answers_in_the_codings_asked_for_are_read(
    coding: str | None, wbits: int | None, chunked: bool
) -> None:
    """Servers differ on ``deflate``: zlib-wrapped (as RFC 9110 says) or raw; both are read.
    The padding makes a chunked answer come in many chunks."""
    reports = _reports(3)
    answer = _results(reports) + b" " * 64 * 1024
    if wbits is not None:
        answer = _compressed(answer, wbits)
    outcome, _ = _send_answered(answer, coding, reports, chunked=chunked)
    assert (outcome.accepted, outcome.retry, outcome.error) == (
        [report["event_id"] for report in reports],
        [],
        None,
    )


def test_the_connection_is_kept_for_the_next_batch_once_an_answer_is_read_whole() -> None:
    reports = _reports(2)
    with stub_api() as (url, state):
        state.chunked, state.gzip_answer = True, True
        transport = Transport(url, "k")
        outcomes = [transport.send(reports), transport.send(reports)]
    assert [len(outcome.accepted) for outcome in outcomes] == [2, 2]
    assert state.requests[0]["connection"] == state.requests[1]["connection"]


@pytest.mark.parametrize(
    ("coding", "wbits", "chunked"),
    [
        ("gzip", GZIP, False),
        ("gzip", GZIP, True),
        ("deflate", ZLIB, False),
        ("deflate", RAW_DEFLATE, False),
    ],
    ids=["gzip", "gzip, chunked", "zlib deflate", "raw deflate"],
)
def test_a_bomb_is_inflated_no_further_than_the_cap(coding: str, wbits: int, chunked: bool) -> None:
    """About 16 KiB on the wire, 16 MiB inflated: urllib3 before 2.6 inflated each read whole
    (a thousand times what it read) before the transport could count it."""
    reports = _reports(2)
    bomb = _compressed(_results(reports), wbits, spaces=16 * MIB)
    outcome, peak = _send_answered(bomb, coding, reports, chunked=chunked)
    assert (outcome.retry, outcome.accepted) == (reports, [])
    assert outcome.error == f"HTTP 202: answer larger than {answer_cap(2)} bytes; not read"
    assert peak < answer_cap(2) + MEMORY_OVER_CAP, f"peak {peak / MIB:.1f} MiB"


def test_chained_codings_are_not_read_however_little_they_send() -> None:
    """A few hundred bytes in ``gzip, gzip``, 64 MiB inside (594 bytes held 256 MiB): urllib3
    before 2.6 inflated it whole, each coding multiplying the other's ratio, peak memory as
    large. Only one coding is undone."""
    reports = _reports(2)
    bomb = _compressed(_compressed(_results(reports), GZIP, spaces=64 * MIB), GZIP)
    assert len(bomb) < 1024
    outcome, peak = _send_answered(bomb, "gzip, gzip", reports)
    assert (outcome.retry, outcome.accepted, outcome.status) == (reports, [], 202)
    assert outcome.error == (
        "HTTP 202: answer in Content-Encoding 'gzip, gzip', not gzip or deflate; not read"
    )
    assert peak < answer_cap(2) + MEMORY_OVER_CAP, f"peak {peak / MIB:.1f} MiB"


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, identity, br"])
def test_an_answer_in_a_coding_not_asked_for_is_not_read(coding: str) -> None:
    """Read as it came (``br`` without the brotli package), a 2xx whose bytes are not JSON was
    the API taking the whole batch: every report was counted as accepted and dropped."""
    reports = _reports(2)
    outcome, _ = _send_answered(b"\x1b\x0f\x00\xf8\xa5\x02\x00\x00", coding, reports)
    assert (outcome.retry, outcome.accepted, outcome.status) == (reports, [], 202)
    assert outcome.error == (
        f"HTTP 202: answer in Content-Encoding {coding!r}, not gzip or deflate; not read"
    )


def test_an_answer_whose_gzip_is_broken_is_not_read() -> None:
    reports = _reports(1)
    outcome, _ = _send_answered(b"\x1f\x8b\x08\x00not gzip at all", "gzip", reports)
    assert (outcome.retry, outcome.accepted) == (reports, [])
    assert outcome.error is not None
    assert outcome.error.startswith("HTTP 202: answer not valid gzip (")
    assert outcome.error.endswith("); not read")


def test_only_gzip_and_deflate_are_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests asks for ``br`` and ``zstd`` too where the brotli or zstandard packages are
    installed: an edge would then answer in a coding the transport does not read."""
    monkeypatch.setattr(requests.utils, "DEFAULT_ACCEPT_ENCODING", "gzip, deflate, br, zstd")
    with stub_api() as (url, state):
        Transport(url, "k").send(_reports(1))
        Transport(url, "k", session=requests.Session()).send(_reports(1))
    assert [r["headers"]["Accept-Encoding"] for r in state.requests] == ["gzip, deflate"] * 2


@pytest.mark.parametrize("wbits", [GZIP, ZLIB, RAW_DEFLATE], ids=["gzip", "zlib", "raw"])
def test_a_coding_fed_a_byte_at_a_time_is_undone_whole(wbits: int) -> None:
    """Raw or zlib-wrapped deflate is told apart by its first two bytes, whichever reads they
    come in; gzip's later members are read too."""
    text = b'{"accepted": 1}' + b" " * 100_000
    coding = "gzip" if wbits == GZIP else "deflate"
    encoded = _compressed(text, wbits)
    if wbits == GZIP:
        text, encoded = text * 2, encoded * 2
    decoder = transport_module._Decoder.for_coding(coding)
    assert decoder is not None
    out = bytearray()
    for byte in encoded:
        decoder.feed(bytes((byte,)))
        while piece := decoder.take(1000):
            assert len(piece) <= 1000
            out += piece
    assert bytes(out) == text


def test_the_answer_is_read_when_no_timer_thread_can_be_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python 3.12.0 and 3.12.1 start no thread at interpreter shutdown, where the exit flush
    runs: ``RuntimeError`` escaped send() and the final flush left every report spooled. The
    deadline is then checked after each read only."""

    def refuse(_self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    reports = _reports(2)
    with stub_api() as (url, _state):
        transport = Transport(url, "k")
        monkeypatch.setattr(threading.Timer, "start", refuse)
        outcome = transport.send(reports)
    assert outcome.accepted == [report["event_id"] for report in reports]
    assert (outcome.retry, outcome.error) == ([], None)


def _without_urllib3_shutdown(monkeypatch: pytest.MonkeyPatch, raw: Any) -> None:
    """As on urllib3 before 2.3, which has no ``HTTPResponse.shutdown``."""
    for cls in type(raw).__mro__:
        if "shutdown" in vars(cls):
            monkeypatch.delattr(cls, "shutdown")


def test_stopping_a_read_that_already_ended_raises_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The timer may fire after the body was read whole, before reading is marked finished:
    http.client has closed its file by then, and urllib3 before 2.3 raised AttributeError on
    the timer's thread (a traceback printed in the notebook)."""
    with stub_api() as (url, _state):
        response = requests.post(f"{url}/v1/metadata/batch", json={"reports": []}, stream=True)
        assert response.content
    _without_urllib3_shutdown(monkeypatch, response.raw)
    transport_module._stop_reading(response.raw)
    response.close()
    transport_module._stop_reading(response.raw)


class _Raw:
    """A raw response whose every method raises what a closed or odd one might."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def shutdown(self) -> None:
        raise self.error

    def fileno(self) -> int:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [AttributeError("'NoneType' object has no attribute 'fileno'"), TypeError("odd"), OSError()],
    ids=["AttributeError", "TypeError", "OSError"],
)
def test_the_reading_timer_never_raises(error: Exception) -> None:
    transport_module._stop_reading(_Raw(error))
    transport_module._shut_for_reading(_Raw(error))
