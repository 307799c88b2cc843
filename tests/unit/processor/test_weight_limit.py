"""The body weight limit: every report the topic takes fits on its own, batches of ordinary SDK
reports are never refused, crafted bodies are (tests/unit/processor/bad_inputs.py), and what
decoding a body holds stays a few times its weight even when it fails validation."""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import tracemalloc
from typing import Any

import httpx
import pytest
from ca4_processor.body import body_weight
from ca4_processor.core.config import Settings
from ca4_processor.validation import (
    MAX_ERRORS_LISTED,
    RequestValidationFailedError,
    parse_batch,
    parse_report,
)
from ca4_schemas import GpuMetadataReport
from ca4_schemas.v1 import MAX_GPUS_PER_REPORT, MAX_LABELS, MAX_PROCESSES_PER_GPU

from tests.support.reports import h100_session, make_report
from tests.unit.processor.conftest import DEV_HEADERS, FakePublisher

SETTINGS = Settings(ENVIRONMENT="dev")


def compact(value: Any) -> bytes:
    """JSON as the SDK writes it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def largest_sdk_batch(gpus: int) -> bytes:
    """As many of the SDK's H100 reports (a process per GPU, every field it reads, labels) as
    one request takes: up to the batch size, within the decompressed byte limit."""
    session = h100_session(gpus)
    reports: list[bytes] = []
    size = len(b'{"reports":[]}') - 1  # a comma before each report but the first
    while len(reports) < SETTINGS.MAX_BATCH_SIZE:
        report = compact(session.next_report())
        if size + 1 + len(report) > SETTINGS.MAX_DECOMPRESSED_BYTES:
            break
        reports.append(report)
        size += 1 + len(report)
    body = b'{"reports":[' + b",".join(reports) + b"]}"
    assert len(body) == size
    return body


@pytest.mark.parametrize("gpus", [0, 1, 8, 14, 64])
def test_the_largest_batch_of_sdk_reports_weighs_under_the_limit(gpus: int) -> None:
    """So the weight limit never refuses a batch of ordinary reports that the byte limits
    take: they weigh 3.1-3.8 times their bytes, the larger ratios at few GPUs, where the batch
    size limits a batch long before its bytes do (16.2 MB at most, at 14 GPUs)."""
    body = largest_sdk_batch(gpus)
    assert body_weight(body) < SETTINGS.MAX_BODY_WEIGHT, (len(body), body_weight(body))


def test_every_object_and_array_a_report_can_hold_fits_on_its_own() -> None:
    """64 GPUs of 256 bare processes, every list full of distinct characters: 214 KB that
    weigh 2.3 MB, far under the limit. Text filling the rest of what the topic takes (1 MiB a
    message; a larger report is refused by the topic anyway) adds a few times its bytes, unless
    it is mostly commas or quotes (each counts as a value or half a string)."""
    characters = (chr(code) for code in itertools.count(0x4E00))
    report = make_report()
    report["payload"]["gpus"] = [
        {
            "uuid": f"GPU-{index:08d}",
            "index": index,
            "name": "H100",
            "mig": {"parent_uuid": "GPU-parent", "gpu_instance_id": 1, "profile": "1g.10gb"},
            "throttle_reasons": [next(characters) for _ in range(32)],
            "processes": [{"pid": pid} for pid in range(1, MAX_PROCESSES_PER_GPU + 1)],
        }
        for index in range(MAX_GPUS_PER_REPORT)
    ]
    report["labels"] = {f"k{index}": next(characters) for index in range(MAX_LABELS)}
    report["payload"]["collector"] = {
        "collector": "nvml",
        "unavailable_fields": [next(characters) for _ in range(128)],
        "errors": [next(characters) for _ in range(16)],
    }
    GpuMetadataReport.model_validate(report)
    body = compact(report)
    assert len(body) <= SETTINGS.KAFKA_MAX_REQUEST_SIZE
    assert body_weight(body) < SETTINGS.MAX_BODY_WEIGHT, body_weight(body)


MAX_FAILURE_RATIO = 24
"""What decoding a body that fails validation may hold in Python objects, in multiples of its
weight (up to 22.8 measured: each error copies its input, and a value nested under objects that
lack their required fields is copied once per missing field of each, twelve times under a MIG
slice); by record weight alone, the same bodies held up to 280 times. pydantic-core's own parse
and errors, which tracemalloc does not see, about double it (docs/architecture.md)."""
CRAFTED_VALUES: dict[str, list[Any]] = {
    "empty arrays": [[] for _ in range(10_000)],
    "floats": [0.5 for _ in range(10_000)],
    "large integers": [100_000 for _ in range(10_000)],
    "empty objects": [{} for _ in range(10_000)],
    "distinct short strings": [
        chr(0x4E00 + index % 20_000) + chr(0x4E00 + index // 20_000) for index in range(10_000)
    ],
    "distinct astral characters": [chr(0x10000 + index) for index in range(10_000)],
}
NESTED_IN = {
    "a report with nothing else": lambda values: {"x": values},
    "a GPU with nothing else": lambda values: {"payload": {"gpus": [{"x": values}]}},
    "a process with nothing else": lambda values: {
        "payload": {"gpus": [{"processes": [{"x": values}]}]}
    },
    "a host with nothing else": lambda values: {"payload": {"host": {"x": values}}},
    "a MIG slice with nothing else": lambda values: {"payload": {"gpus": [{"mig": {"x": values}}]}},
}
BAD_KEYS = {
    "a GPU": lambda keys: {"payload": {"gpus": [dict.fromkeys(keys, 0)]}},
    "a MIG slice": lambda keys: {"payload": {"gpus": [{"mig": dict.fromkeys(keys, 0)}]}},
}
"""Objects of many unknown keys, each an error of its own (too many labels are one error:
tests/unit/schemas/test_bounds.py)."""


def peak_while(parse: Any) -> int:
    gc.collect()
    tracemalloc.start()
    with contextlib.suppress(RequestValidationFailedError):
        parse()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize("nest", NESTED_IN.values(), ids=NESTED_IN.keys())
@pytest.mark.parametrize("values", CRAFTED_VALUES.values(), ids=CRAFTED_VALUES.keys())
def test_a_body_that_fails_validation_holds_a_few_times_its_weight(
    values: list[Any], nest: Any
) -> None:
    """A key holder's body is refused by its weight before it is decoded, so what decoding
    it may hold must follow the weight whether it validates or not (the processor's memory
    limit is 512 MiB; a batch's first pass used to stay alive through the second, too)."""
    report = nest(values)
    single = compact(report)
    batch = compact({"reports": [report]})
    held = {
        "report": peak_while(lambda: parse_report(single)) / body_weight(single),
        "batch": peak_while(lambda: parse_batch(batch, max_batch_size=500)) / body_weight(batch),
    }
    assert max(held.values()) <= MAX_FAILURE_RATIO, held


@pytest.mark.parametrize("nest", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_a_body_of_many_bad_keys_lists_a_hundred_errors(nest: Any) -> None:
    """One error per key: listing them all (dicts, items, the message, the response) held
    45-94 times the body's weight and took seconds of CPU; now the first hundred are listed
    and one more item says how many were left out."""
    keys = [f"-{index:05d}" for index in range(20_000)]  # not a label key, nor a field
    body = compact(nest(keys))
    with pytest.raises(RequestValidationFailedError) as refused:
        parse_report(body)
    errors = refused.value.errors
    assert len(errors) == MAX_ERRORS_LISTED + 1
    assert errors[-1].type == "too_many_errors"
    assert errors[-1].msg.endswith(f"more errors not listed (at most {MAX_ERRORS_LISTED} are)")
    assert peak_while(lambda: parse_report(body)) / body_weight(body) <= MAX_FAILURE_RATIO
    batch = compact({"reports": [nest(keys)]})
    rejected = parse_batch(batch, max_batch_size=500).rejected[0]
    assert len(rejected) == MAX_ERRORS_LISTED + 1
    assert peak_while(lambda: parse_batch(batch, max_batch_size=500)) / body_weight(batch) <= (
        MAX_FAILURE_RATIO
    )


def test_a_batch_of_too_many_items_is_one_error() -> None:
    """The report count is checked before any report is validated: half a million bad items
    made one error each, and the processor held 420 MB for a 600 KB body."""
    body = compact({"reports": [0] * 200_000})
    with pytest.raises(RequestValidationFailedError) as refused:
        parse_batch(body, max_batch_size=500)
    (error,) = refused.value.errors
    assert error.loc == ["body", "reports"]
    assert error.type == "too_long"
    assert error.msg == (
        "List should have at most 500 items after validation, not 200000; split the batch"
    )


def process_heavy_reports(count: int) -> list[dict[str, Any]]:
    """The review's batch: one GPU of 256 processes of a bare ``{"pid": n}`` per report."""
    reports = []
    for _ in range(count):
        report = make_report(occurred_at="2026-01-01T00:00:00+00:00")
        report["payload"]["gpus"][0]["processes"] = [
            {"pid": pid} for pid in range(MAX_PROCESSES_PER_GPU)
        ]
        reports.append(report)
    return reports


async def test_a_batch_over_the_weight_limit_is_told_how_to_split_and_its_halves_fit(
    client: httpx.AsyncClient, fake_publisher: FakePublisher
) -> None:
    """500 such reports are 1.88 MB, far under the byte limit, and weigh 18.3 MB. The ``413``
    said only the weight, which no client can compute; it now says how much of such JSON fits
    and into how many batches to split (the SDK halves a batch on ``413``)."""
    reports = process_heavy_reports(500)
    headers = {**DEV_HEADERS, "Content-Type": "application/json"}

    whole = await client.post(
        "/v1/metadata/batch", content=compact({"reports": reports}), headers=headers
    )
    halves = [
        await client.post("/v1/metadata/batch", content=compact({"reports": half}), headers=headers)
        for half in (reports[:250], reports[250:])
    ]

    assert whole.status_code == 413
    assert whole.json() == {
        "detail": "body weighs 18283633 bytes, over the 16777216-byte limit (its bytes plus 80 "
        "per JSON object, 64 per array, 32 per comma and 8 per string: a bound on what decoding "
        "it holds); at 9.7 times its 1883513 bytes of JSON (before gzip), at most 1728327 bytes "
        "of such JSON fit: split the batch into at least 2 smaller ones"
    }
    assert [response.status_code for response in halves] == [202, 202]
    assert len(fake_publisher.published) == 500


async def test_a_single_report_over_the_weight_limit_is_told_to_be_smaller(
    client: httpx.AsyncClient,
) -> None:
    body = b'{"payload":{"gpus":[' + b",".join([b"[]"] * 200_000) + b"]}}"

    response = await client.post(
        "/v1/metadata", content=body, headers={**DEV_HEADERS, "Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json() == {
        "detail": "body weighs 19800230 bytes, over the 16777216-byte limit (its bytes plus 80 "
        "per JSON object, 64 per array, 32 per comma and 8 per string: a bound on what decoding "
        "it holds); at 33.0 times its 600022 bytes of JSON (before gzip), at most 508413 bytes "
        "of such JSON fit: send a smaller report"
    }
