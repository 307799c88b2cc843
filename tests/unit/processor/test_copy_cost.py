"""Large bodies whose reports would make pydantic's errors hold too much (missing fields around
much content, many unknown keys) are refused before pydantic validates them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from functools import partial
from typing import Any

import pytest
from ca4_processor.body import body_weight
from ca4_processor.copy_cost import CHECK_ABOVE_WEIGHT, MAX_ERROR_BYTES, ReportError, copy_cost
from ca4_processor.validation import (
    MAX_ERRORS_PER_BATCH,
    RequestValidationFailedError,
    parse_batch,
    parse_report,
)
from ca4_schemas import GpuMetadataReport

from tests.support.reports import make_report
from tests.unit.processor.test_weight_limit import compact, largest_sdk_batch


def under_a_mig_slice(keys: int, report: dict[str, Any] | None = None) -> dict[str, Any]:
    """``report`` (by default one that lacks everything) whose first GPU's MIG slice holds
    ``keys`` unknown keys: pydantic copied a slice like this twelve times while refusing it."""
    report = report if report is not None else {"payload": {"gpus": [{}]}}
    report["payload"]["gpus"][0]["mig"] = {f"-{index:06d}": 0 for index in range(keys)}
    return report


def test_a_valid_report_costs_nothing() -> None:
    cost = copy_cost(make_report(), GpuMetadataReport)
    assert (cost.held_bytes, cost.errors, cost.error_count) == (0, [], 0)


def test_missing_fields_and_unknown_keys_are_the_errors_named() -> None:
    cost = copy_cost(under_a_mig_slice(3), GpuMetadataReport)

    missing = [error.loc for error in cost.errors if error.missing]
    assert missing == [
        ("event_id",),
        ("occurred_at",),
        ("session_id",),
        ("source",),
        ("payload", "collector"),
        ("payload", "host"),
        ("payload", "gpus", 0, "index"),
        ("payload", "gpus", 0, "name"),
        ("payload", "gpus", 0, "uuid"),
        ("payload", "gpus", 0, "mig", "gpu_instance_id"),
        ("payload", "gpus", 0, "mig", "parent_uuid"),
    ]
    assert [error for error in cost.errors if not error.missing] == [
        ReportError(("payload", "gpus", 0, "mig", f"-{index:06d}"), missing=False)
        for index in range(3)
    ]
    assert cost.error_count == 14


def test_a_heavy_report_lacking_fields_is_refused_unvalidated() -> None:
    body = compact(under_a_mig_slice(200_000))
    assert body_weight(body) > CHECK_ABOVE_WEIGHT

    with pytest.raises(RequestValidationFailedError) as refused:
        parse_report(body)

    errors = refused.value.errors
    # The walk names what it met until the estimate ran over: here the report's own fields.
    assert errors[0].model_dump() == {
        "loc": ["body", "event_id"],
        "msg": "Field required",
        "type": "missing",
    }
    assert errors[-1].type == "too_costly_to_validate"
    assert errors[-1].msg.startswith("not validated further: 4 missing fields and unknown keys")


def test_a_heavy_complete_report_of_unknown_keys_is_refused_unvalidated() -> None:
    """Nothing missing, but each unknown key is an error of its own (about 700 bytes each)."""
    body = compact(under_a_mig_slice(300_000, make_report()))

    with pytest.raises(RequestValidationFailedError) as refused:
        parse_report(body)

    named = [error.type for error in refused.value.errors[:-1]]
    assert named.count("extra_forbidden") == 98  # and the MIG slice's two missing fields
    assert refused.value.errors[-1].type == "too_costly_to_validate"


def test_a_heavy_batch_refuses_only_its_costly_report() -> None:
    body = compact({"reports": [make_report(), under_a_mig_slice(200_000), {"payload": {}}]})

    parsed = parse_batch(body, max_batch_size=500)

    assert list(parsed.reports) == [0]
    assert parsed.rejected[1][0].loc == ["body", "reports", 1, "event_id"]
    assert parsed.rejected[1][-1].type == "too_costly_to_validate"
    # A light invalid report still gets pydantic's own errors.
    assert {error.type for error in parsed.rejected[2]} == {"missing"}
    assert parsed.size == 3


def test_a_heavy_batch_still_refuses_unknown_top_level_keys() -> None:
    body = compact({"reports": [make_report(), under_a_mig_slice(200_000)], "extra": 1})

    with pytest.raises(RequestValidationFailedError) as refused:
        parse_batch(body, max_batch_size=500)

    assert [error.model_dump() for error in refused.value.errors] == [
        {
            "loc": ["body", "extra"],
            "msg": "Extra inputs are not permitted",
            "type": "extra_forbidden",
        }
    ]


def test_a_heavy_batch_over_the_cap_is_refused_whole() -> None:
    body = compact({"reports": [under_a_mig_slice(2_000) for _ in range(600)]})

    with pytest.raises(RequestValidationFailedError) as refused:
        parse_batch(body, max_batch_size=500)

    (error,) = refused.value.errors
    assert error.msg == (
        "List should have at most 500 items after validation, not 600; split the batch"
    )


def test_the_walk_reads_no_further_than_pydantic() -> None:
    """Pydantic stops reading a list one past its cap; a walk of 145,000 GPUs took 1.8 s."""
    report = make_report()
    report["payload"]["gpus"] = [{} for _ in range(145_000)]
    started = time.process_time()
    cost = copy_cost(report, GpuMetadataReport)
    assert cost.error_count == 3 * 65
    assert time.process_time() - started < 0.5


@pytest.mark.parametrize("gpus", [1, 8, 14, 64])
def test_heavy_batches_of_sdk_reports_are_validated_whole(gpus: int) -> None:
    body = largest_sdk_batch(gpus)
    parsed = parse_batch(body, max_batch_size=500)
    assert not parsed.rejected
    assert len(parsed.reports) == parsed.size


HELD_SCRIPT = """
import json, sys
from ca4_processor.body import body_weight
from ca4_processor.validation import (
    MAX_ERRORS_PER_BATCH,
    RequestValidationFailedError,
    parse_batch,
    parse_report,
)

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

