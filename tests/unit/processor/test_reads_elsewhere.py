"""Reads asked of the processor: a ``404`` that names the edge, which routes them to the worker."""

from __future__ import annotations

import httpx
import pytest
from ca4_processor.api.routes.reads import READ_PREFIXES
from ca4_provision.devstack.edge import chart_routes
from ca4_worker.core.config import Settings as WorkerSettings
from ca4_worker.main import create_app as create_worker_app

from tests.unit.processor.conftest import DEV_HEADERS

WRONG_SERVICE = "reads are served by the worker: use the edge (ingress) URL, which routes them"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/sessions",
        "/v1/sessions?limit=5",
        "/v1/sessions/0190-abc",
        "/v1/gpus",
        "/v1/gpus/GPU-1234/samples",
        "/v1/events",
        "/v1/events/0190-aaaa",
        "/v1/usage",
        "/v1/usage?days=7",
    ],
)
async def test_a_read_says_the_worker_serves_it_through_the_edge(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path, headers=DEV_HEADERS)

    assert response.status_code == 404
    assert response.json() == {"detail": WRONG_SERVICE}


async def test_other_unknown_paths_stay_a_plain_404(client: httpx.AsyncClient) -> None:
    for path in ("/v1/sessionsX", "/v1/nothing", "/v2/sessions"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "Not Found"}, path


async def test_the_read_paths_stay_out_of_the_openapi_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    assert not [p for p in paths if p.startswith(("/v1/sessions", "/v1/gpus", "/v1/events"))]
    assert not [p for p in paths if p.startswith("/v1/usage")]


def test_the_read_prefixes_are_the_workers_routes_and_the_charts() -> None:
    """One list in three places: a read route the worker gains must reach it through the ingress
    (the chart's worker routes) and be pointed there by the processor."""
    worker_app = create_worker_app(WorkerSettings(), kafka_consumers=False)
    served = {
        "/".join(path.split("/")[:3])
        for path in worker_app.openapi()["paths"]
        if path.startswith("/v1/")
    }
    routed = {path for path, component in chart_routes().items() if component == "worker"}

    assert set(READ_PREFIXES) == served == routed
