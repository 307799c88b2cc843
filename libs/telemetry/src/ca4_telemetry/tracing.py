"""OpenTelemetry tracing with the exporter chosen by configuration, and Kafka header helpers.

The W3C ``traceparent`` travels in Kafka headers (never in the event body), so one trace spans
the HTTP request, the Kafka message and the database write. It is the only context read from a
request or written to a message (:class:`TraceParentOnly`): OpenTelemetry's default propagators
also parse ``baggage`` and ``tracestate`` from anyone, before any key is checked, and copy them
onto every message of a batch (docs/architecture.md, "Trace headers"). Nothing here uses either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    DEFAULT_ON,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

Exporter = Literal["none", "console", "otlp"]
KafkaHeaders = Sequence[tuple[str, bytes]]
TRACEPARENT = "traceparent"


class _TraceParentGetter(Getter[CarrierT]):
    """``getter`` showing only ``traceparent``."""

    def __init__(self, getter: Getter[CarrierT]) -> None:
        self._getter = getter

    def get(self, carrier: CarrierT, key: str) -> list[str] | None:
        return self._getter.get(carrier, key) if key == TRACEPARENT else None

    def keys(self, carrier: CarrierT) -> list[str]:
        return [TRACEPARENT]


class _TraceParentSetter(Setter[CarrierT]):
    """``setter`` writing only ``traceparent``."""

    def __init__(self, setter: Setter[CarrierT]) -> None:
        self._setter = setter

    def set(self, carrier: CarrierT, key: str, value: str) -> None:
        if key == TRACEPARENT:
            self._setter.set(carrier, key, value)


class TraceParentOnly(TextMapPropagator):
    """W3C trace context reduced to ``traceparent``: no ``tracestate``, no ``baggage``."""

    _w3c = TraceContextTextMapPropagator()

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        """The caller's trace and parent span, from ``traceparent`` alone."""
        return self._w3c.extract(carrier, context, getter=_TraceParentGetter(getter))

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        """``traceparent`` of the current span."""
        self._w3c.inject(carrier, context, setter=_TraceParentSetter(setter))

    @property
    def fields(self) -> set[str]:
        """The one header written."""
        return {TRACEPARENT}


PROPAGATOR = TraceParentOnly()


class RecordOnceExported(Sampler):
    """Drops every span (ids still propagate) until :func:`export_spans_to` adds an exporter,
    then samples parent-based always-on."""

    def __init__(self) -> None:
        self.exporting = False

    def should_sample(  # noqa: PLR0917 - the SDK's signature
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        """Delegate to always-off or parent-based always-on."""
        sampler = DEFAULT_ON if self.exporting else ALWAYS_OFF
        return sampler.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        """Name shown in SDK diagnostics."""
        return "RecordOnceExported"


def export_spans_to(exporter: SpanExporter, service: str = "ca4") -> None:
    """Send every span of this process to ``exporter`` from now on (tests, debugging),
    whatever :func:`configure_tracing` chose before."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        configure_tracing(service, extra_exporter=exporter)
        return
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    if isinstance(provider.sampler, RecordOnceExported):
        provider.sampler.exporting = True


def configure_tracing(
    service: str,
    exporter: Exporter = "none",
    otlp_endpoint: str | None = None,
    *,
    extra_exporter: SpanExporter | None = None,
) -> TracerProvider:
    """Install a tracer provider for ``service``.

    With ``exporter="none"`` spans carry trace ids (so they reach logs and Kafka headers) but
    are never recorded: recording spans nobody exports cost the worker a fifth of its CPU.
    Otherwise the SDK's sampler applies (``OTEL_TRACES_SAMPLER``, parent-based always-on by
    default). ``extra_exporter`` lets tests collect spans in memory.
    """
    # FastAPI's own tracing extracts with the global propagator, before any route runs.
    propagate.set_global_textmap(PROPAGATOR)
    exported = exporter != "none" or extra_exporter is not None
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=None if exported else RecordOnceExported(),
    )
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    if extra_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(extra_exporter))
    trace.set_tracer_provider(provider)
    return provider


def spans_recorded() -> bool:
    """Whether this process may record spans at all.

    False where nothing exports them (no provider, or :class:`RecordOnceExported` without an
    exporter): a hot path can then skip creating spans that would only be dropped, and read
    trace ids straight from the incoming headers.
    """
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        return False
    sampler = provider.sampler
    return sampler.exporting if isinstance(sampler, RecordOnceExported) else True


def tracer(name: str) -> trace.Tracer:
    """The tracer for one module (``tracer(__name__)``)."""
    return trace.get_tracer(name)


def headers_with_trace_context(
    headers: Iterable[tuple[str, bytes]] = (),
) -> list[tuple[str, bytes]]:
    """Kafka headers plus the current span's ``traceparent``."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    return [*headers, *((key, value.encode()) for key, value in carrier.items())]


def extract_context(headers: Iterable[tuple[str, bytes | None]] | None) -> Context:
    """The trace context a producer put in Kafka headers (an empty context if none)."""
    carrier = {
        key.lower(): value.decode("latin-1") for key, value in headers or () if value is not None
    }
    return PROPAGATOR.extract(carrier)
