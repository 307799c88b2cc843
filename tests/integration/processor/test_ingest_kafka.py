"""Against the real Kafka: what a POST puts on the topic, batches, and partial batches."""

from __future__ import annotations

import json

import pytest
from aiokafka.errors import KafkaConnectionError
from asgi_lifespan import LifespanManager
from ca4_processor.core.config import Settings
from ca4_processor.main import create_app
from ca4_schemas import GpuMetadataReport, decode_event

from tests.integration.processor.conftest import AUTH, RunningProcessor
from tests.support.reports import make_report, stamped
from tests.unit.processor.bad_inputs import KEY_HASHES

pytestmark = pytest.mark.kafka


async def test_one_post_puts_exactly_one_message_with_key_headers_and_body(
    processor: RunningProcessor,
) -> None:
    report = make_report(session_id="colab-abc123")

    response = await processor.client.post(
        "/v1/metadata",
        json=report,
        headers={
            **AUTH,
            "traceparent": f"00-{'a' * 32}-{'b' * 16}-01",
            # A client's own context beyond the trace id stays out of the topic.
            "tracestate": ",".join(f"v{index}=" + "x" * 200 for index in range(32)),
            "baggage": "tenant=other,user=" + "y" * 4000,
        },
    )

    assert response.status_code == 202, response.text
    receipt = response.json()
    (record,) = await processor.topic.read(expected=1)
    assert (record.partition, record.offset) == (receipt["partition"], receipt["offset"])
    assert record.key == b"colab-abc123"
    headers = dict(record.headers)
    assert headers["ca4-event-id"] == report["event_id"].encode()
    assert headers["ca4-schema-version"] == b"2"
    assert headers["ca4-tenant"] == b"tests"  # the key's tenant: attributes even a dead letter
    assert headers["content-type"] == b"application/json"
    assert headers["traceparent"].startswith(b"00-" + b"a" * 32)
    assert "tracestate" not in headers
    assert "baggage" not in headers
    event = decode_event(record.value)
    assert str(event.event_id) == report["event_id"]
    assert event.session_id == "colab-abc123"
    assert event == stamped(
        GpuMetadataReport.model_validate(report), event.received_at, key_id="tests", tenant="tests"
    )
    assert event.received_at >= event.occurred_at
    # Only what the report gave: the fields it left out are absent, not null.
    assert "null" not in record.value.decode()
    assert len(record.value) == len(event.model_dump_json(exclude_none=True))


async def test_batch_of_500_lands_whole(processor: RunningProcessor) -> None:
    reports = [make_report(session_id=f"session-{i % 7}") for i in range(500)]

    response = await processor.client.post(
        "/v1/metadata/batch", json={"reports": reports}, headers=AUTH
    )

    assert response.status_code == 202, response.text[:500]
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (500, 0)
    records = await processor.topic.read(expected=500)
    assert len(records) == 500
    on_topic = {(r.partition, r.offset): json.loads(r.value)["event_id"] for r in records}
    for result, report in zip(body["results"], reports, strict=True):
        receipt = result["receipt"]
        assert on_topic[(receipt["partition"], receipt["offset"])] == report["event_id"]
    # One session's events share a partition, in request order.
    for session in {r["session_id"] for r in reports}:
        partitions = {r.partition for r in records if r.key == session.encode()}
        assert len(partitions) == 1


async def test_batch_with_three_bad_items_publishes_the_others(
    processor: RunningProcessor,
) -> None:
    reports = [make_report() for _ in range(20)]
    reports[3]["payload"]["gpus"][0]["memory_used_mib"] = -1
    reports[11]["labels"] = {"$where": "sleep(1000)"}
    reports[17]["occurred_at"] = "2999-01-01T00:00:00Z"

    response = await processor.client.post(
        "/v1/metadata/batch", json={"reports": reports}, headers=AUTH
    )

    assert response.status_code == 207, response.text[:500]
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (17, 3)
    rejected = {r["index"]: r["errors"] for r in body["results"] if r["status"] == "rejected"}
    assert set(rejected) == {3, 11, 17}
    assert rejected[3][0]["loc"][-1] == "memory_used_mib"
    assert "$where" in rejected[11][0]["loc"]
    assert "future" in rejected[17][0]["msg"]
    records = await processor.topic.read(expected=17)
    assert {json.loads(r.value)["event_id"] for r in records} == {
        r["event_id"] for i, r in enumerate(reports) if i not in {3, 11, 17}
    }


async def test_readiness_reflects_the_broker(processor: RunningProcessor) -> None:
    response = await processor.client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "kafka": "connected"}


async def test_seed_path_post_metadata_publishes_like_v1(processor: RunningProcessor) -> None:
    report = make_report(session_id="colab-seed-client")

    response = await processor.client.post("/metadata", json=report, headers=AUTH)

    assert response.status_code == 202, response.text
    receipt = response.json()
    (record,) = await processor.topic.read(expected=1)
    assert (record.partition, record.offset) == (receipt["partition"], receipt["offset"])
    assert record.key == b"colab-seed-client"
    assert dict(record.headers)["ca4-event-id"] == report["event_id"].encode()
    assert str(decode_event(record.value).event_id) == report["event_id"]


async def test_start_up_fails_while_kafka_is_unreachable() -> None:
    app = create_app(Settings(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", API_KEY_HASHES=KEY_HASHES))

    with pytest.raises(KafkaConnectionError):
        async with LifespanManager(app, startup_timeout=30):
            pass
