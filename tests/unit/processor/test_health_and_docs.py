"""Probes, Prometheus metrics and the OpenAPI docs."""

from __future__ import annotations

import json

import httpx

from tests.support.reports import make_report
from tests.unit.processor.conftest import DEV_HEADERS, FakePublisher


async def test_liveness_and_readiness(
    client: httpx.AsyncClient, fake_publisher: FakePublisher
) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200

    fake_publisher.available = False

    assert (await client.get("/healthz")).status_code == 200
    not_ready = await client.get("/readyz")
    assert not_ready.status_code == 503
    assert "retry-after" in not_ready.headers


async def test_metrics_count_outcomes_and_http_requests(
    client: httpx.AsyncClient, fake_publisher: FakePublisher
) -> None:
    await client.post("/v1/metadata", json=make_report(), headers=DEV_HEADERS)
    await client.post("/v1/metadata", json={"bad": 1}, headers=DEV_HEADERS)
    fake_publisher.available = False
    await client.post(
        "/v1/metadata/batch", json={"reports": [make_report()] * 2}, headers=DEV_HEADERS
    )

    metrics = (await client.get("/metrics")).text

    assert 'ca4_ingest_events_total{outcome="accepted"} 1.0' in metrics
    assert 'ca4_ingest_events_total{outcome="rejected"} 1.0' in metrics
    assert 'ca4_ingest_events_total{outcome="unavailable"} 2.0' in metrics
    assert "ca4_http_requests_total" in metrics
    assert "ca4_http_request_duration_seconds" in metrics
    assert "ca4_publish_latency_seconds" in metrics


async def test_openapi_documents_request_bodies_with_examples(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()

    single = schema["paths"]["/v1/metadata"]["post"]
    body = single["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/GpuMetadataReportV1"}
    assert body["examples"]["colab_t4"]["value"]["payload"]["gpus"][0]["name"] == "Tesla T4"
    assert {"202", "401", "413", "415", "422", "429", "503"} <= set(single["responses"])
    assert "GpuSample" in schema["components"]["schemas"]
    batch = schema["paths"]["/v1/metadata/batch"]["post"]
    assert "207" in batch["responses"]
    assert (await client.get("/docs")).status_code == 200


async def test_asyncapi_documents_the_topic_without_connecting_to_kafka(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/asyncapi.json")).json()
    page = await client.get("/asyncapi")

    (channel,) = document["channels"].values()
    assert channel["address"] == "gpu-metadata"
    assert "GpuMetadataReportedV2" in json.dumps(document["components"]["schemas"])
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
