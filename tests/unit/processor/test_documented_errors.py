"""The README's table of the ingest API's errors says what the processor answers, word for word.

Each scenario makes the processor refuse one request; its ``detail`` must match exactly one row
of the table for its status (``<...>`` in a row stands for a value the processor fills in), and
every row must be met by a scenario, but for the few that need requests racing a slow Kafka.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ca4_processor.core.config import Settings
from ca4_processor.main import create_api
from ca4_processor.ownership import SessionOwners

from tests.support.reports import make_report
from tests.unit.processor.conftest import (
    DEV_HEADERS,
    FakePublisher,
    FakeSessionClaims,
    _AppClient,
)

README = Path(__file__).resolve().parents[3] / "README.md"
_JSON = {**DEV_HEADERS, "Content-Type": "application/json"}
_GZIP = {**_JSON, "Content-Encoding": "gzip"}
_READ_ONLY_KEY = "k-read-only"
_READ_ONLY = {
    "API_KEY_HASHES": f"reader:{hashlib.sha256(_READ_ONLY_KEY.encode()).hexdigest()}:t:read"
}
UNMET = {
    "tenant '<tenant>' already has <n> requests in flight here",
    "tenant '<tenant>' already has reports weighing <bytes> bytes waiting for Kafka here",
    "this processor already holds reports weighing <bytes> bytes waiting for Kafka",
}
"""Rows no scenario here meets (by their start): they need requests held in flight or waiting
on a slow Kafka at once (test_security.py and test_waiting_for_kafka.py assert those answers)."""


def documented() -> list[tuple[int, str]]:
    """``(status, detail)`` of each row of the README's table that quotes a ``detail``."""
    table = README.read_text("utf-8").split("<!-- BEGIN INGEST ERRORS -->")[1]
    table = table.split("<!-- END INGEST ERRORS -->")[0]
    rows = []
    for line in table.strip().splitlines()[2:]:
        status, _when, detail = (cell.strip() for cell in line.strip("|").split(" | "))
        if detail.startswith("`") and detail.endswith("`"):
            rows.append((int(status.strip("`")), detail[1:-1]))
    return rows


def pattern(detail: str) -> re.Pattern[str]:
    """A documented detail as a pattern: each ``<...>`` any text."""
    parts = re.split(r"<[^<>]*>", detail)
    return re.compile(".+".join(re.escape(part) for part in parts), re.DOTALL)


def _body(report: Any) -> bytes:
    return json.dumps(report).encode()


async def _slowly(body: bytes) -> AsyncIterator[bytes]:
    """A body without a Content-Length: one byte, then the rest a moment later."""
    yield body[:1]
    await asyncio.sleep(0.05)
    yield body[1:]


@dataclass(frozen=True)
class Scenario:
    """One refused request (after ``warm_up`` requests like it)."""

    status: int
    content: Callable[[], bytes | AsyncIterator[bytes]] = lambda: _body(make_report())
    headers: dict[str, str] = field(default_factory=lambda: dict(_JSON))
    path: str = "/v1/metadata"
    settings: dict[str, Any] = field(default_factory=dict)
    arrange: Callable[[FakePublisher, FakeSessionClaims], None] = lambda _p, _c: None
    warm_up: int = 0


def _batch(*session_ids: str) -> Callable[[], bytes]:
    return lambda: _body({"reports": [make_report(session_id=s) for s in session_ids]})


def _kafka_down(publisher: FakePublisher, _claims: FakeSessionClaims) -> None:
    publisher.available = False


def _small_messages(publisher: FakePublisher, _claims: FakeSessionClaims) -> None:
    publisher.max_message_bytes = 2000


def _theirs(_publisher: FakePublisher, claims: FakeSessionClaims) -> None:
    claims.owners["theirs"] = "another-tenant"


def _database_down(_publisher: FakePublisher, claims: FakeSessionClaims) -> None:
    claims.available = False


