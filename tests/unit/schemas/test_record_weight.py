"""The worker's memory bounds count each record by its weight, and the weight must follow what
the record decodes to whatever a client leaves out: measured here on decoded events, for the
shapes a key holder controls (many GPUs, many processes, long lists of distinct short strings,
only required fields)."""

from __future__ import annotations

import gc
import itertools
import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from ca4_schemas import decode_event, encode_event, record_weight

from tests.unit.worker.factories import event_body

LOWEST_RATIO = 2
HIGHEST_RATIO = 11
"""What every shape decodes to, in multiples of its weight (2.2 to 8.2 when written); counted
by bytes instead, the same shapes ranged from 3.7 to 42 times."""


def decoded_bytes(root: object) -> int:
    """Memory held by ``root`` and everything it references that is its own (not ``None``,
    types, or the small integers every interpreter shares)."""
    seen: set[int] = set()
    total = 0
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen or item is None or isinstance(item, type | bool):
            continue
        if isinstance(item, int) and -5 <= item <= 256:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        stack.extend(gc.get_referents(item))
    return total


def required_only_gpu(index: int, processes: int = 0, reasons: int = 0) -> dict[str, Any]:
    gpu: dict[str, Any] = {"uuid": f"GPU-{index}", "index": index, "name": "H100"}
    if processes:
        gpu["processes"] = [{"pid": pid} for pid in range(1, processes + 1)]
    if reasons:
        gpu["throttle_reasons"] = [f"{reason:02d}" for reason in range(reasons)]
    return gpu


def distinct_characters() -> Iterator[str]:
    """One-character strings, each its own (repeated ones are shared once decoded): 3 bytes of
    UTF-8, a 76-byte string object."""
    return (chr(code) for code in itertools.count(0x4E00))


def short_strings_everywhere() -> dict[str, Any]:
    """Every list and label of a report filled with distinct one-character strings: no object
    to weigh, the most strings its bytes can hold."""
    characters = distinct_characters()
    gpus = [required_only_gpu(index) for index in range(64)]
    for gpu in gpus:
        gpu["throttle_reasons"] = [next(characters) for _ in range(32)]
    body = event_body(gpus=gpus)
    body["labels"] = {f"k{index}": next(characters) for index in range(32)}
    body["payload"]["collector"] = {
        "collector": "nvml",
        "unavailable_fields": [next(characters) for _ in range(128)],
        "errors": [next(characters) for _ in range(16)],
    }
    return body


def full_gpu(index: int) -> dict[str, Any]:
    return {
        **required_only_gpu(index),
        "memory_total_mib": 81559.0,
        "memory_used_mib": 1024.0,
        "utilization_gpu_pct": 97.0,
        "temperature_gpu_c": 61.0,
        "power_draw_w": 512.5,
        "processes": [{"pid": 4242, "name": "python3", "used_memory_mib": 1000.0}],
    }


SHAPES = {
    "one GPU": [full_gpu(0)],
    "eight GPUs": [full_gpu(index) for index in range(8)],
    "64 GPUs, required fields only": [required_only_gpu(index) for index in range(64)],
    "64 GPUs x 256 processes, required fields only": [
        required_only_gpu(index, processes=256) for index in range(64)
    ],
    "one GPU x 256 processes, required fields only": [required_only_gpu(0, processes=256)],
    "64 GPUs x 32 throttle reasons": [required_only_gpu(index, reasons=32) for index in range(64)],
}
BODIES = {
    **{name: event_body(gpus=gpus) for name, gpus in SHAPES.items()},
    "distinct short strings in every list and label": short_strings_everywhere(),
}


@pytest.mark.parametrize("published", [False, True], ids=["with nulls (before)", "published"])
@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_every_shape_decodes_to_a_few_times_its_weight(
    body: dict[str, Any], published: bool
) -> None:
    event = decode_event(json.dumps(body, ensure_ascii=False).encode())
    value = encode_event(event) if published else event.model_dump_json().encode()
    decoded = decoded_bytes(decode_event(value))
    assert LOWEST_RATIO <= decoded / record_weight(value) <= HIGHEST_RATIO, (
        f"{len(value)} bytes weigh {record_weight(value)} and decode to {decoded}"
    )


LAYOUTS = {
    "pretty-printed": {"indent": 1},
    "a space before each comma": {"separators": (" ,", ":")},
}


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_whitespace_hides_nothing_from_the_weight(body: dict[str, Any], layout: Any) -> None:
    """Anyone who can write to the topic (or POST to the processor) chooses the layout: a
    string followed by whitespace still counts. Counted by how values end in compact JSON
    (``",``), the short-strings shape decoded to 11.5 times its weight with a space before
    each comma."""
    published = json.loads(encode_event(decode_event(json.dumps(body).encode())))
    value = json.dumps(published, ensure_ascii=False, **layout).encode()
    decoded = decoded_bytes(decode_event(value))
    assert decoded / record_weight(value) <= HIGHEST_RATIO, (
        f"{len(value)} bytes weigh {record_weight(value)} and decode to {decoded}"
    )


def test_a_missing_value_weighs_nothing() -> None:
    assert record_weight(None) == 0
