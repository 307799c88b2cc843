"""Build one report dict per the event contract (``ca4_schemas.GpuMetadataReport``).

Plain dicts, no pydantic: the SDK stays light enough for any notebook. Tests validate every
built report against the real contract model.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ca4_sdk._version import SDK_NAME, SDK_VERSION
from ca4_sdk.collectors.base import MAX_ERRORS, CollectorResult
from ca4_sdk.privacy import apply_privacy

ReportDict = dict[str, Any]

MAX_LABELS = 32
LABEL_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
MAX_LABEL_VALUE = 256
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Co"})
_BIDI_OVERRIDES = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""What the contract refuses in a label value (``ca4_schemas.types.LabelValue``) whatever the
Unicode version: controls, a line break read from a file among them, surrogate and private-use
characters, bidi overrides, and noncharacters (see :func:`_refused_in_a_label`)."""
MAX_LABELS_BYTES = 16 * 1024
"""The contract's cap on a report's label keys and values together, in UTF-8 (any 32 ASCII
labels fit)."""
MAX_GPUS = 64
MAX_PROCESSES_PER_GPU = 256
"""The contract's cap on one GPU's (or MIG slice's) processes: a report with more is refused
for good, so a busy GPU would never be reported at all."""


def _refused_in_a_label(character: str) -> bool:
    """Whether the API refuses ``character`` in a label value on any Python it runs on.

    The contract also refuses unassigned characters, by the API's Unicode database; this
    Python's may be older (3.10 knows Unicode 13, the API's 3.11 knows 14): a character it does
    not know yet (an emoji newer than it) is left to the API, which takes it. Only noncharacters
    are unassigned in every version.
    """
    if unicodedata.category(character) in _REFUSED_CATEGORIES or character in _BIDI_OVERRIDES:
        return True
    code = ord(character)
    return 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE


def validate_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    """Check labels early, in the caller's cell, instead of having every report rejected."""
    checked = dict(labels or {})
    if len(checked) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels, got {len(checked)}")
    for key, value in checked.items():
        # fullmatch: the pattern's $ matches before a final line break, the contract's does not.
        if not isinstance(key, str) or not LABEL_KEY.fullmatch(key):
            raise ValueError(f"label key {key!r} must match {LABEL_KEY.pattern}")
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE:
            raise ValueError(f"label {key!r} must be a string of at most {MAX_LABEL_VALUE} chars")
        for position, character in enumerate(value, start=1):
            if _refused_in_a_label(character):
                category = unicodedata.category(character)
                name = unicodedata.name(
                    character, "a control character" if category == "Cc" else ""
                )
                raise ValueError(
                    f"label {key!r} has U+{ord(character):04X}{f' ({name})' if name else ''} at "
                    f"position {position}: the API refuses every report with it (.strip() a "
                    "value read from a file)"
                )
    size = sum(len(key) + len(value.encode()) for key, value in checked.items())
    if size > MAX_LABELS_BYTES:
        raise ValueError(
            f"labels must be at most {MAX_LABELS_BYTES} bytes in UTF-8 altogether, got {size}"
        )
    return checked


def _cap_processes(gpu: dict[str, Any]) -> int:
    """Keep at most :data:`MAX_PROCESSES_PER_GPU` of ``gpu``'s processes, those using the most
    GPU memory (ties: the first listed), in their order; returns how many were left out."""
    processes = gpu.get("processes")
    if not isinstance(processes, list) or len(processes) <= MAX_PROCESSES_PER_GPU:
        return 0

    def memory(index: int) -> float:
        used = processes[index].get("used_memory_mib")
        return float(used) if isinstance(used, (int, float)) else -1.0

    kept = sorted(sorted(range(len(processes)), key=memory, reverse=True)[:MAX_PROCESSES_PER_GPU])
    gpu["processes"] = [processes[index] for index in kept]
    return len(processes) - len(kept)


def build_report(
    *,
    session_id: str,
    runtime: str,
    host: Mapping[str, Any],
    collection: CollectorResult,
    labels: Mapping[str, str] | None = None,
    privacy_salt: str | None = None,
    occurred_at: datetime | None = None,
    event_id: uuid.UUID | None = None,
) -> ReportDict:
    """A report ready to POST; ``privacy_salt`` set means privacy mode (hashed host, no names)."""
    gpus = [dict(gpu) for gpu in collection.gpus[:MAX_GPUS]]
    errors = list(collection.errors)
    left_out = sum(_cap_processes(gpu) for gpu in gpus)
    if left_out and len(errors) < MAX_ERRORS:
        errors.append(
            f"processes: {left_out} left out, past the {MAX_PROCESSES_PER_GPU} per GPU or MIG "
            "slice a report takes (those using the most GPU memory are kept)"
        )
    payload: dict[str, Any] = {
        "host": dict(host),
        "gpus": gpus,
        "collector": {
            "collector": collection.collector,
            "unavailable_fields": list(collection.unavailable_fields),
            "errors": errors,
        },
    }
    if privacy_salt is not None:
        payload = apply_privacy(payload, privacy_salt)
    when = occurred_at or datetime.now(timezone.utc)
    return {
        "event_id": str(event_id or uuid.uuid4()),
        "event_type": "gpu.metadata.reported",
        "schema_version": 1,
        "occurred_at": when.astimezone(timezone.utc).isoformat(timespec="milliseconds"),
        "source": {"sdk": SDK_NAME, "sdk_version": SDK_VERSION, "runtime": runtime},
        "session_id": session_id,
        "labels": dict(labels or {}),
        "payload": payload,
    }
