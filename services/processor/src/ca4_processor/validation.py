"""Turn request bytes into reports, with FastAPI-shaped errors that name the offending field."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ca4_schemas import GpuMetadataReport
from ca4_schemas.api import BatchRequest, ErrorItem
from pydantic import ValidationError
from pydantic_core import ErrorDetails


class RequestValidationFailedError(ValueError):
    """The body as a whole is unusable; ``errors`` say where."""

    def __init__(self, errors: list[ErrorItem]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors))
        self.errors = errors


def error_items(errors: list[ErrorDetails], *, prefix: tuple[str | int, ...]) -> list[ErrorItem]:
    """Pydantic errors as :class:`ErrorItem` s, without echoing the (possibly huge) input."""
    return [
        ErrorItem(loc=[*prefix, *error["loc"]], msg=error["msg"], type=error["type"])
        for error in errors
    ]


def parse_report(body: bytes) -> GpuMetadataReport:
    """Validate one report (JSON mode: ``"12"`` is not a number)."""
    try:
        return GpuMetadataReport.model_validate_json(body)
    except ValidationError as error:
        errors = error.errors(include_input=False, include_url=False)
        raise RequestValidationFailedError(error_items(errors, prefix=("body",))) from None


@dataclass(frozen=True)
class BatchParse:
    """Each report of a batch, either validated or with its errors, by request index."""

    reports: dict[int, GpuMetadataReport]
    rejected: dict[int, list[ErrorItem]]
    size: int


def parse_batch(body: bytes, *, max_batch_size: int) -> BatchParse:
    """Validate a batch, keeping every valid report even when others are invalid.

    The common all-valid case is one pass over the bytes; only a batch with errors is split and
    validated report by report, so each report gets its own verdict.
    """
    try:
        batch = BatchRequest.model_validate_json(body)
    except ValidationError as error:
        envelope_errors = _envelope_errors(error)
    else:
        _check_size(len(batch.reports), max_batch_size)
        return BatchParse(
            reports=dict(enumerate(batch.reports)), rejected={}, size=len(batch.reports)
        )
    # Out of the except block, so the first pass's error is freed before the second pass: it
    # holds a copy of each failing value's input (several of a report that lacks required
    # fields), and keeping it alive doubled what a crafted batch held at its peak.
    if envelope_errors:
        raise RequestValidationFailedError(envelope_errors)
    return _parse_batch_item_by_item(body, max_batch_size=max_batch_size)


def _envelope_errors(error: ValidationError) -> list[ErrorItem]:
    """Errors outside one report (not JSON, no "reports" list, extra keys): they reject the
    whole request."""
    errors = error.errors(include_input=False, include_url=False)
    return error_items([e for e in errors if not _inside_one_report(e)], prefix=("body",))


def _parse_batch_item_by_item(body: bytes, *, max_batch_size: int) -> BatchParse:
    # The envelope is sound, so the bytes are a JSON object with a list under "reports".
    raw_reports: list[Any] = json.loads(body)["reports"]
    _check_size(len(raw_reports), max_batch_size)
    reports: dict[int, GpuMetadataReport] = {}
    rejected: dict[int, list[ErrorItem]] = {}
    for index in range(len(raw_reports)):
        # Each report's decoded copy is dropped before the report is validated: validating a
        # report that fails makes copies of its own.
        report_json, raw_reports[index] = json.dumps(raw_reports[index]), None
        try:
            reports[index] = GpuMetadataReport.model_validate_json(report_json)
        except ValidationError as item_error:
            errors = item_error.errors(include_input=False, include_url=False)
            rejected[index] = error_items(errors, prefix=("body", "reports", index))
    return BatchParse(reports=reports, rejected=rejected, size=len(raw_reports))


def _inside_one_report(error: ErrorDetails) -> bool:
    loc = error["loc"]
    return len(loc) >= 2 and loc[0] == "reports" and isinstance(loc[1], int)


def _check_size(size: int, max_batch_size: int) -> None:
    if size > max_batch_size:
        raise RequestValidationFailedError(
            [
                ErrorItem(
                    loc=["body", "reports"],
                    msg=f"at most {max_batch_size} reports per batch, got {size}; split the batch",
                    type="too_long",
                )
            ]
        )
