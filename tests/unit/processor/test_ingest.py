"""Ingest behaviour with a fake publisher: receipts, batches, 503s, gzip, tracing headers."""

from __future__ import annotations

import gzip
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import structlog
from ca4_processor.api.routes import metadata
from ca4_processor.validation import MAX_ERRORS_PER_BATCH
from ca4_telemetry import export_spans_to
from fastapi import Request
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.reports import make_report
from tests.unit.processor.conftest import DEV_HEADERS, FakePublisher


async def test_report_is_accepted_with_a_receipt(
    client: httpx.AsyncClient, fake_publisher: FakePublisher
) -> None:
    report = make_report()

    response = await client.post("/v1/metadata", json=report, headers=DEV_HEADERS)

    assert response.status_code == 202
    assert response.json() == {
        "event_id": report["event_id"],
        "topic": "gpu-metadata",
        "partition": 0,
        "offset": 0,
    }
    (event,) = fake_publisher.published
    assert str(event.event_id) == report["event_id"]
    assert event.received_at.tzinfo is not None


async def test_retried_report_is_accepted_again_with_the_same_event_id(
    client: httpx.AsyncClient, fake_publisher: FakePublisher
) -> None:
    report = make_report()

    first = await client.post("/v1/metadata", json=report, headers=DEV_HEADERS)
    second = await client.post("/v1/metadata", json=report, headers=DEV_HEADERS)

    assert first.status_code == second.status_code == 202
    assert first.json()["event_id"] == second.json()["event_id"] == report["event_id"]
    assert [str(e.event_id) for e in fake_publisher.published] == [report["event_id"]] * 2


async def test_gzip_body_is_accepted(client: httpx.AsyncClient) -> None:
    body = gzip.compress(json.dumps(make_report()).encode())

    response = await client.post(
        "/v1/metadata",
        content=body,
        headers={**DEV_HEADERS, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )

    assert response.status_code == 202


async def test_content_type_with_charset_is_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/metadata",
        content=json.dumps(make_report()).encode(),
        headers={**DEV_HEADERS, "Content-Type": "application/json; charset=utf-8"},
    )

    assert response.status_code == 202


async def test_batch_all_valid_is_202_in_request_order(
    client: httpx.AsyncClient, fake_publisher: FakePublisher
) -> None:
    reports = [make_report(session_id=f"s-{i % 3}") for i in range(10)]

    response = await client.post(
        "/v1/metadata/batch", json={"reports": reports}, headers=DEV_HEADERS
    )

    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 10
    assert body["rejected"] == 0
    assert [r["index"] for r in body["results"]] == list(range(10))
    assert [r["receipt"]["event_id"] for r in body["results"]] == [r["event_id"] for r in reports]
    assert len(fake_publisher.published) == 10


