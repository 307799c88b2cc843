"""The dev edge in front of the real processor and worker: one URL for ingest and reads.

What a notebook user on the dev path does: ``make dev``, ``ngrok http 127.0.0.1:8002`` and that
one URL for everything. Here the edge is the dev stack's own (``ca4_provision.devstack.edge``)
run in process by ``tests/support/edge.py``, in front of the SDK tests' private processor and
worker on the running dev stack's Kafka and database: the SDK reports through it, and the
worker's read API answers through it what was reported.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ca4_provision.devstack.edge import HEALTH_PATH
from ca4_sdk import Reporter

from tests.integration.sdk.conftest import DEV_API_KEY, SdkPipeline
from tests.support.doc_commands import bash_block_with, run_as_bash
from tests.support.edge import local_edge

pytestmark = [pytest.mark.kafka, pytest.mark.mongo, pytest.mark.e2e]

AUTH = {"Authorization": f"Bearer {DEV_API_KEY}"}
README_EDGE = "http://127.0.0.1:8002"  # `make dev`'s edge, which the README's commands name


@pytest.fixture
def edge(sdk_pipeline: SdkPipeline) -> Iterator[str]:
    with local_edge(
        {"processor": sdk_pipeline.processor.url, "worker": sdk_pipeline.worker.url}
    ) as url:
        yield url


def _read(http: httpx.Client, path: str) -> dict[str, Any]:
    response = http.get(path, headers=AUTH)
    assert response.status_code == 200, (path, response.status_code, response.text)
    body: dict[str, Any] = response.json()
    return body


def test_reports_sent_through_the_edge_are_read_back_through_it(edge: str, tmp_path: Path) -> None:
    session_id = f"edge-test-{uuid.uuid4().hex[:12]}"
    with Reporter(
        url=edge,
        api_key=DEV_API_KEY,
        session_id=session_id,
        labels={"project": "edge-pipeline"},
        spool_dir=tmp_path / "spool",
        interval=3600,
    ) as reporter:
        sent = [reporter.report_once(), reporter.report_once()]
    assert all(result.delivered for result in sent), sent

    with httpx.Client(base_url=edge, timeout=10) as http:
        pending = {result.event_id for result in sent}
        deadline = time.monotonic() + 60
        events = {}
        while pending:
            assert time.monotonic() < deadline, f"not projected in 60 s: {pending}"
            for event_id in sorted(pending):
                status = _read(http, f"/v1/events/{event_id}")
                if status["projected"]:
                    events[event_id] = status["event"]
                    pending.discard(event_id)
            time.sleep(0.5)
        session = _read(http, f"/v1/sessions/{session_id}")
        listed = _read(http, "/v1/sessions?limit=100")
        gpus = http.get("/v1/gpus", headers=AUTH)
        usage = http.get("/v1/usage", headers=AUTH)

    assert {event["session_id"] for event in events.values()} == {session_id}
    assert session["session_id"] == session_id
    assert session["sample_count"] >= len(sent)
    assert session_id in {item["session_id"] for item in listed["items"]}
    assert gpus.status_code == 200, gpus.text
    assert usage.status_code == 200, usage.text


def test_the_apps_own_answers_come_back_and_unrouted_paths_stay_inside(
    edge: str, sdk_pipeline: SdkPipeline
) -> None:
    with httpx.Client(base_url=edge, timeout=10) as http:
        refused = http.post("/v1/metadata", json={"not": "a report"}, headers=AUTH)
        no_key = http.get("/v1/sessions")
        unknown = http.get(f"/v1/sessions/nobody-{uuid.uuid4().hex[:8]}", headers=AUTH)
        # What the ingress keeps inside the cluster, though both apps serve it:
        inside = {path: http.get(path) for path in ("/healthz", "/readyz", "/metrics", "/docs")}
        healthy = http.get(HEALTH_PATH)
    direct = httpx.get(f"{sdk_pipeline.processor.url}/healthz", timeout=10)

    assert refused.status_code == 422, refused.text  # the processor's validation error
    assert refused.json()["detail"]
    assert no_key.status_code == 401, no_key.text  # the worker's
    assert unknown.status_code == 404
    assert "detail" in unknown.json()
    assert {path: r.status_code for path, r in inside.items()} == dict.fromkeys(inside, 404)
    assert all(r.text == "404 page not found\n" for r in inside.values())
    assert direct.status_code == 200  # served by the app, just not through the edge
    assert healthy.status_code == 200


def test_the_readmes_report_by_hand_with_curl_is_accepted_and_its_session_listed(
    edge: str, tmp_path: Path
) -> None:
    """The README's curl here-document, run by bash and curl as written, at this edge in place
    of ``make dev``'s (``tests/integration/devstack/test_make_dev.py`` runs that one)."""
    block = bash_block_with("by-hand-")
    assert README_EDGE in block
    # curl's own config file adds the status line; the command stays the README's.
    (tmp_path / ".curlrc").write_text('write-out = "\\n%{http_code}\\n"\n', encoding="utf-8")
    ran = run_as_bash(
        block.replace(README_EDGE, edge),
        env={"PATH": os.environ["PATH"], "CURL_HOME": str(tmp_path), "HOME": str(tmp_path)},
        timeout=60,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    body, code = ran.stdout.rstrip("\n").rsplit("\n", 1)
    assert code == "202", ran.stdout
    event_id = json.loads(body)["event_id"]  # the receipt of one report

    with httpx.Client(base_url=edge, timeout=10) as http:
        deadline = time.monotonic() + 60
        while not (status := _read(http, f"/v1/events/{event_id}"))["projected"]:
            assert time.monotonic() < deadline, f"not projected in 60 s: {status}"
            time.sleep(0.5)
        session_id = status["event"]["session_id"]
        listed = _read(http, "/v1/sessions?limit=100")

    assert session_id.startswith("by-hand-")
    assert status["event"]["source"]["sdk"] == "curl"
    assert session_id in {item["session_id"] for item in listed["items"]}
