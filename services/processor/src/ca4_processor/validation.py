"""Turn request bytes into reports, with FastAPI-shaped errors that name the offending field."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Final

from ca4_schemas import GpuMetadataReport, bounded_text
from ca4_schemas.api import BatchRequest, ErrorItem
from jiter import from_json as from_json_without_duplicates
from pydantic import Field, ValidationError, create_model
from pydantic_core import from_json, to_json

from ca4_processor.body import body_weight
from ca4_processor.copy_cost import CHECK_ABOVE_WEIGHT, MAX_ERROR_BYTES, CopyCost, copy_cost

MAX_ERRORS_LISTED: Final = 100
"""Errors listed per report (or per request, outside reports); past it one more item says how
many were left out. A body of many bad keys makes one error each, and listing them all (as
dicts, then items, then the response) held about 60 times the body's weight."""
MAX_ERRORS_PER_BATCH: Final = 1_000
"""Errors listed in one batch's answer, across its reports; past it each rejected report gets
one item that counts its errors. The answer stays in the processor until the client reads it,
so without this bound a client that never reads parked a hundred errors per token it paid."""
_ERRORS_JSON: Final = json.JSONDecoder()
DUPLICATE_KEY_PREFIX: Final = "Detected duplicate key"
"""How jiter's error for a repeated key begins."""
DUPLICATE_KEY_MESSAGE_MAX_BYTES: Final = 512
"""Of jiter's message, which quotes the key: the rest of an error's ``msg`` is the hint."""
SPLIT_THE_BATCH: Final = "; split the batch"
"""Added to pydantic's message for too many reports."""


class RequestValidationFailedError(ValueError):
    """The body as a whole is unusable; ``errors`` say where."""

    def __init__(self, errors: list[ErrorItem]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors))
        self.errors = errors


def error_items(
    error: ValidationError,
    *,
    prefix: tuple[str | int, ...],
    where: Callable[[dict[str, Any]], bool] | None = None,
    limit: int = MAX_ERRORS_LISTED,
) -> list[ErrorItem]:
    """The first ``limit`` (at most :data:`MAX_ERRORS_LISTED`) of ``error`` (those ``where``
    accepts, if given) as :class:`ErrorItem` s, without echoing the (possibly huge) input, and
    one item saying how many more there were.

    Read one at a time from the error's JSON: ``ValidationError.errors()`` builds a dict for
    every error at once.
    """
    text = error.json(include_url=False, include_context=False, include_input=False)
    items: list[ErrorItem] = []
    left_out = 0
    position = 1  # past the opening bracket
    for _ in range(error.error_count()):
        detail, position = _ERRORS_JSON.raw_decode(text, position)
        if text[position] not in ",]":  # pydantic-core writes the list compact
            raise ValueError(f"unexpected validation error JSON at {position}")
        position += 1  # the comma (or the closing bracket after the last one)
        if where is not None and not where(detail):
            continue
        if len(items) < limit:
            loc = [*prefix, *detail["loc"]]
            items.append(ErrorItem(loc=loc, msg=detail["msg"], type=detail["type"]))
        else:
            left_out += 1
    if left_out:
        items.append(_errors_left_out(prefix, left_out, listed=bool(items), limit=limit))
    return items


def _errors_left_out(
    prefix: tuple[str | int, ...], count: int, *, listed: bool, limit: int
) -> ErrorItem:
    """The item that counts the errors of a report (or request) not listed."""
    if limit >= MAX_ERRORS_LISTED:
        why = f"at most {MAX_ERRORS_LISTED} are"
    else:
        why = f"an answer lists at most {MAX_ERRORS_PER_BATCH} of a batch's errors"
    more = "more " if listed else ""
    return ErrorItem(
        loc=list(prefix), msg=f"{count} {more}errors not listed ({why})", type="too_many_errors"
    )