async def test_batch_with_bad_items_publishes_the_others_and_reports_each_error(
    client: httpx.AsyncClient, fake_publisher: FakePublisher
) -> None:
    reports = [make_report() for _ in range(10)]
    reports[2]["payload"]["host"]["cpu_count"] = "2"
    reports[5]["labels"] = {"$where": "1"}
    reports[7]["payload"]["gpus"][0]["utilization_gpu_pct"] = float("nan")

    response = await client.post(
        "/v1/metadata/batch",
        content=json.dumps({"reports": reports}).encode(),
        headers={**DEV_HEADERS, "Content-Type": "application/json"},
    )

    assert response.status_code == 207
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (7, 3)
    rejected = {r["index"]: r["errors"] for r in body["results"] if r["status"] == "rejected"}
    assert set(rejected) == {2, 5, 7}
    assert rejected[2][0]["loc"] == ["body", "reports", 2, "payload", "host", "cpu_count"]
    assert rejected[5][0]["loc"][:5] == ["body", "reports", 5, "labels", "$where"]
    assert rejected[7][0]["loc"][-1] == "utilization_gpu_pct"
    published = {str(e.event_id) for e in fake_publisher.published}
    assert published == {r["event_id"] for i, r in enumerate(reports) if i not in {2, 5, 7}}


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG], ids=["info", "debug"])
async def test_a_batchs_log_names_every_accepted_event(
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    level: int,
) -> None:
    """The SDK posts batches: the batch line lists the ids an operator looks for (a line per
    event cost a quarter of the route's throughput), and at DEBUG each event has its own."""
    monkeypatch.setattr(  # a logger filtering at ``level`` (the module's is cached at INFO)
        metadata,
        "log",
        structlog.wrap_logger(
            logging.getLogger("ca4-test-ingest"),
            processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
            wrapper_class=structlog.make_filtering_bound_logger(level),
        ),
    )
    reports = [make_report() for _ in range(3)]
    reports[1]["payload"]["host"]["cpu_count"] = "2"
    caplog.set_level(logging.DEBUG)

    response = await client.post(
        "/v1/metadata/batch", json={"reports": reports}, headers=DEV_HEADERS
    )

    assert response.status_code == 207
    lines = [record.msg for record in caplog.records if isinstance(record.msg, dict)]
    [batch] = [line for line in lines if line["event"] == "ingest.batch"]
    kept = (reports[0], reports[2])
    assert batch["event_ids"] == [report["event_id"] for report in kept]
    assert batch["session_ids"] == sorted({report["session_id"] for report in kept})
    accepted = [line for line in lines if line["event"] == "ingest.accepted"]
    expected = [
        (report["event_id"], report["session_id"], offset) for offset, report in enumerate(kept)
    ]
    assert [(line["event_id"], line["session_id"], line["offset"]) for line in accepted] == (
        expected if level == logging.DEBUG else []
    )


async def test_unavailable_kafka_is_503_with_retry_after_and_never_202(
    client: httpx.AsyncClient, fake_publisher: FakePublisher
) -> None:
    fake_publisher.available = False

    single = await client.post("/v1/metadata", json=make_report(), headers=DEV_HEADERS)
    batch = await client.post(
        "/v1/metadata/batch", json={"reports": [make_report()]}, headers=DEV_HEADERS
    )

    for response in (single, batch):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert "retry later" in response.json()["detail"]
    ready = await client.get("/readyz")
    assert ready.status_code == 503


async def test_traceparent_from_the_caller_is_continued(client: httpx.AsyncClient) -> None:
    exporter = InMemorySpanExporter()
    export_spans_to(exporter)
    trace_id = uuid.uuid4().hex

    response = await client.post(
        "/v1/metadata",
        json=make_report(),
        headers={**DEV_HEADERS, "traceparent": f"00-{trace_id}-{'1' * 16}-01"},
    )

    assert response.status_code == 202
    spans = [s for s in exporter.get_finished_spans() if s.name == "POST /v1/metadata"]
    (span,) = spans
    assert span.context is not None
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 202
    exporter.shutdown()


