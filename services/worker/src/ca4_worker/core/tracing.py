"""Spans that continue each event's trace from its Kafka headers into the worker.

A batch holds many messages, each from its own HTTP request and trace, so every record gets
its own ``CONSUMER`` span whose parent is the producer's context (W3C ``traceparent`` header),
and the event-store insert gets a child span per record it wrote. Writes are batched, so those
children share the write's start and end times. Spans cost tens of microseconds per record
(measured: about 60 us for the pair), so the worker creates two per record and no more;
the projection writes show in the consumer span's duration. ``OTEL_TRACES_SAMPLER`` (read by
the SDK) samples them down where that matters. Where nothing records spans (no exporter), none
are created at all, and log lines take each record's trace id from its ``traceparent`` header:
even unrecorded spans cost about 20 us per record.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from time import time_ns

from ca4_telemetry import extract_context, spans_recorded, tracer
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from ca4_worker.domain.records import Position, RawRecord

_DEFAULT_TRACER = tracer(__name__)


class BatchSpans:
    """The ``process`` span of each record of one batch, ended by :meth:`end`."""

    def __init__(
        self,
        records: Sequence[RawRecord],
        *,
        consumer_group: str | None = None,
        span_tracer: trace.Tracer | None = None,
    ) -> None:
        self._tracer = span_tracer or _DEFAULT_TRACER
        self._spans: dict[Position, Span] = {}
        self._records = records
        self._headers: dict[Position, Sequence[tuple[str, bytes]]] | None = None
        if span_tracer is None and not spans_recorded():
            return
        for record in records:
            attributes: dict[str, AttributeValue] = {
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
            }
            if consumer_group is not None:
                attributes["messaging.consumer.group.name"] = consumer_group
            self._spans[record.position] = self._tracer.start_span(
                f"{record.topic} process",
                context=extract_context(record.headers),
                kind=SpanKind.CONSUMER,
                attributes=attributes,
            )

    def trace_id(self, position: Position) -> str | None:
        """The trace id (hex) of the record at ``position``, for its log lines."""
        span = self._spans.get(position)
        if span is None:
            if self._headers is None:  # built on the first log line that needs it
                self._headers = {record.position: record.headers for record in self._records}
            if position not in self._headers:
                return None
            span = trace.get_current_span(extract_context(self._headers[position]))
        context = span.get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else None

    @contextmanager
    def database_write(
        self, name: str, positions: Iterable[Position], *, collection: str
    ) -> Iterator[None]:
        """Time one batched write and record it as a child span of each record it wrote."""
        started = time_ns()
        error: BaseException | None = None
        try:
            yield
        except BaseException as raised:
            error = raised
            raise
        finally:
            ended = time_ns()
            attributes: dict[str, AttributeValue] = {
                "db.system.name": "mongodb",
                "db.collection.name": collection,
            }
            for position in positions:
                parent = self._spans.get(position)
                if parent is None:
                    continue
                child = self._tracer.start_span(
                    name,
                    context=trace.set_span_in_context(parent),
                    kind=SpanKind.CLIENT,
                    attributes=attributes,
                    start_time=started,
                )
                if error is not None:
                    child.set_status(Status(StatusCode.ERROR, type(error).__name__))
                child.end(end_time=ended)

    def end(self, error: BaseException | None = None) -> None:
        """End every record's span, marking them failed if the batch failed."""
        for span in self._spans.values():
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.end()
