"""Large bodies whose reports lack required fields around much content are refused before
pydantic validates them: its errors would copy that content once per missing field."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from ca4_processor.body import body_weight
from ca4_processor.copy_cost import CHECK_ABOVE_WEIGHT, MAX_COPIED_VALUES, copied_values
from ca4_processor.validation import RequestValidationFailedError, parse_batch, parse_report
from ca4_schemas import GpuMetadataReport

from tests.support.reports import make_report
from tests.unit.processor.test_weight_limit import compact, largest_sdk_batch


def under_a_mig_slice(keys: int) -> dict[str, Any]:
    """A report that lacks everything but a MIG slice of ``keys`` unknown keys: pydantic copied
    the slice twelve times while refusing it (32-48 times the body's weight held)."""
    return {"payload": {"gpus": [{"mig": {f"-{index:06d}": 0 for index in range(keys)}}]}}


def test_a_valid_report_copies_nothing() -> None:
    assert copied_values(make_report(), GpuMetadataReport) == (0, [])


def test_each_missing_field_copies_its_object() -> None:
    copies, missing = copied_values(under_a_mig_slice(1000), GpuMetadataReport)

    slice_values = 1 + 1000  # the slice and its values
    assert [field.loc for field in missing] == [
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
    # Each object lacking fields is copied whole once per field: the report (4 fields) holds the
    # payload, the GPU list and the GPU over the slice, the payload (2) three of them, the GPU
    # (3) itself, the slice (2) itself.
    expected = (
        4 * (slice_values + 4) + 2 * (slice_values + 3) + 3 * (slice_values + 1) + 2 * slice_values
    )
    assert copies == expected


def test_a_heavy_report_lacking_fields_is_refused_unvalidated() -> None:
    body = compact(under_a_mig_slice(200_000))
    assert body_weight(body) > CHECK_ABOVE_WEIGHT

    with pytest.raises(RequestValidationFailedError) as refused:
        parse_report(body)

    errors = refused.value.errors
    assert [error.type for error in errors] == ["missing"] * 11 + ["missing_fields_too_costly"]
    assert errors[0].loc == ["body", "event_id"]
    assert errors[0].msg == "Field required"
    assert errors[-1].loc == ["body"]
    assert errors[-1].msg.startswith("not validated further: the required fields missing here")


def test_a_heavy_batch_refuses_only_its_costly_report() -> None:
    costly = under_a_mig_slice(200_000)
    body = compact({"reports": [make_report(), costly, {"payload": {}}]})

    parsed = parse_batch(body, max_batch_size=500)

    assert list(parsed.reports) == [0]
    assert parsed.rejected[1][-1].type == "missing_fields_too_costly"
    assert parsed.rejected[1][0].loc == ["body", "reports", 1, "event_id"]
    # A light invalid report still gets pydantic's own errors.
    assert {error.type for error in parsed.rejected[2]} == {"missing"}
    assert parsed.size == 3


def test_a_heavy_batch_over_the_cap_is_refused_whole() -> None:
    body = compact({"reports": [under_a_mig_slice(2_000) for _ in range(600)]})
    assert copied_values(json.loads(body)["reports"][0], GpuMetadataReport)[0] * 600 > (
        MAX_COPIED_VALUES
    )

    with pytest.raises(RequestValidationFailedError) as refused:
        parse_batch(body, max_batch_size=500)

    (error,) = refused.value.errors
    assert (
        error.msg == "List should have at most 500 items after validation, not 600; split the batch"
    )


@pytest.mark.parametrize("gpus", [1, 8, 14, 64])
def test_heavy_batches_of_sdk_reports_are_validated_whole(gpus: int) -> None:
    body = largest_sdk_batch(gpus)
    parsed = parse_batch(body, max_batch_size=500)
    assert not parsed.rejected
    assert len(parsed.reports) == parsed.size


def test_refusing_the_heaviest_crafted_report_holds_a_few_times_its_weight() -> None:
    """Measured in a process of its own (pydantic-core's parse and errors are not Python
    objects): 8.3 MB of weight held 348-394 MB before, a few MB now."""
    script = textwrap.dedent(
        """
        import json, sys
        from ca4_processor.body import body_weight
        from ca4_processor.validation import RequestValidationFailedError, parse_report

        def rss(field):
            for line in open("/proc/self/status"):
                if line.startswith(field):
                    return int(line.split()[1]) * 1024

        keys = {f"-{index:06d}": 0 for index in range(150_000)}
        body = json.dumps({"payload": {"gpus": [{"mig": keys}]}}).encode()
        del keys
        before = rss("VmRSS")
        try:
            parse_report(body)
        except RequestValidationFailedError:
            pass
        print((rss("VmHWM") - before) / body_weight(body))
        """
    )
    held = float(
        subprocess.run(
            [sys.executable, "-c", script], check=True, capture_output=True, text=True
        ).stdout
    )
    assert held <= 4, held
