"""Hypothesis strategies that generate only contract-valid report bodies (as JSON-ready dicts)."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

_SAFE_TEXT = st.text(
    alphabet=st.characters(
        categories=("L", "N", "P", "S", "Zs"), exclude_characters="\u2028\u2029"
    ),
    min_size=1,
    max_size=40,
).filter(lambda text: text.strip() != "")
_IDENTIFIER = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:\-]{0,40}\Z")
_LABEL_KEY = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_\-]{0,20}\Z")


def _finite(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


_NON_NEGATIVE = _finite(0.0, 1e15)
_PERCENT = _finite(0.0, 100.0)
_COUNT = st.integers(min_value=0, max_value=2**53)
_AWARE_DATETIME = st.datetimes(
    min_value=datetime(2000, 1, 2),  # naive: a day past the floor in every zone below
    max_value=datetime(2099, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=-8)), timezone(timedelta(hours=5, minutes=30))]
    ),
)


@st.composite
def gpu_samples(draw: st.DrawFn, uuid: str) -> dict[str, Any]:
    """One GPU sample with any subset of the optional measurements."""
    return {
        "uuid": uuid,
        "index": draw(st.integers(0, 63)),
        "name": draw(_SAFE_TEXT),
        "pci_bus_id": draw(_optional(_SAFE_TEXT)),
        "memory_total_mib": draw(_optional(_NON_NEGATIVE)),
        "memory_used_mib": draw(_optional(_NON_NEGATIVE)),
        "utilization_gpu_pct": draw(_optional(_PERCENT)),
        "fan_speed_pct": draw(_optional(_PERCENT)),
        "temperature_gpu_c": draw(_optional(_finite(-50.0, 200.0))),
        "power_draw_w": draw(_optional(_NON_NEGATIVE)),
        "ecc_errors_corrected": draw(_optional(_COUNT)),
        "performance_state": draw(_optional(st.sampled_from(["P0", "P2", "P8", "P15"]))),
        "persistence_mode": draw(_optional(st.booleans())),
        "throttle_reasons": draw(st.lists(_SAFE_TEXT, max_size=3)),
        "mig": draw(
            _optional(
                st.fixed_dictionaries(
                    {"parent_uuid": _SAFE_TEXT, "gpu_instance_id": _COUNT},
                    optional={"profile": _SAFE_TEXT},
                )
            )
        ),
        "processes": draw(
            st.lists(
                st.fixed_dictionaries(
                    {"pid": _COUNT},
                    optional={"name": _SAFE_TEXT, "used_memory_mib": _NON_NEGATIVE},
                ),
                max_size=3,
            )
        ),
    }


@st.composite
def report_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid ``GpuMetadataReport`` body."""
    uuids = draw(st.lists(_SAFE_TEXT, max_size=4, unique_by=str.strip))
    now = datetime.now(UTC)
    return {
        "event_id": str(draw(st.uuids())),
        "occurred_at": draw(_AWARE_DATETIME.filter(lambda moment: moment < now)).isoformat(),
        "source": {
            "sdk": draw(_SAFE_TEXT),
            "sdk_version": draw(_SAFE_TEXT),
            "runtime": draw(st.sampled_from(["colab", "kaggle", "python", "jupyter"])),
        },
        "session_id": draw(_IDENTIFIER),
        "labels": draw(
            st.dictionaries(_LABEL_KEY, st.text(max_size=30).filter(_printable), max_size=5)
        ),
        "payload": {
            "host": {
                "hostname": draw(_SAFE_TEXT),
                "os": draw(_SAFE_TEXT),
                "python_version": draw(_SAFE_TEXT),
                "cpu_count": draw(st.integers(1, 65536)),
                "ram_total_mib": draw(_NON_NEGATIVE),
                "cuda_version": draw(_optional(_SAFE_TEXT)),
            },
            "gpus": [draw(gpu_samples(uuid)) for uuid in uuids],
            "collector": {
                "collector": draw(st.sampled_from(["nvml", "nvidia-smi", "none"])),
                "errors": draw(st.lists(_SAFE_TEXT, max_size=2)),
            },
        },
    }


def _printable(text: str) -> bool:
    return all(
        unicodedata.category(char) not in {"Cc", "Cn", "Cs", "Co"}
        and char not in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
        for char in text
    )