async def test_baggage_and_tracestate_from_anyone_cost_nothing_and_log_nothing(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    # OpenTelemetry's default propagators parsed these for every request, before the key was
    # checked, and logged a warning per bad baggage entry: 181 lines for one anonymous request.
    hostile = {
        "traceparent": f"00-{'c' * 32}-{'d' * 16}-01",
        "tracestate": ",".join(f"v{index}=" + "x" * 200 for index in range(32)),
        "baggage": ",".join(["xxxxx"] * 180),
    }
    caplog.set_level(logging.DEBUG, logger="opentelemetry")

    anonymous = await client.post("/v1/metadata", json=make_report(), headers=hostile)
    accepted = await client.post(
        "/v1/metadata", json=make_report(), headers={**DEV_HEADERS, **hostile}
    )

    assert (anonymous.status_code, accepted.status_code) == (401, 202)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")] == []


async def test_forwarded_headers_are_honoured_from_trusted_proxies(
    make_client: Callable[..., Any],
) -> None:
    async with make_client(FORWARDED_ALLOW_IPS="*") as (client, app):

        @app.get("/_client")
        async def read_client(request: Request) -> dict[str, Any]:
            assert request.client is not None
            return {"host": request.client.host, "scheme": request.url.scheme}

        response = await client.get(
            "/_client", headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
        )

    assert response.json() == {"host": "203.0.113.7", "scheme": "https"}


async def test_report_over_the_kafka_message_limit_is_413_with_the_limit(
    client: httpx.AsyncClient, fake_publisher: FakePublisher
) -> None:
    fake_publisher.max_message_bytes = 2000

    response = await client.post("/v1/metadata", json=make_report(gpus=10), headers=DEV_HEADERS)

    assert response.status_code == 413
    detail = response.json()["detail"]
    assert "over the limit of 2000 bytes per Kafka message" in detail
    assert "retry-after" not in response.headers
    assert fake_publisher.published == []


async def test_batch_rejects_only_the_report_over_the_message_limit(
    client: httpx.AsyncClient, fake_publisher: FakePublisher
) -> None:
    fake_publisher.max_message_bytes = 2000
    reports = [make_report(), make_report(gpus=10), make_report()]

    response = await client.post(
        "/v1/metadata/batch", json={"reports": reports}, headers=DEV_HEADERS
    )

    assert response.status_code == 207
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted"]
    (error,) = body["results"][1]["errors"]
    assert error["loc"] == ["body", "reports", 1]
    assert error["type"] == "message_too_large"
    assert "over the limit of 2000 bytes per Kafka message" in error["msg"]
    assert [str(e.event_id) for e in fake_publisher.published] == [
        reports[0]["event_id"],
        reports[2]["event_id"],
    ]
    metrics = (await client.get("/metrics")).text
    assert 'ca4_ingest_events_total{outcome="accepted"} 2.0' in metrics
    assert 'ca4_ingest_events_total{outcome="rejected"} 1.0' in metrics


async def test_batch_with_every_report_over_the_message_limit_is_422_batch_response(
    client: httpx.AsyncClient, fake_publisher: FakePublisher
) -> None:
    fake_publisher.max_message_bytes = 2000

    response = await client.post(
        "/v1/metadata/batch",
        json={"reports": [make_report(gpus=10), make_report(gpus=10)]},
        headers=DEV_HEADERS,
    )

    assert response.status_code == 422
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (0, 2)
    assert {r["errors"][0]["type"] for r in body["results"]} == {"message_too_large"}
    assert fake_publisher.published == []


async def test_seed_path_post_metadata_is_an_alias_of_v1(
    client: httpx.AsyncClient, fake_publisher: FakePublisher
) -> None:
    report = make_report()

    accepted = await client.post("/metadata", json=report, headers=DEV_HEADERS)
    invalid = await client.post("/metadata", json={"bad": 1}, headers=DEV_HEADERS)
    unauthenticated = await client.post("/metadata", json=report)

    assert accepted.status_code == 202
    assert accepted.json() == {
        "event_id": report["event_id"],
        "topic": "gpu-metadata",
        "partition": 0,
        "offset": 0,
    }
    assert invalid.status_code == 422
    assert (
        invalid.json()
        == (await client.post("/v1/metadata", json={"bad": 1}, headers=DEV_HEADERS)).json()
    )
    assert unauthenticated.status_code == 401
    assert unauthenticated.json() == {
        "detail": "missing API key: send 'Authorization: Bearer <key>'"
    }
    assert [str(e.event_id) for e in fake_publisher.published] == [report["event_id"]]
    operation = (await client.get("/openapi.json")).json()["paths"]["/metadata"]["post"]
    assert operation["deprecated"] is True
    assert "alias of POST /v1/metadata" in operation["summary"]


@pytest.mark.parametrize("authorization", ["ca4-dev-key", "Basic ca4-dev-key", "Token x"])
async def test_a_key_sent_without_bearer_is_told_the_form_not_that_it_sent_none(
    client: httpx.AsyncClient, fake_publisher: FakePublisher, authorization: str
) -> None:
    # A review: "Authorization: <key>" or "Basic ..." answered "missing API key".
    response = await client.post(
        "/v1/metadata", json=make_report(), headers={"Authorization": authorization}
    )

    assert response.status_code == 401
    assert response.json() == {
        "detail": "the Authorization header must be 'Bearer <key>': the word Bearer, a space, "
        "then the API key (no other scheme, such as Basic, is accepted)"
    }
    assert "ca4-dev-key" not in response.text  # the header is never repeated
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert fake_publisher.published == []


async def test_an_answer_cuts_the_long_keys_it_names(
    client: httpx.AsyncClient, fake_publisher: FakePublisher
) -> None:
    """An error's ``loc`` names the client's own keys: a 5.4 KB gzipped report with one
    5,000,000-character unknown key made a 5 MB answer, which the processor held until its
    client read it (seventeen kilobytes per token paid). Each key named is now cut to 64 bytes,
    with a digest of the whole, so two long keys still read as different."""
    key = "x" * 5_000_000
    report = {**make_report(), key: 0}
    body = gzip.compress(json.dumps(report).encode())
    headers = {**DEV_HEADERS, "Content-Type": "application/json", "Content-Encoding": "gzip"}

    single = await client.post("/v1/metadata", content=body, headers=headers)

    assert single.status_code == 422
    assert len(single.content) < 8_192
    (error,) = single.json()["detail"]
    assert error["type"] == "extra_forbidden"
    assert error["loc"][0] == "body"
    assert error["loc"][1].startswith("x" * 40)
    assert "~" in error["loc"][1]
    assert len(error["loc"][1].encode()) <= 64

    reports = [make_report() for _ in range(500)]
    for index, item in enumerate(reports):
        item[f"{index}-{'a' * 4_000}"] = 0
        item[f"{index}-{'b' * 4_000}"] = 0
    batch = await client.post("/v1/metadata/batch", json={"reports": reports}, headers=DEV_HEADERS)

    assert batch.status_code == 422
    assert len(batch.content) < 400_000
    first = [e["loc"][-1] for e in batch.json()["results"][0]["errors"]]
    assert len(set(first)) == 2, "keys that differ past the cut still read as different"
    assert fake_publisher.published == []


async def test_a_batch_of_many_errors_lists_a_thousand_and_counts_the_rest(
    client: httpx.AsyncClient, fake_publisher: FakePublisher
) -> None:
    """500 reports of 101 bad process entries each made a 6 MB answer, which the processor held
    until the client read it (a client that never read parked 12 KB per token it paid): an
    answer now lists at most MAX_ERRORS_PER_BATCH errors, and each report past them gets one
    item that counts its own. The valid report is still published."""
    reports = [make_report() for _ in range(500)]
    for report in reports[:-1]:
        report["payload"]["gpus"][0]["processes"] = list(range(101))

    response = await client.post(
        "/v1/metadata/batch", json={"reports": reports}, headers=DEV_HEADERS
    )

    assert response.status_code == 207
    assert len(response.content) < 400_000
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 499)
    rejected = [r["errors"] for r in body["results"] if r["status"] == "rejected"]
    assert sum(len(errors) for errors in rejected) <= MAX_ERRORS_PER_BATCH + len(rejected)
    assert rejected[0][:2] == [
        {
            "loc": ["body", "reports", 0, "payload", "gpus", 0, "processes", 0],
            "msg": "Input should be an object",
            "type": "model_type",
        },
        {
            "loc": ["body", "reports", 0, "payload", "gpus", 0, "processes", 1],
            "msg": "Input should be an object",
            "type": "model_type",
        },
    ]
    assert rejected[0][-1]["msg"] == "1 more errors not listed (at most 100 are)"
    assert rejected[-1] == [
        {
            "loc": ["body", "reports", 498],
            "msg": ("101 errors not listed (an answer lists at most 1000 of a batch's errors)"),
            "type": "too_many_errors",
        }
    ]
    assert [str(e.event_id) for e in fake_publisher.published] == [reports[-1]["event_id"]]


async def test_a_trailing_slash_redirect_keeps_the_clients_scheme(
    client: httpx.AsyncClient, fake_publisher: FakePublisher
) -> None:
    """Starlette redirected ``/v1/metadata/`` to an absolute URL built from the request as the
    app saw it: ``http://`` behind a proxy that ends TLS, so a client following the 307 sent
    its report and key in clear. The Location is the path alone."""
    response = await client.post(
        "/v1/metadata/",
        json=make_report(),
        headers={**DEV_HEADERS, "X-Forwarded-Proto": "https"},
        params={"trace": "1"},
    )

    assert response.status_code == 307
    assert response.headers["location"] == "/v1/metadata?trace=1"
    assert fake_publisher.published == []
