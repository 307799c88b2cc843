"""Decode any stored or in-flight event into the newest model, and encode one.

Each old version ``N`` has an upcaster ``upcast_vN_vN+1`` that rewrites the raw JSON object one
step; :func:`decode_event` applies them in order. A version newer than this code knows raises
:class:`UnknownSchemaVersionError` so the worker dead-letters it instead of guessing.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any, Final

from pydantic import ValidationError

from ca4_schemas.v1 import GpuMetadataReportV1
from ca4_schemas.v2 import GpuMetadataReportedV2, upcast_v1_v2

JsonObject = dict[str, Any]

LATEST_SCHEMA_VERSION: Final = 2
"""The version this code writes."""

GpuMetadataReported = GpuMetadataReportedV2
"""The newest event model; code outside this package uses this name."""
GpuMetadataReport = GpuMetadataReportV1
"""The newest client report model (version 2 changed only what the processor stamps)."""

UPCASTERS: dict[int, Callable[[JsonObject], JsonObject]] = {1: upcast_v1_v2}
"""``UPCASTERS[n]`` turns a version-``n`` object into a version-``n + 1`` object."""


def encode_event(event: GpuMetadataReported) -> bytes:
    """The event as the processor publishes it: JSON without the fields that are ``None``.

    A GPU sample has about thirty optional fields and a collector reads some: writing the rest
    as ``null`` made every record carry them through Kafka, the archive and the worker's decode
    (``docs/architecture.md``, "Events without their null fields"). Every nullable field
    defaults to ``None``, so :func:`decode_event` reads it back as the same event. (Memory
    bounds weigh a record by its objects and strings too, :func:`ca4_schemas.record_weight`,
    since decoded, a model holds every field either way.)
    """
    return event.model_dump_json(exclude_none=True).encode()


class EventDecodeError(ValueError):
    """The bytes are not an event this code can read; ``error_class`` names why, for the DLQ."""

    error_class = "invalid_event"


class InvalidJsonError(EventDecodeError):
    """The message body is not a JSON object."""

    error_class = "invalid_json"


class UnknownSchemaVersionError(EventDecodeError):
    """The event comes from a newer producer than this code understands."""

    error_class = "unknown_schema_version"


def upcast(raw: JsonObject) -> JsonObject:
    """Rewrite a raw event object of any known version into the latest version's shape."""
    version = raw.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise EventDecodeError(f"schema_version must be a positive integer, got {version!r}")
    if version > LATEST_SCHEMA_VERSION:
        raise UnknownSchemaVersionError(
            f"schema_version {version} is newer than the latest known ({LATEST_SCHEMA_VERSION})"
        )
    while version < LATEST_SCHEMA_VERSION:
        raw = UPCASTERS[version](raw)
        version += 1
        raw["schema_version"] = version
    return raw


def decode_event(body: bytes | str | JsonObject) -> GpuMetadataReported:
    """Parse, upcast and validate one event (raises :class:`EventDecodeError` subclasses).

    Pydantic's ``ValidationError`` is raised unchanged for a well-formed event of a known
    version that breaks the contract.
    """
    if not isinstance(body, dict):
        # The common case, newest version: validate the text once, in pydantic-core (the
        # version field is strict, so this accepts exactly the latest integer version). Anything
        # else is parsed and classified below, which costs only the events that are not.
        with contextlib.suppress(ValidationError):
            event = GpuMetadataReported.model_validate_json(body)
            if "schema_version" in event.model_fields_set:
                return event
        try:
            raw = json.loads(body)
        # ValueError covers bad UTF-8, bad JSON and integers past Python's digit limit.
        except (ValueError, RecursionError) as error:
            raise InvalidJsonError(f"body is not valid JSON: {error}") from error
        if not isinstance(raw, dict):
            raise InvalidJsonError(f"body must be a JSON object, got {type(raw).__name__}")
    else:
        raw = body
    return GpuMetadataReported.model_validate_json(json.dumps(upcast(dict(raw))))
