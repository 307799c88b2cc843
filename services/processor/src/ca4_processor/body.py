"""Read a request body defensively: JSON only, size-capped on the wire and after gzip, and
weight-capped (what decoding it holds, valid or not).

FastAPI's own body parsing reads everything into memory first, so the ingest routes read the
stream here instead and stop at the first byte over the cap.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from typing import NamedTuple

from ca4_schemas import OBJECT_WEIGHT, STRING_WEIGHT, record_weight
from fastapi import HTTPException, Request, status

_GZIP_WINDOW = 16 + zlib.MAX_WBITS
"""zlib window bits that accept the gzip container."""
GUNZIP_SLICE = 256 * 1024
"""Bytes decompressed (and weighed, and paid for) at a time."""
ARRAY_WEIGHT = 64
"""Bytes a body's weight adds for each JSON array in it (:func:`body_weight`)."""
VALUE_WEIGHT = 32
"""Bytes a body's weight adds for each comma in it: each value after the first of an array or
object (:func:`body_weight`)."""


def body_weight(body: bytes) -> int:
    """What decoding ``body`` may hold, whether it validates or not: its record weight
    (:func:`ca4_schemas.record_weight`, what a valid one decodes to) plus
    :data:`ARRAY_WEIGHT` per JSON array and :data:`VALUE_WEIGHT` per comma.

    A body that fails validation can hold far more than one that passes: each pydantic error
    keeps its own copy of the value it names, and a report that lacks required fields is
    copied once per missing field. Copies are made of values, and a value can be two bytes
    (``[],`` or ``0,``), so the values count (``docs/architecture.md``, "A body is refused by
    its weight too", has the measurements). Commas inside strings count too: they only make a
    body weigh more.
    """
    return record_weight(body) + ARRAY_WEIGHT * body.count(b"[") + VALUE_WEIGHT * body.count(b",")


class JsonBody(NamedTuple):
    """A request's JSON bytes and their :func:`body_weight`."""

    data: bytes
    weight: int


async def read_json_body(
    request: Request,
    *,
    max_body_bytes: int,
    max_decompressed_bytes: int,
    max_body_weight: int,
    read_timeout_s: float,
    batch: bool,
    pay: Callable[[int], object],
) -> JsonBody:
    """The request body as JSON bytes, decompressed if ``Content-Encoding: gzip``.

    A gzip body is decompressed a slice at a time, and ``pay`` is called with the bytes
    decompressed so far after each slice (it raises to stop): a few kilobytes of gzip can
    decompress and weigh to megabytes, and that work, which goes by bytes, must cost its share
    of the rate limit whether the body is then accepted or refused, not the one token a request
    pays up front. The weight, which may be far more (what the body decodes to), is paid once
    the body is accepted, as a plain body's is; a plain body's bytes were paid for in bandwidth.

    Raises ``415`` for a non-JSON content type or unknown encoding, ``408`` when the body has
    not arrived within ``read_timeout_s``, and ``413`` when the body (declared or actual,
    compressed or decompressed) is over its cap, or weighs more than ``max_body_weight``
    (:func:`body_weight`: decoded, a body of many small values takes tens of times its bytes;
    the message says how to split a ``batch``).
    """
    _require_json_content_type(request)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in {"identity", "gzip"}:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"Content-Encoding {encoding!r} is not supported; send identity or gzip",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise _too_large(f"body of {declared} bytes is over the {max_body_bytes}-byte limit")

    received = bytearray()
    try:
        async with asyncio.timeout(read_timeout_s):
            async for chunk in request.stream():
                received += chunk
                if len(received) > max_body_bytes:
                    raise _too_large(f"body is over the {max_body_bytes}-byte limit")
    except TimeoutError:
        raise HTTPException(
            status.HTTP_408_REQUEST_TIMEOUT,
            f"body not received within {read_timeout_s:g} s ({len(received)} bytes arrived)",
        ) from None
    if encoding == "gzip":
        body, weight = _gunzip_paid(bytes(received), max_decompressed_bytes, pay)
    else:
        body = bytes(received)
        weight = body_weight(body)
    if weight > max_body_weight:
        raise _too_large(_too_heavy(len(body), weight, max_body_weight, batch=batch))
    return JsonBody(body, weight)


def _too_heavy(size: int, weight: int, limit: int, *, batch: bool) -> str:
    """Why a body is refused for its weight, in what its client controls: its JSON's bytes
    (a client cannot weigh a body, but a batch weighs about in proportion to its reports)."""
    ratio, fit = weight / size, limit * size // weight
    advice = (
        f"split the batch into at least {-(-weight // limit)} smaller ones"
        if batch
        else "send a smaller report"
    )
    return (
        f"body weighs {weight} bytes, over the {limit}-byte limit (its bytes plus "
        f"{OBJECT_WEIGHT} per JSON object, {ARRAY_WEIGHT} per array, {VALUE_WEIGHT} per comma "
        f"and {STRING_WEIGHT} per string: a bound on what decoding it holds); at {ratio:.1f} "
        f"times its {size} bytes of JSON (before gzip), at most {fit} bytes of such JSON fit: "
        f"{advice}"
    )


def _require_json_content_type(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type must be application/json, got {content_type or 'none'!r}",
        )


def _gunzip_paid(compressed: bytes, limit: int, pay: Callable[[int], object]) -> tuple[bytes, int]:
    """Decompress at most ``limit + 1`` bytes (a zip bomb is refused after ``limit``), a slice
    at a time, paying for the bytes decompressed so far after each slice, before anything is
    refused; the body and its weight."""
    decompressor = zlib.decompressobj(_GZIP_WINDOW)
    slices: list[bytes] = []
    size = weight = 0
    pending = compressed
    while True:
        try:
            piece = decompressor.decompress(pending, min(GUNZIP_SLICE, limit + 1 - size))
        except zlib.error as error:
            pay(size + GUNZIP_SLICE)  # the work up to the error: at most one more slice
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, f"body is not valid gzip: {error}"
            ) from error
        pending = decompressor.unconsumed_tail
        slices.append(piece)
        size += len(piece)
        pay(size)
        weight += body_weight(piece)
        if size > limit:
            raise _too_large(f"decompressed body is over the {limit}-byte limit")
        if decompressor.eof or not piece:
            break
    if not decompressor.eof:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "gzip body is truncated")
    return b"".join(slices), weight


def _too_large(message: str) -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, message)
