"""One trace id spans the processor and the worker for one event.

Both apps run in this process against the real Kafka and database, and every span lands in an
in-memory exporter. The processor's HTTP request span and Kafka publish span, and the worker's
consume span (a child of the publish span, continued from the Kafka headers) and its
database-write spans must all carry the trace id of the request.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from asgi_lifespan import LifespanManager
from ca4_provision.verify.checks import build_test_report
from ca4_provision.verify.settings import VerifySettings
from ca4_telemetry import export_spans_to
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.support.services import Endpoints

pytestmark = [pytest.mark.kafka, pytest.mark.mongo, pytest.mark.e2e]

STARTUP_TIMEOUT_S = 60.0
STORE_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """Collect every span of this process, whoever configured tracing first."""
    exporter = InMemorySpanExporter()
    export_spans_to(exporter, "ca4-e2e")
    return exporter


async def create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(topic, num_partitions=3, replication_factor=1),
                NewTopic(f"{topic}.dlq", num_partitions=1, replication_factor=1),
            ]
        )
    finally:
        await admin.close()


@pytest.fixture
async def apps(
    services: Endpoints, topic_name: str, database_name: str, unique_suffix: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    from ca4_processor.core.config import Settings as ProcessorSettings
    from ca4_processor.main import create_app as create_processor
    from ca4_worker.core.config import Settings as WorkerSettings
    from ca4_worker.main import create_app as create_worker

    await create_topic(services.kafka_bootstrap_servers, topic_name)
    processor = create_processor(
        ProcessorSettings(
            KAFKA_BOOTSTRAP_SERVERS=services.kafka_bootstrap_servers, KAFKA_TOPIC=topic_name
        )
    )
    worker = create_worker(
        WorkerSettings(
            kafka_bootstrap_servers=services.kafka_bootstrap_servers,
            kafka_topic=topic_name,
            kafka_dlq_topic=f"{topic_name}.dlq",
            kafka_store_group=f"e2e-store-{unique_suffix}",
            kafka_archive_group=f"e2e-archive-{unique_suffix}",
            kafka_project_group=f"e2e-project-{unique_suffix}",
            mongo_url=services.mongo_url,
            mongo_db=database_name,
            archive_enabled=False,
        )
    )
    async with AsyncExitStack() as stack:
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            for app in (processor, worker):
                await stack.enter_async_context(
                    LifespanManager(app, startup_timeout=STARTUP_TIMEOUT_S)  # type: ignore[arg-type]
                )
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}")  # type: ignore[arg-type]
            )
            for name, app in (("processor", processor), ("worker", worker))
        ]
        yield clients[0], clients[1]


def trace_ids(spans: Sequence[ReadableSpan], scope_prefix: str) -> set[int]:
    return {
        span.context.trace_id
        for span in spans
        if span.instrumentation_scope is not None
        and span.instrumentation_scope.name.startswith(scope_prefix)
    }


async def test_one_trace_spans_processor_and_worker(
    apps: tuple[httpx.AsyncClient, httpx.AsyncClient], spans: InMemorySpanExporter
) -> None:
    processor, worker = apps
    spans.clear()
    report = await asyncio.to_thread(
        build_test_report, VerifySettings(), f"ca4-trace-{uuid.uuid4().hex[:8]}"
    )
    response = await processor.post(
        "/v1/metadata",
        content=json.dumps(report),
        headers={"Authorization": "Bearer ca4-dev-key", "Content-Type": "application/json"},
    )
    assert response.status_code == 202, response.text

    # The worker ends a record's span when its whole batch is done (stored and projected),
    # which is after the event shows as stored: wait for the span itself.
    async with asyncio.timeout(STORE_TIMEOUT_S):
        while True:
            if any(
                span.kind is SpanKind.CONSUMER and span.name.endswith(" process")
                for span in spans.get_finished_spans()
            ):
                break
            await asyncio.sleep(0.2)
    status = await worker.get(
        f"/v1/events/{report['event_id']}", headers={"Authorization": "Bearer ca4-dev-key"}
    )
    assert status.json().get("stored"), status.text

    finished = spans.get_finished_spans()
    publish = [span for span in finished if span.name.startswith("send ")]
    assert publish, f"no Kafka publish span among {[span.name for span in finished]}"
    (request_trace,) = {span.context.trace_id for span in publish}
    assert request_trace in trace_ids(finished, "ca4_processor")
    worker_traces = trace_ids(finished, "ca4_worker")
    assert request_trace in worker_traces, (
        f"worker spans {sorted(span.name for span in finished)} do not continue trace "
        f"{request_trace:032x}"
    )
    (publish_span,) = (span for span in publish if span.context.trace_id == request_trace)
    consume = [
        span
        for span in finished
        if span.kind is SpanKind.CONSUMER and span.context.trace_id == request_trace
    ]
    assert len(consume) == 1, [span.name for span in consume]
    assert consume[0].parent is not None
    assert consume[0].parent.span_id == publish_span.context.span_id
    writes = {
        span.name
        for span in finished
        if span.parent is not None and span.parent.span_id == consume[0].context.span_id
    }
    assert "insert events" in writes
