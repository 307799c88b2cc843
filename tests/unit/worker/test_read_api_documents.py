"""The worker's read API answers what its OpenAPI document says, body schema included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from jsonschema import Draft202012Validator

from tests.unit.worker.test_tenancy import KEYS, ReadApi, bearer

SCENARIOS = {
    "label without a colon": ("/v1/sessions?label=project", "/v1/sessions", 422),
    "label with an empty key": ("/v1/sessions?label=:x", "/v1/sessions", 422),
    "no such session": ("/v1/sessions/nope", "/v1/sessions/{session_id}", 404),
    "no such GPU": ("/v1/gpus/nope", "/v1/gpus/{gpu_uuid}", 404),
    "no key": ("/v1/gpus", "/v1/gpus", 401),
    "limit out of range": ("/v1/gpus?limit=0", "/v1/gpus", 422),
    "a label": ("/v1/sessions?label=project:x", "/v1/sessions", 200),
}


@pytest.mark.parametrize(("url", "route", "status"), SCENARIOS.values(), ids=SCENARIOS.keys())
async def test_the_answer_is_documented_with_its_body_schema(
    tmp_path: Path, url: str, route: str, status: int
) -> None:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(KEYS)
    read_api = ReadApi(keys_file)
    headers = {} if status == 401 else bearer("k-a")
    transport = httpx.ASGITransport(read_api.app)
    async with (
        LifespanManager(read_api.app),
        httpx.AsyncClient(transport=transport, base_url="http://worker") as client,
    ):
        document: dict[str, Any] = (await client.get("/openapi.json")).json()
        response = await client.get(url, headers=headers)

    assert response.status_code == status, response.text
    documented = document["paths"][route]["get"]["responses"]
    schema = documented[str(status)]["content"]["application/json"]["schema"]
    validator = Draft202012Validator({**schema, "components": document["components"]})
    assert [error.message for error in validator.iter_errors(response.json())] == []


@pytest.mark.parametrize("route", ["/v1/sessions", "/v1/gpus"])
def test_the_list_routes_say_only_a_null_cursor_ends_the_list(tmp_path: Path, route: str) -> None:
    # A page ends early by its bytes: a client that stops at a short page loses the rest.
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(KEYS)

    description = ReadApi(keys_file).app.openapi()["paths"][route]["get"]["description"]

    assert "only ``next_cursor: null`` ends the list" in description
    assert "shorter than ``limit`` is not the last one" in description


READ_MODELS = [
    "SessionView",
    "GpuView",
    "EventStatus",
    "Page_SessionView_",
    "Page_GpuView_",
    "UsageReport",
    "UsageRow",
]


def test_every_field_of_the_read_models_is_described(tmp_path: Path) -> None:
    # Without use_attribute_docstrings the fields' docstrings never reached /openapi.json.
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(KEYS)

    schemas = ReadApi(keys_file).app.openapi()["components"]["schemas"]

    undescribed = {
        (model, field)
        for model in READ_MODELS
        for field, schema in schemas[model]["properties"].items()
        if not schema.get("description", "").strip()
    }
    assert undescribed == set()
    dropped = schemas["SessionView"]["properties"]
    assert dropped["gpus_dropped"]["description"].startswith(
        "GPU samples (one per GPU per report, not distinct GPUs) left out of ``/v1/gpus``"
    )
    assert dropped["gpu_models_dropped"]["description"].startswith(
        "GPU samples (one per GPU per report, not distinct models)"
    )


def test_the_gpu_route_says_a_gpu_past_its_sessions_cap_is_not_found(tmp_path: Path) -> None:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(KEYS)

    operation = ReadApi(keys_file).app.openapi()["paths"]["/v1/gpus/{gpu_uuid}"]["get"]

    description = " ".join(operation["description"].split())
    assert (
        "A session keeps at most 64 GPUs (``SESSION_MAX_GPUS``), the first it reports: a GPU "
        "that came only in sessions already holding 64 others is ``404`` too, its samples "
        "counted in those sessions' ``gpus_dropped`` (and not billed in usage)."
    ) in description
