"""A server span per HTTP request, continuing the caller's W3C trace context if it sent one."""

from __future__ import annotations

from ca4_telemetry import tracer
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_tracer = tracer(__name__)
_UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_TRACE_HEADERS = frozenset({"traceparent", "tracestate"})


class RequestTracingMiddleware:
    """Pure ASGI (no response buffering), so it costs microseconds per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wrap the request in a ``SERVER`` span named ``METHOD /path``."""
        if scope["type"] != "http" or scope["path"] in _UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        carrier = {
            name: value.decode("latin-1")
            for key, value in scope["headers"]
            if (name := key.decode("latin-1")) in _TRACE_HEADERS
        }
        with _tracer.start_as_current_span(
            f"{scope['method']} {scope['path']}",
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": scope["method"], "url.path": scope["path"]},
        ) as span:

            async def send_with_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                    if message["status"] >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, send_with_status)
