"""Refused keys in the log: by reason, at most one line per interval each."""

from __future__ import annotations

import pytest
import structlog
from ca4_auth import http
from ca4_auth.http import INVALID_KEY, MISSING_KEY, RejectionLog, authorize
from ca4_auth.keys import ApiKeyRing, Scope
from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials

from tests.support.keys import key_entry


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_bad_keys_writes_one_line_per_reason_and_interval() -> None:
    """Anyone can send a bad key: a line per request let an anonymous flood write to the log
    (and Loki) as fast as it sent, about a fifth of each refusal's CPU."""
    clock = Clock()
    rejections = RejectionLog(interval_s=10.0, clock=clock)
    with structlog.testing.capture_logs() as lines:
        for _ in range(1000):
            rejections.refused(INVALID_KEY)
        rejections.refused(MISSING_KEY)
        clock.now += 9.9
        rejections.refused(INVALID_KEY)
        clock.now += 0.2
        rejections.refused(INVALID_KEY)
        rejections.refused(INVALID_KEY)
    assert lines == [
        {"event": "auth.rejected", "reason": INVALID_KEY, "log_level": "warning"},
        {"event": "auth.rejected", "reason": MISSING_KEY, "log_level": "warning"},
        {
            "event": "auth.rejected",
            "reason": INVALID_KEY,
            "also_refused_since_last_line": 1000,
            "log_level": "warning",
        },
    ]


def test_bad_keys_sent_to_a_service_are_logged_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "REJECTIONS", RejectionLog())
    ring = ApiKeyRing(
        inline_hashes=key_entry("a", "good-key", "tenant-a", "write"), keys_file=None, dev_key=False
    )
    with structlog.testing.capture_logs() as lines:
        for attempt in range(100):
            bad = HTTPAuthorizationCredentials(scheme="Bearer", credentials=f"guess-{attempt}")
            with pytest.raises(HTTPException):
                authorize(ring, bad, Scope.READ)
    assert [line["reason"] for line in lines] == [INVALID_KEY]