def too_costly_items(
    cost: CopyCost, *, prefix: tuple[str | int, ...], limit: int = MAX_ERRORS_LISTED
) -> list[ErrorItem]:
    """The errors of a report refused unvalidated because pydantic's errors would hold too
    much: its missing fields and unknown keys as pydantic names them (the first hundred, or
    ``limit``), then why nothing else was checked."""
    items = [
        ErrorItem(loc=[*prefix, *error.loc], msg="Field required", type="missing")
        if error.missing
        else _extra_input([*prefix, *error.loc])
        for error in cost.errors[:limit]
    ]
    items.append(
        ErrorItem(
            loc=list(prefix),
            msg=(
                f"not validated further: {cost.error_count} missing fields and unknown keys "
                "around this much content would cost too much to check; fix those and send "
                "the report again"
            ),
            type="too_costly_to_validate",
        )
    )
    return items


def _decoded_if_heavy(body: bytes) -> Any:
    """The plain JSON decoding of a body heavy enough for its errors' copies to matter, or
    ``None`` (light, or not JSON: pydantic says why, cheaply).

    Such a body must not repeat a key within an object: the decoding keeps a repeated key's
    last value, so the walk would not see the earlier ones, which pydantic's errors copy (a
    review's 440,000 nulls under a repeated key held 173 MB). No JSON encoder repeats keys.
    """
    if body_weight(body) <= CHECK_ABOVE_WEIGHT:
        return None
    try:
        return from_json_without_duplicates(body, catch_duplicate_keys=True)
    except ValueError as error:
        if str(error).startswith(DUPLICATE_KEY_PREFIX):
            raise RequestValidationFailedError(
                [
                    ErrorItem(
                        loc=["body"],
                        # jiter's message quotes the key: cut it, so the hint stays whole.
                        msg=(
                            f"{bounded_text(str(error), DUPLICATE_KEY_MESSAGE_MAX_BYTES)}; "
                            "a body this large must not repeat a key in an object"
                        ),
                        type="duplicate_key",
                    )
                ]
            ) from None
        return None


def parse_report(body: bytes) -> GpuMetadataReport:
    """Validate one report (JSON mode: ``"12"`` is not a number)."""
    decoded = _decoded_if_heavy(body)
    cost = None if decoded is None else copy_cost(decoded, GpuMetadataReport)
    del decoded
    if cost is not None and cost.held_bytes > MAX_ERROR_BYTES:
        raise RequestValidationFailedError(too_costly_items(cost, prefix=("body",)))
    try:
        return GpuMetadataReport.model_validate_json(body)
    except ValidationError as error:
        errors = error_items(error, prefix=("body",))
    # Raised out of the except block, so the error (and the copies of input it holds) is not
    # kept alive as the new exception's context while the response is built.
    raise RequestValidationFailedError(errors)


@dataclass(frozen=True)
class BatchParse:
    """Each report of a batch, either validated or with its errors, by request index."""

    reports: dict[int, GpuMetadataReport]
    rejected: dict[int, list[ErrorItem]]
    size: int


def parse_batch(body: bytes, *, max_batch_size: int) -> BatchParse:
    """Validate a batch, keeping every valid report even when others are invalid.

    A light batch that is all valid takes one pass over the bytes; one with errors is split
    and validated report by report, so each report gets its own verdict. A heavy batch (over
    :data:`CHECK_ABOVE_WEIGHT`) is always validated report by report, so that at most one
    report's errors are alive at once, and a report whose errors would hold too much is
    refused without being validated (:mod:`ca4_processor.copy_cost`).
    """
    decoded = _decoded_if_heavy(body)
    if isinstance(decoded, dict) and isinstance(decoded.get("reports"), list):
        reports: list[Any] = decoded["reports"]
        unknown = [key for key in decoded if key not in BatchRequest.model_fields]
        del decoded
        if unknown:
            raise RequestValidationFailedError(_unknown_key_items(unknown))
        # One report at a time, so at most one report's errors are alive at once: a batch of
        # complete reports whose values each have the wrong type made 458,000 errors at once
        # (385 MB), which no walk short of validating could foresee.
        costs = [copy_cost(report, GpuMetadataReport) for report in reports[: max_batch_size + 1]]
        return _parse_reports_one_by_one(reports, costs, max_batch_size=max_batch_size)
    del decoded
    try:
        batch = batch_request_model(max_batch_size).model_validate_json(body)
    except ValidationError as error:
        envelope_errors = _envelope_errors(error)
    else:
        return BatchParse(
            reports=dict(enumerate(batch.reports)), rejected={}, size=len(batch.reports)
        )
    # Out of the except block, so the first pass's error is freed before the second pass: it
    # holds a copy of each failing value's input (several of a report that lacks required
    # fields), and keeping it alive doubled what a crafted batch held at its peak.
    if envelope_errors:
        raise RequestValidationFailedError(envelope_errors)
    return _parse_reports_one_by_one(
        from_json(body)["reports"], None, max_batch_size=max_batch_size
    )


