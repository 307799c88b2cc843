"""HTTP API models of the processor's ingest endpoints, shared with the SDK and the tests.

Error bodies keep FastAPI's familiar shape, so any client that already reads FastAPI errors
reads ours: ``{"detail": "message"}`` for request-level errors, and
``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`` for validation errors, where ``loc``
is the path of the offending field (``["body", "payload", "gpus", 0, "power_draw_w"]``).
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ca4_schemas.bounded import bounded_text
from ca4_schemas.upcasting import GpuMetadataReport

DEFAULT_MAX_BATCH_SIZE = 500
"""The processor's default cap on reports per batch request."""
ERROR_LOC_PART_MAX_BYTES = 64
"""The most UTF-8 bytes of one key named in an error's ``loc``: a key is the client's choice, and
an answer waits in the processor until its client reads it, so a megabyte key repeated in each
of a thousand errors would make every 422 a lever on the processor's memory."""
ERROR_MSG_MAX_BYTES = 1024
"""The most UTF-8 bytes of an error's ``msg`` (some quote the input, such as a repeated key)."""


class _ApiModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class ErrorItem(_ApiModel):
    """One validation problem, located by the path of the offending field."""

    loc: list[str | int]
    """Where the problem is: ``body`` then the field path (list positions as integers)."""
    msg: str
    """Human-readable explanation."""
    type: str
    """Stable machine-readable error type such as ``missing`` or ``less_than_equal``."""

    @field_validator("loc")
    @classmethod
    def _bounded_keys(cls, loc: list[str | int]) -> list[str | int]:
        """A key past :data:`ERROR_LOC_PART_MAX_BYTES` is cut, with a digest of the whole."""
        return [
            part if isinstance(part, int) else bounded_text(part, ERROR_LOC_PART_MAX_BYTES)
            for part in loc
        ]

    @field_validator("msg")
    @classmethod
    def _bounded_msg(cls, msg: str) -> str:
        return bounded_text(msg, ERROR_MSG_MAX_BYTES)


class ValidationErrorBody(_ApiModel):
    """The body of a ``422`` (or any error about specific fields)."""

    detail: list[ErrorItem]
    """The problems found, not just the first: up to 100 per report, then one item
    (``too_many_errors``) saying how many more there were."""


class MessageErrorBody(_ApiModel):
    """The body of a request-level error (``401``, ``413``, ``415``, ``429``, ``503``, ...)."""

    detail: str
    """What went wrong and what to do about it."""


class Receipt(_ApiModel):
    """Proof that Kafka acknowledged one event (``acks=all``)."""

    event_id: UUID
    """The report's own ``event_id``; a retried report yields the same id."""
    topic: str
    """Kafka topic the event was written to."""
    partition: int
    """Kafka partition (chosen by ``session_id``)."""
    offset: int
    """Kafka offset within the partition."""


class BatchRequest(_ApiModel):
    """Several reports in one request (``POST /v1/metadata/batch``)."""

    reports: Annotated[list[GpuMetadataReport], Field(min_length=1)]
    """The reports, each validated and published on its own; the processor caps the count."""


class BatchItemResult(_ApiModel):
    """What happened to one report of a batch."""

    index: int
    """Position of the report in the request's ``reports`` list."""
    status: Literal["accepted", "rejected"]
    """``accepted``: Kafka acknowledged it; ``rejected``: it broke the contract."""
    receipt: Receipt | None = None
    """Set when accepted."""
    errors: list[ErrorItem] | None = None
    """Set when rejected; ``loc`` is relative to the whole request body."""


class BatchResponse(_ApiModel):
    """The answer to a batch: one result per report, in request order."""

    accepted: int
    """How many reports Kafka acknowledged."""
    rejected: int
    """How many reports were rejected."""
    results: list[BatchItemResult]
    """One entry per report, ``results[i].index == i``."""