_VALID = _body(make_report())
_ONE_NEW_SESSION = {
    "RATE_LIMIT_PER_SECOND": 1000,
    "RATE_LIMIT_NEW_SESSIONS_BURST": 1,
    "RATE_LIMIT_NEW_SESSIONS_PER_SECOND": 0.001,
}
SCENARIOS = {
    "not gzip": Scenario(400, lambda: b"\x1f\x8b nope", _GZIP),
    "gzip cut short": Scenario(400, lambda: gzip.compress(_VALID)[:-8], _GZIP),
    "no key": Scenario(401, headers={"Content-Type": "application/json"}),
    "Bearer without a key": Scenario(401, headers={**_JSON, "Authorization": "Bearer "}),
    "a bare key": Scenario(401, headers={**_JSON, "Authorization": "ca4-dev-key"}),
    "Basic": Scenario(401, headers={**_JSON, "Authorization": "Basic Y2E0OmRldg=="}),
    "unknown key": Scenario(401, headers={**_JSON, "Authorization": "Bearer nope"}),
    "key without write": Scenario(
        403, headers={**_JSON, "Authorization": f"Bearer {_READ_ONLY_KEY}"}, settings=_READ_ONLY
    ),
    "another tenant's session": Scenario(
        403, lambda: _body(make_report(session_id="theirs")), arrange=_theirs
    ),
    "body too slow": Scenario(
        408, lambda: _slowly(_VALID), settings={"BODY_READ_TIMEOUT_S": 1e-9}
    ),
    "Content-Length over the cap": Scenario(413, settings={"MAX_BODY_BYTES": 100}),
    "body over the cap as it arrives": Scenario(
        413, lambda: _slowly(_VALID), settings={"MAX_BODY_BYTES": 100}
    ),
    "decompressed over the cap": Scenario(
        413, lambda: gzip.compress(_VALID), _GZIP, settings={"MAX_DECOMPRESSED_BYTES": 100}
    ),
    "over the weight": Scenario(413, settings={"MAX_BODY_WEIGHT": 100}),
    "event over the message size": Scenario(
        413, lambda: _body(make_report(gpus=10)), arrange=_small_messages
    ),
    "more reports than the burst": Scenario(
        413,
        _batch("s1", "s2"),
        path="/v1/metadata/batch",
        settings={"RATE_LIMIT_PER_SECOND": 1, "RATE_LIMIT_BURST": 1},
    ),
    "heavier than the burst": Scenario(
        413, settings={"RATE_LIMIT_PER_SECOND": 1, "RATE_LIMIT_BURST": 2,
                       "RATE_LIMIT_TOKEN_WEIGHT": 100},
    ),
    "more GPUs than the burst": Scenario(
        413,
        lambda: _body(make_report(gpus=4)),
        settings={"RATE_LIMIT_PER_SECOND": 1, "RATE_LIMIT_BURST": 2,
                  "RATE_LIMIT_GPUS_PER_TOKEN": 1},
    ),
    "more new sessions than the burst": Scenario(
        413, _batch("n1", "n2"), path="/v1/metadata/batch", settings=_ONE_NEW_SESSION
    ),
    "not JSON": Scenario(415, headers=dict(DEV_HEADERS)),
    "brotli": Scenario(415, headers={**_JSON, "Content-Encoding": "br"}),
    "rate limited": Scenario(
        429, settings={"RATE_LIMIT_PER_SECOND": 0.001, "RATE_LIMIT_BURST": 1}, warm_up=1
    ),
    "new sessions limited": Scenario(
        429, lambda: _body(make_report(session_id=f"new-{uuid.uuid4().hex}")),
        settings=_ONE_NEW_SESSION, warm_up=1,
    ),
    "Kafka down": Scenario(503, arrange=_kafka_down),
    "database down": Scenario(503, arrange=_database_down),
}  # fmt: skip


def _app(publisher: FakePublisher, claims: FakeSessionClaims, **settings: Any) -> _AppClient:
    """The processor on fakes of its own (as ``make_client``, one per scenario)."""
    owners = SessionOwners(claims, timeout_s=1.0, cache_size=10)
    return _AppClient(create_api(Settings(**settings), publisher=publisher, session_owners=owners))


async def _detail(scenario: Scenario) -> tuple[int, Any]:
    """The status and ``detail`` the processor answers ``scenario`` with."""
    publisher, claims = FakePublisher(), FakeSessionClaims()
    scenario.arrange(publisher, claims)
    settings = {"RATE_LIMIT_PER_SECOND": 0, **scenario.settings}
    async with _app(publisher, claims, **settings) as (client, _):
        for _ in range(scenario.warm_up + 1):
            response = await client.post(
                scenario.path, content=scenario.content(), headers=scenario.headers
            )
    return response.status_code, response.json().get("detail", response.json())


async def test_every_answer_is_a_row_of_the_readme_table_and_every_row_is_met() -> None:
    rows = documented()
    met: set[str] = set()
    wrong = []
    for name, scenario in SCENARIOS.items():
        status, detail = await _detail(scenario)
        matching = [
            text
            for code, text in rows
            if code == status and isinstance(detail, str) and pattern(text).fullmatch(detail)
        ]
        if status != scenario.status or len(matching) != 1:
            wrong.append((name, status, detail))
        met.update(matching)

    assert wrong == []
    unmet = [text for _, text in rows if text not in met]
    assert [text for text in unmet if not text.startswith(tuple(UNMET))] == []
    assert len(unmet) == len(UNMET)