body = sys.stdin.buffer.read()
before = rss("VmRSS")
try:
    if sys.argv[1] == "batch":
        parse_batch(body, max_batch_size=500)
    else:
        parse_report(body)
except RequestValidationFailedError:
    pass
print(rss("VmHWM") - before)
"""


def held_while_refusing(body: bytes, *, batch: bool = True) -> float:
    """Peak memory growth of a process of its own refusing ``body`` as a batch or a report
    (pydantic-core's parse and errors are not Python objects: tracemalloc misses them)."""
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(HELD_SCRIPT), "batch" if batch else "report"],
        input=body,
        check=True,
        capture_output=True,
    )
    return float(run.stdout)


CRAFTED = {
    "unknown keys under a MIG slice of a report lacking everything": lambda: {
        "reports": [under_a_mig_slice(150_000)]
    },
    # Reviews': just under a budget counted in values, then both shapes in one batch; complete
    # reports whose every process has the wrong type (an error each, none foreseeable by the
    # walk); nulls, which cost pydantic-core more than Python.
    "complete reports of processes of the wrong type": lambda: {
        "reports": [
            {
                **make_report(),
                "payload": {
                    **make_report()["payload"],
                    "gpus": [
                        {"uuid": f"GPU-{index}", "index": 0, "name": "n", "processes": [0] * 256}
                        for index in range(64)
                    ],
                },
            }
            for _ in range(20)
        ]
    },
    "nulls under a MIG slice of a report lacking everything": lambda: {
        "reports": [{"payload": {"gpus": [{"mig": {"x": [None] * 300_000}}]}}]
    },
    "astral characters under a MIG slice, and a complete report of unknown keys": lambda: {
        "reports": [
            {"payload": {"gpus": [{"mig": {"x": [chr(0x10000 + i) for i in range(45_000)]}}]}},
            under_a_mig_slice(240_000, make_report()),
        ]
    },
}


