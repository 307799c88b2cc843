"""The table of bad requests: each must get the right 4xx, a clear message, and publish nothing.

Shared by the unit test (fake publisher) and the integration test (real Kafka topic stays empty).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from tests.support.reports import make_report

VALID_KEY = "test-key-7f3c2a9d1e"
"""The only key the table's app accepts (the dev key is not configured there)."""
KEY_HASHES = f"tests:{hashlib.sha256(VALID_KEY.encode()).hexdigest()}"
MAX_BODY_BYTES = 1024 * 1024
"""The table's app caps bodies at 1 MiB, so the 20 MB cases stay cheap."""
MAX_BODY_WEIGHT = 3 * MAX_BODY_BYTES
"""And their weight at 3 MiB: as the defaults, about three times the bytes."""


@dataclass(frozen=True)
class BadRequest:
    """One bad request and what the API must answer."""

    body: bytes
    status: int
    expect: str
    """A substring of the error message, or of one error's ``loc`` joined with dots."""
    path: str = "/v1/metadata"
    headers: dict[str, str] = field(default_factory=dict)
    authorization: str | None = f"Bearer {VALID_KEY}"
    content_type: str | None = "application/json"
    stream: bool = False
    """Send without Content-Length (chunked), so only counting the stream can catch it."""

    def request_headers(self) -> dict[str, str]:
        """The HTTP headers to send."""
        headers = dict(self.headers)
        if self.authorization is not None:
            headers["Authorization"] = self.authorization
        if self.content_type is not None:
            headers["Content-Type"] = self.content_type
        return headers


def _json(report: dict[str, Any]) -> bytes:
    return json.dumps(report).encode()


def _with_gpu(**fields: Any) -> bytes:
    report = make_report()
    report["payload"]["gpus"][0].update(fields)
    return _json(report)


def _with_host(**fields: Any) -> bytes:
    report = make_report()
    report["payload"]["host"].update(fields)
    return _json(report)


def _required_fields_only(gpus: int = 64, processes: int = 256) -> dict[str, Any]:
    """A valid report as small on the wire as the schema allows for its many objects, and as
    large decoded (each object a model with every field): 42 times its bytes."""
    report = make_report()
    report["payload"]["gpus"] = [
        {
            "uuid": f"GPU-{index}",
            "index": index,
            "name": "H100",
            "processes": [{"pid": pid} for pid in range(1, processes + 1)],
        }
        for index in range(gpus)
    ]
    return report


def _nested(depth: int) -> bytes:
    return _json(make_report()).replace(
        b'"labels": {', b'"labels": {"deep": ' + b"[" * depth + b"]" * depth + b", ", 1
    )


_VALID = _json(make_report())
_BOMB = gzip.compress(b" " * (50 * 1024 * 1024), compresslevel=9)
_TWENTY_MB = b'{"padding": "' + b"x" * (20 * 1024 * 1024) + b'"}'

