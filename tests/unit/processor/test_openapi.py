"""The OpenAPI document tells the truth: every answer a route gives is documented, and only those.

Each scenario makes one route give one status code. The test checks that the document lists
that code for that route with a schema the body validates against, that every documented code
is observed by a scenario, and that every route of the document has scenarios.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import ANY

import pytest
from ca4_processor.core.config import Settings
from ca4_processor.main import create_api
from ca4_processor.ownership import SessionOwners
from jsonschema import Draft202012Validator

from tests.support.reports import make_report
from tests.unit.processor.conftest import DEV_HEADERS, FakePublisher, FakeSessionClaims

_JSON = {**DEV_HEADERS, "Content-Type": "application/json"}
_SINGLE_PATHS = ("/v1/metadata", "/metadata")
_BATCH = "/v1/metadata/batch"
_READ_ONLY_KEY = "k-read-only"
_READ_ONLY = {
    "API_KEY_HASHES": f"reader:{hashlib.sha256(_READ_ONLY_KEY.encode()).hexdigest()}:t:read"
}


def _body(report: Any) -> bytes:
    return json.dumps(report).encode()


@dataclass(frozen=True)
class Scenario:
    """One request (after ``warm_up`` requests) and the status it must get."""

    method: str
    path: str
    status: int
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=lambda: dict(_JSON))
    settings: dict[str, Any] = field(default_factory=dict)
    publisher: Callable[[FakePublisher], None] = lambda _publisher: None
    warm_up: int = 0


def _down(publisher: FakePublisher) -> None:
    publisher.available = False


def _small_messages(publisher: FakePublisher) -> None:
    publisher.max_message_bytes = 2000


def _ingest_scenarios(path: str, valid: bytes, invalid: bytes) -> dict[str, Scenario]:
    """What every ingest route answers, single or batch."""
    return {
        f"{path} accepted": Scenario("POST", path, 202, valid),
        f"{path} broken gzip": Scenario(
            "POST", path, 400, b"\x1f\x8b nope", {**_JSON, "Content-Encoding": "gzip"}
        ),
        f"{path} no key": Scenario(
            "POST", path, 401, valid, {"Content-Type": "application/json"}
        ),
        f"{path} body over the cap": Scenario(
            "POST", path, 413, gzip.compress(valid), {**_JSON, "Content-Encoding": "gzip"},
            settings={"MAX_DECOMPRESSED_BYTES": 100},
        ),
        f"{path} key without write": Scenario(
            "POST", path, 403, valid, {**_JSON, "Authorization": f"Bearer {_READ_ONLY_KEY}"},
            settings=_READ_ONLY,
        ),
        f"{path} not JSON": Scenario("POST", path, 415, valid, {**DEV_HEADERS}),
        f"{path} invalid": Scenario("POST", path, 422, invalid),
        f"{path} rate limited": Scenario(
            "POST", path, 429, valid,
            settings={"RATE_LIMIT_PER_SECOND": 0.001, "RATE_LIMIT_BURST": 1}, warm_up=1,
        ),
        f"{path} Kafka down": Scenario("POST", path, 503, valid, publisher=_down),
    }  # fmt: skip


SCENARIOS: dict[str, Scenario] = {
    "liveness": Scenario("GET", "/healthz", 200),
    "ready": Scenario("GET", "/readyz", 200),
    "not ready": Scenario("GET", "/readyz", 503, publisher=_down),
    **{
        name: scenario
        for path in _SINGLE_PATHS
        for name, scenario in {
            **_ingest_scenarios(path, _body(make_report()), _body({"bad": 1})),
            f"{path} event over the message limit": Scenario(
                "POST", path, 413, _body(make_report(gpus=10)), publisher=_small_messages
            ),
        }.items()
    },
    **_ingest_scenarios(
        _BATCH,
        _body({"reports": [make_report(), make_report()]}),
        _body({"reports": "none"}),
    ),
    "batch partly rejected": Scenario(
        "POST", _BATCH, 207, _body({"reports": [make_report(), make_report(session_id="$x")]})
    ),
    "batch entirely rejected": Scenario(
        "POST", _BATCH, 422, _body({"reports": [make_report(session_id="$x")]})
    ),
    "batch over the burst": Scenario(
        "POST",
        _BATCH,
        413,
        _body({"reports": [make_report(), make_report()]}),
        settings={"RATE_LIMIT_PER_SECOND": 1, "RATE_LIMIT_BURST": 1},
    ),
}


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    """The processor's OpenAPI document (the same for every setting the scenarios use)."""
    owners = SessionOwners(FakeSessionClaims(), timeout_s=1.0, cache_size=10)
    return create_api(Settings(), publisher=FakePublisher(), session_owners=owners).openapi()


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
async def test_every_answer_is_documented_with_its_body_schema(
    scenario: Scenario,
    openapi: dict[str, Any],
    make_client: Callable[..., Any],
    fake_publisher: FakePublisher,
) -> None:
    scenario.publisher(fake_publisher)
    async with make_client(**{"RATE_LIMIT_PER_SECOND": 0, **scenario.settings}) as (client, _):
        for _ in range(scenario.warm_up + 1):
            response = await client.request(
                scenario.method, scenario.path, content=scenario.body, headers=scenario.headers
            )

    assert response.status_code == scenario.status, response.text[:500]
    documented = openapi["paths"][scenario.path][scenario.method.lower()]["responses"]
    assert str(scenario.status) in documented, sorted(documented)
    schema = documented[str(scenario.status)]["content"]["application/json"]["schema"]
    validator = Draft202012Validator({**schema, "components": openapi["components"]})
    errors = [error.message for error in validator.iter_errors(response.json())]
    assert errors == [], response.json()


def test_every_documented_answer_has_a_scenario(openapi: dict[str, Any]) -> None:
    documented = {
        (method.upper(), path, int(code))
        for path, operations in openapi["paths"].items()
        for method, operation in operations.items()
        for code in operation["responses"]
    }
    observed = {(s.method, s.path, s.status) for s in SCENARIOS.values()}

    assert documented == observed


def test_ingest_routes_declare_the_bearer_scheme(openapi: dict[str, Any]) -> None:
    schemes = openapi["components"]["securitySchemes"]
    assert schemes == {"ApiKey": {"type": "http", "scheme": "bearer", "description": ANY}}
    for path in (*_SINGLE_PATHS, _BATCH):
        assert openapi["paths"][path]["post"]["security"] == [{"ApiKey": []}]
    assert "security" not in openapi["paths"]["/readyz"]["get"]


def test_the_422_descriptions_state_the_duplicate_key_rule(openapi: dict[str, Any]) -> None:
    # A client can't guess that a heavy body must not repeat a key: the document says so.
    for path in (*_SINGLE_PATHS, _BATCH):
        description = openapi["paths"][path]["post"]["responses"]["422"]["description"]
        assert "over 2 MiB of weight" in description, path
        assert "repeats a key in an object" in description, path
        assert "duplicate_key" in description, path