@pytest.mark.parametrize("crafted", CRAFTED.values(), ids=CRAFTED.keys())
def test_refusing_a_crafted_batch_holds_its_decoding_and_the_budget(crafted: Any) -> None:
    """At most the body's plain decoding (a few times its weight) and what the reports within
    the budget cost pydantic; they held 32-48 times their weight (348-399 MB) before the walk.
    """
    body = compact(crafted())
    assert held_while_refusing(body) <= 4 * body_weight(body) + MAX_ERROR_BYTES


def repeated_key_under_a_mig_slice(nulls: int) -> bytes:
    """A report lacking everything whose MIG slice names ``"x"`` twice, first with ``nulls``
    nulls: the plain decoding keeps the last ``"x"``, pydantic's errors copied the first too."""
    return b'{"payload":{"gpus":[{"mig":{"x":[' + b",".join([b"null"] * nulls) + b'],"x":0}}]}}'


def test_a_heavy_body_repeating_a_key_is_refused() -> None:
    report = repeated_key_under_a_mig_slice(440_000)
    batch = b'{"reports":[' + report + b"]}"
    assert body_weight(report) > CHECK_ABOVE_WEIGHT

    for body, parse in ((report, parse_report), (batch, partial(parse_batch, max_batch_size=500))):
        with pytest.raises(RequestValidationFailedError) as refused:
            parse(body)
        column = body.rindex(b'"x":') + 5  # jiter's, one-based, at the repeated key's value
        assert [error.model_dump() for error in refused.value.errors] == [
            {
                "loc": ["body"],
                "msg": (
                    f'Detected duplicate key "x" at line 1 column {column}; '
                    "a body this large must not repeat a key in an object"
                ),
                "type": "duplicate_key",
            }
        ]


def test_a_long_repeated_key_is_cut_and_the_hint_kept() -> None:
    """jiter's message quotes the key: a long one is cut (a digest stands for the rest), and
    the hint that says what to change stays whole."""
    key = "k" * 3_000
    body = repeated_key_under_a_mig_slice(440_000).replace(b'"x"', f'"{key}"'.encode())

    with pytest.raises(RequestValidationFailedError) as refused:
        parse_report(body)

    (error,) = refused.value.errors
    assert error.msg.startswith('Detected duplicate key "kkk')
    assert error.msg.endswith("~" + error.msg.split("~")[1])
    assert error.msg.endswith("; a body this large must not repeat a key in an object")
    assert len(error.msg.encode()) < 600


def test_refusing_a_heavy_report_repeating_a_key_holds_little() -> None:
    """A review's report held 173 MB while refused: the walk saw only the last "x"."""
    body = repeated_key_under_a_mig_slice(440_000)
    assert held_while_refusing(body, batch=False) <= 4 * body_weight(body)


def test_a_light_body_repeating_a_key_reads_the_last_as_pydantic_does() -> None:
    report = compact(make_report())
    repeated = report[:-1] + b',"session_id":"repeated"}'
    assert parse_report(repeated).session_id == "repeated"


def test_a_costly_report_past_most_of_the_batchs_errors_lists_only_what_is_left() -> None:
    """The batch's answer lists at most MAX_ERRORS_PER_BATCH errors: a costly report after 950
    of them named its first hundred all the same."""
    spent = [make_report() for _ in range(10)]
    for report in spent:
        report["payload"]["gpus"][0]["processes"] = list(range(95))  # 95 errors each
    costly = under_a_mig_slice(300_000, make_report())
    body = compact({"reports": [*spent, costly]})

    parsed = parse_batch(body, max_batch_size=500)

    listed = sum(len(errors) for errors in parsed.rejected.values())
    assert listed <= MAX_ERRORS_PER_BATCH + len(parsed.rejected)
    assert len(parsed.rejected[10]) == MAX_ERRORS_PER_BATCH - 950 + 1
    assert parsed.rejected[10][-1].type == "too_costly_to_validate"