BAD_REQUESTS: dict[str, BadRequest] = {
    "string for integer": BadRequest(_with_host(cpu_count="2"), 422, "payload.host.cpu_count"),
    "string for number": BadRequest(_with_gpu(memory_used_mib="12"), 422, "memory_used_mib"),
    "bool for integer": BadRequest(_with_gpu(index=True), 422, "gpus.0.index"),
    "NaN": BadRequest(
        _VALID.replace(b'"power_draw_w": 63.4', b'"power_draw_w": NaN'),
        422,
        "power_draw_w: Input should be a finite number",
    ),
    "Infinity": BadRequest(
        _VALID.replace(b'"power_draw_w": 63.4', b'"power_draw_w": Infinity'), 422, "finite number"
    ),
    "huge number": BadRequest(_with_gpu(power_draw_w=1e300), 422, "power_draw_w"),
    "negative memory": BadRequest(_with_gpu(memory_used_mib=-1.0), 422, "memory_used_mib"),
    "percent over 100": BadRequest(_with_gpu(utilization_gpu_pct=101), 422, "utilization_gpu_pct"),
    "oversized string": BadRequest(_with_gpu(name="T" * 5000), 422, "gpus.0.name"),
    "oversized list": BadRequest(_json(make_report(gpus=65)), 422, "payload.gpus"),
    "too many processes": BadRequest(
        _with_gpu(processes=[{"pid": i} for i in range(257)]), 422, "processes"
    ),
    "deep nesting": BadRequest(_nested(5000), 422, "recursion limit"),
    "20 MB body": BadRequest(_TWENTY_MB, 413, "limit"),
    "20 MB body without Content-Length": BadRequest(_TWENTY_MB, 413, "limit", stream=True),
    "gzip bomb": BadRequest(_BOMB, 413, "decompressed", headers={"Content-Encoding": "gzip"}),
    "broken gzip": BadRequest(
        b"\x1f\x8b not gzip", 400, "gzip", headers={"Content-Encoding": "gzip"}
    ),
    "unknown encoding": BadRequest(
        _VALID, 415, "Content-Encoding", headers={"Content-Encoding": "br"}
    ),
    "invalid JSON": BadRequest(b'{"event_id": ', 422, "Invalid JSON"),
    "JSON array, not object": BadRequest(b"[1, 2]", 422, "should be an object"),
    "empty body": BadRequest(b"", 422, "Invalid JSON"),
    "wrong content type": BadRequest(_VALID, 415, "application/json", content_type="text/plain"),
    "form content type": BadRequest(
        b"a=b", 415, "application/json", content_type="application/x-www-form-urlencoded"
    ),
    "no content type": BadRequest(_VALID, 415, "Content-Type", content_type=None),
    "bidi override": BadRequest(
        _with_host(hostname="host\u202eevil"), 422, "payload.host.hostname"
    ),
    "NUL character": BadRequest(_with_gpu(name="Tesla\u0000T4"), 422, "gpus.0.name"),
    "lone surrogate": BadRequest(
        _VALID.replace(b'"hostname": "test-host"', b'"hostname": "\\ud800"'), 422, "Invalid JSON"
    ),
    "unassigned code point": BadRequest(
        _with_host(hostname="host\uffff"), 422, "disallowed character"
    ),
    "$where label key": BadRequest(
        _json(make_report(labels={"$where": "1"})), 422, "labels.$where"
    ),
    "dotted label key": BadRequest(_json(make_report(labels={"a.b": "1"})), 422, "labels.a.b"),
    "operator in session id": BadRequest(_json(make_report(session_id="$gt")), 422, "session_id"),
    "missing field": BadRequest(
        _json({k: v for k, v in make_report().items() if k != "event_id"}), 422, "event_id"
    ),
    "unknown field": BadRequest(_json(make_report(extra_field=1)), 422, "extra_field"),
    "client-set received_at": BadRequest(
        _json(make_report(received_at="2025-01-01T00:00:00Z")), 422, "received_at"
    ),
    "naive timestamp": BadRequest(
        _json(make_report(occurred_at="2025-01-01T00:00:00")), 422, "occurred_at"
    ),
    "future timestamp": BadRequest(
        _json(make_report(occurred_at="2999-01-01T00:00:00Z")), 422, "future"
    ),
    "year 1 east of UTC": BadRequest(
        _json(make_report(occurred_at="0001-01-01T00:00:00+01:00")),
        422,
        "occurred_at: Value error, occurred_at is outside the range UTC can represent",
    ),
    "year 1 in UTC": BadRequest(
        _json(make_report(occurred_at="0001-01-01T00:00:00Z")),
        422,
        "occurred_at: Value error, occurred_at is before 2000-01-01; check the client clock",
    ),
    "clock reset to the epoch": BadRequest(
        _json(make_report(occurred_at="1970-01-01T00:00:00Z")), 422, "before 2000-01-01"
    ),
    "year 9999 west of UTC": BadRequest(
        _json(make_report(occurred_at="9999-12-31T23:00:00-05:00")), 422, "occurred_at"
    ),
    "year 1 east of UTC in a batch": BadRequest(
        _json({"reports": [make_report(occurred_at="0001-01-01T00:00:00+01:00")]}),
        422,
        "reports.0.occurred_at",
        path="/v1/metadata/batch",
    ),
    "400-digit integer": BadRequest(
        _VALID.replace(b'"cpu_count": 2', b'"cpu_count": ' + b"9" * 400), 422, "cpu_count"
    ),
    "5000-digit integer": BadRequest(
        _VALID.replace(b'"cpu_count": 2', b'"cpu_count": ' + b"9" * 5000), 422, "out of range"
    ),
    "400-digit integer in a batch": BadRequest(
        b'{"reports": [' + _VALID.replace(b'"cpu_count": 2', b'"cpu_count": ' + b"9" * 400) + b"]}",
        422,
        "reports.0.payload.host.cpu_count",
        path="/v1/metadata/batch",
    ),
    "huge integer for a float": BadRequest(
        _VALID.replace(b'"power_draw_w": 63.4', b'"power_draw_w": 1' + b"0" * 400),
        422,
        "power_draw_w",
    ),
    "future schema version": BadRequest(
        _json(make_report(schema_version=2)), 422, "schema_version"
    ),
    "missing key": BadRequest(_VALID, 401, "missing API key", authorization=None),
    "wrong key": BadRequest(_VALID, 401, "invalid or revoked", authorization="Bearer nope"),
    "dev key when keys are configured": BadRequest(
        _VALID, 401, "invalid or revoked", authorization="Bearer ca4-dev-key"
    ),
    "basic auth": BadRequest(_VALID, 401, "Bearer", authorization=f"Basic {VALID_KEY}"),
    "batch over the cap": BadRequest(
        _json({"reports": [make_report() for _ in range(501)]}),
        422,
        "at most 500",
        path="/v1/metadata/batch",
    ),
    "batch of reports of many small objects": BadRequest(
        _json({"reports": [_required_fields_only() for _ in range(4)]}),
        413,
        "weighs",
        path="/v1/metadata/batch",
    ),
    "batch of a report of empty arrays": BadRequest(
        _json({"reports": [{"x": [[] for _ in range(150_000)]}]}),
        413,
        "weighs",
        path="/v1/metadata/batch",
    ),
    "report of short strings without its required fields": BadRequest(
        _json({"payload": {"gpus": [{"x": [f"{index:x}" for index in range(80_000)]}]}}),
        413,
        "weighs",
    ),
    "heavy report repeating a key": BadRequest(
        b'{"payload":{"gpus":[{"mig":{"x":[' + b",".join([b"null"] * 70_000) + b'],"x":0}}]}}',
        422,
        "duplicate key",
    ),
    "batch without reports": BadRequest(b"{}", 422, "body.reports", path="/v1/metadata/batch"),
    "batch of zero": BadRequest(b'{"reports": []}', 422, "too_short", path="/v1/metadata/batch"),
    "batch as bare list": BadRequest(
        _json([make_report()]), 422, "should be an object", path="/v1/metadata/batch"
    ),
    "batch all invalid": BadRequest(
        _json({"reports": [make_report(session_id="$x"), make_report(labels={"a.b": "c"})]}),
        422,
        "session_id",
        path="/v1/metadata/batch",
    ),
}


def error_text(body: Any) -> str:
    """Everything a person would read in an error body, to search for the expected words."""
    if isinstance(body.get("detail"), str):
        return str(body["detail"])
    items = body.get("detail") or [
        error for result in body.get("results", []) for error in result.get("errors", [])
    ]
    return " | ".join(
        f"{'.'.join(map(str, item['loc']))}: {item['msg']} ({item['type']})" for item in items
    )
