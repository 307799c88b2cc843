"""structlog configured for JSON lines on stdout, each carrying the current trace id."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace


def _add_trace_context(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Stamp ``trace_id``/``span_id`` so Loki lines link to the trace (Grafana derived field)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def configure_logging(service: str, level: str = "INFO", *, json_logs: bool = True) -> None:
    """Route structlog and stdlib logging to one JSON-lines stream on stdout.

    :param service: written as ``service`` on every line, so one Loki query can split by it.
    :param level: minimum level name (``DEBUG``, ``INFO``, ...).
    :param json_logs: ``False`` renders coloured console lines for local debugging.
    """
    numeric_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_context,
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # uvicorn configures its own loggers (plain text on stderr) before it imports the app:
    # their lines (start-up, shutdown, an application's unhandled error) join the JSON stream.
    # ``--no-access-log`` leaves the access logger without handlers and not propagating, and
    # uvicorn logs a request only when the logger has a handler: it stays that way.
    for name in UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        if name == "uvicorn.access" and not uvicorn_logger.handlers:
            continue
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    structlog.contextvars.bind_contextvars(service=service)
