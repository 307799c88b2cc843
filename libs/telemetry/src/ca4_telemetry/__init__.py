"""Logging and tracing set-up shared by the CA4 services.

Kept apart from ``ca4_schemas`` (the data contract) so that services still share exactly one
library each for contract and for operations, and never depend on each other.
"""

from ca4_telemetry.logging import configure_logging
from ca4_telemetry.tracing import (
    configure_tracing,
    export_spans_to,
    extract_context,
    headers_with_trace_context,
    spans_recorded,
    tracer,
)

__all__ = [
    "configure_logging",
    "configure_tracing",
    "export_spans_to",
    "extract_context",
    "headers_with_trace_context",
    "spans_recorded",
    "tracer",
]
