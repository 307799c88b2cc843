"""OpenTelemetry tracing with the exporter chosen by configuration, and Kafka header helpers.

The W3C ``traceparent`` travels in Kafka headers (never in the event body), so one trace spans
the HTTP request, the Kafka message and the database write.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

Exporter = Literal["none", "console", "otlp"]
KafkaHeaders = Sequence[tuple[str, bytes]]


def configure_tracing(
    service: str,
    exporter: Exporter = "none",
    otlp_endpoint: str | None = None,
    *,
    extra_exporter: SpanExporter | None = None,
) -> TracerProvider:
    """Install a tracer provider for ``service``.

    With ``exporter="none"`` spans are still created (so trace ids reach logs and Kafka
    headers) but go nowhere. ``extra_exporter`` lets tests collect spans in memory.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    if extra_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(extra_exporter))
    trace.set_tracer_provider(provider)
    return provider


def tracer(name: str) -> trace.Tracer:
    """The tracer for one module (``tracer(__name__)``)."""
    return trace.get_tracer(name)


def headers_with_trace_context(
    headers: Iterable[tuple[str, bytes]] = (),
) -> list[tuple[str, bytes]]:
    """Kafka headers plus the current W3C trace context (``traceparent``, ``tracestate``)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [*headers, *((key, value.encode()) for key, value in carrier.items())]


def extract_context(headers: Iterable[tuple[str, bytes | None]] | None) -> Context:
    """The trace context a producer put in Kafka headers (an empty context if none)."""
    carrier = {
        key.lower(): value.decode("latin-1") for key, value in headers or () if value is not None
    }
    return propagate.extract(carrier)
