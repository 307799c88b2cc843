"""Each record's trace continues from its Kafka headers into the worker's write spans."""

from __future__ import annotations

import pytest
from ca4_schemas.constants import HEADER_TRACEPARENT
from ca4_worker.application.ingest import IngestService
from ca4_worker.core import tracing
from ca4_worker.domain.records import Position
from ca4_worker.persistence.memory import (
    InMemoryDeadLetters,
    InMemoryEventStore,
    InMemoryProjections,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.unit.worker.factories import event_body, record

PRODUCER_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
PRODUCER_SPAN = 0xB7AD6B7169203331


def traceparent(trace_id: int, span_id: int) -> bytes:
    return f"00-{trace_id:032x}-{span_id:016x}-01".encode()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def traced_service(exporter: InMemorySpanExporter, store: InMemoryEventStore) -> IngestService:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return IngestService(
        store=store,
        projections=InMemoryProjections(),
        dead_letters=InMemoryDeadLetters(),
        max_backoff_s=0.01,
        consumer_group="ca4-store",
        tracer=provider.get_tracer("ca4_worker.tests"),
    )


def children_of(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> set[str]:
    return {
        span.name
        for span in spans
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    }


async def test_each_record_continues_its_producers_trace(exporter: InMemorySpanExporter) -> None:
    traced = record(event_body(session_id="s1"), offset=0)._replace(
        headers=((HEADER_TRACEPARENT, traceparent(PRODUCER_TRACE, PRODUCER_SPAN)),),
    )
    untraced = record(event_body(session_id="s2"), offset=1)
    await traced_service(exporter, InMemoryEventStore()).handle_batch([traced, untraced])

    spans = exporter.get_finished_spans()
    consume = [span for span in spans if span.kind is SpanKind.CONSUMER]
    assert len(consume) == 2
    continued = next(span for span in consume if span.context.trace_id == PRODUCER_TRACE)
    assert continued.parent is not None
    assert continued.parent.span_id == PRODUCER_SPAN
    assert continued.name == "gpu-metadata process"
    assert continued.attributes is not None
    assert continued.attributes["messaging.consumer.group.name"] == "ca4-store"
    assert children_of(spans, continued) == {"insert events"}
    fresh = next(span for span in consume if span is not continued)
    assert fresh.parent is None  # no traceparent: the worker starts a new trace
    assert children_of(spans, fresh) == {"insert events"}


async def test_a_failed_batch_marks_its_spans(exporter: InMemorySpanExporter) -> None:
    service = traced_service(exporter, InMemoryEventStore())

    async def broken(*_: object) -> None:
        raise RuntimeError("bug")

    # Store and projection failures are isolated as poison; a dead-letter sink that breaks
    # (not an outage) is what still fails a batch.
    service._dead_letters.publish = broken  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError):
        await service.handle_batch([record(b"{oops", offset=0)])
    spans = exporter.get_finished_spans()
    assert {span.name for span in spans} == {"gpu-metadata process"}
    assert all(span.status.status_code is StatusCode.ERROR for span in spans)


def test_without_recording_no_span_is_made_and_logs_read_the_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracing, "spans_recorded", lambda: False)
    traced = record(event_body(session_id="s1"), offset=0)._replace(
        headers=((HEADER_TRACEPARENT, traceparent(PRODUCER_TRACE, PRODUCER_SPAN)),),
    )
    untraced = record(event_body(session_id="s2"), offset=1)

    spans = tracing.BatchSpans([traced, untraced])
    with spans.database_write("insert events", [traced.position], collection="events"):
        pass
    spans.end()

    assert spans.trace_id(traced.position) == f"{PRODUCER_TRACE:032x}"
    assert spans.trace_id(untraced.position) is None
    assert spans.trace_id(Position(9, 9)) is None