@cache
def batch_request_model(max_batch_size: int) -> type[BatchRequest]:
    """:class:`BatchRequest` with at most ``max_batch_size`` reports: the count is checked as
    the list is read (at most one report past the cap is validated), so a list of half a
    million items is one error, not one per item."""
    capped = Annotated[list[GpuMetadataReport], Field(min_length=1, max_length=max_batch_size)]
    return create_model("BatchRequest", __base__=BatchRequest, reports=(capped, ...))


def _envelope_errors(error: ValidationError) -> list[ErrorItem]:
    """Errors outside one report (not JSON, no "reports" list, too many reports, extra keys):
    they reject the whole request."""
    items = error_items(
        error, prefix=("body",), where=lambda detail: not _inside_one_report(detail)
    )
    return [
        item.model_copy(update={"msg": item.msg + SPLIT_THE_BATCH})
        if item.loc == ["body", "reports"] and item.type == "too_long"
        else item
        for item in items
    ]


def _extra_input(loc: list[str | int]) -> ErrorItem:
    """An unknown key, as pydantic names it."""
    return ErrorItem(loc=loc, msg="Extra inputs are not permitted", type="extra_forbidden")


def _unknown_key_items(keys: list[str]) -> list[ErrorItem]:
    return [_extra_input(["body", key]) for key in keys[:MAX_ERRORS_LISTED]]


def _parse_reports_one_by_one(
    raw_reports: list[Any], costs: list[CopyCost] | None, *, max_batch_size: int
) -> BatchParse:
    """Each report validated on its own, or refused unvalidated when its errors would cost too
    much (``costs``, when the body was heavy enough to walk)."""
    if len(raw_reports) > max_batch_size:
        raise RequestValidationFailedError(
            [
                ErrorItem(
                    loc=["body", "reports"],
                    msg=(
                        f"List should have at most {max_batch_size} items after validation, "
                        f"not {len(raw_reports)}{SPLIT_THE_BATCH}"
                    ),
                    type="too_long",
                )
            ]
        )
    reports: dict[int, GpuMetadataReport] = {}
    rejected: dict[int, list[ErrorItem]] = {}
    listed = 0  # error items in the answer so far, against MAX_ERRORS_PER_BATCH
    for index in range(len(raw_reports)):
        prefix = ("body", "reports", index)
        room = min(MAX_ERRORS_LISTED, max(MAX_ERRORS_PER_BATCH - listed, 0))
        if costs is not None and costs[index].held_bytes > MAX_ERROR_BYTES:
            raw_reports[index] = None
            rejected[index] = (
                too_costly_items(costs[index], prefix=prefix, limit=room)
                if room
                else [_errors_left_out(prefix, costs[index].error_count, listed=False, limit=0)]
            )
        else:
            # Each report's decoded copy is dropped before the report is validated: validating
            # a report that fails makes copies of its own.
            report_json, raw_reports[index] = to_json(raw_reports[index]), None
            try:
                reports[index] = GpuMetadataReport.model_validate_json(report_json)
            except ValidationError as item_error:
                rejected[index] = error_items(item_error, prefix=prefix, limit=room)
        listed += len(rejected.get(index, ()))
    return BatchParse(reports=reports, rejected=rejected, size=len(raw_reports))


def _inside_one_report(error: dict[str, Any]) -> bool:
    loc = error["loc"]
    return len(loc) >= 2 and loc[0] == "reports" and isinstance(loc[1], int)
