"""Only ``traceparent`` is read from a request and written to a Kafka message."""

from __future__ import annotations

from ca4_telemetry import extract_context, headers_with_trace_context
from ca4_telemetry.tracing import PROPAGATOR
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import TracerProvider

TRACE_ID = "a" * 32
TRACEPARENT = f"00-{TRACE_ID}-{'b' * 16}-01"
HOSTILE = {
    "traceparent": TRACEPARENT,
    "tracestate": ",".join(f"vendor{index}=" + "x" * 200 for index in range(32)),
    "baggage": ",".join(["xxxxx"] * 180),  # 180 entries that are not key=value
}


def test_the_caller_trace_is_continued_from_traceparent_alone() -> None:
    extracted = PROPAGATOR.extract(HOSTILE)

    span_context = trace.get_current_span(extracted).get_span_context()
    assert format(span_context.trace_id, "032x") == TRACE_ID
    assert not span_context.trace_state  # the caller's tracestate is not kept
    assert baggage.get_all(extracted) == {}


def test_a_message_carries_the_traceparent_and_nothing_else_of_the_request() -> None:
    tracer = TracerProvider().get_tracer(__name__)
    token = context.attach(PROPAGATOR.extract(HOSTILE))
    try:
        with tracer.start_as_current_span("publish"):
            headers = dict(headers_with_trace_context([("ca4-event-id", b"e1")]))
    finally:
        context.detach(token)

    assert set(headers) == {"ca4-event-id", "traceparent"}
    assert headers["traceparent"].startswith(f"00-{TRACE_ID}-".encode())


def test_kafka_headers_are_read_the_same_way() -> None:
    extracted = extract_context([(key, value.encode()) for key, value in HOSTILE.items()])

    span_context = trace.get_current_span(extracted).get_span_context()
    assert format(span_context.trace_id, "032x") == TRACE_ID
    assert not span_context.trace_state
    assert baggage.get_all(extracted) == {}
