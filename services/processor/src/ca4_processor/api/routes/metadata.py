"""Ingest routes: validate, publish, and answer with Kafka receipts only after ``acks=all``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import structlog
from ca4_auth import ApiKey
from ca4_schemas import GpuMetadataReported
from ca4_schemas.api import (
    BatchItemResult,
    BatchResponse,
    ErrorItem,
    MessageErrorBody,
    Receipt,
    ValidationErrorBody,
)
from fastapi import APIRouter, HTTPException, Request, Response, status

from ca4_processor.api.deps import (
    MetricsDep,
    PublisherDep,
    SessionOwnersDep,
    SettingsDep,
    WriterDep,
    charge,
    waiting_for_kafka,
)
from ca4_processor.api.tenancy import (
    SessionForbiddenBody,
    foreign_sessions,
    session_forbidden_item,
    session_forbidden_response,
    stamp,
)
from ca4_processor.body import JsonBody, read_json_body
from ca4_processor.copy_cost import CHECK_ABOVE_WEIGHT
from ca4_processor.metrics import IngestMetrics
from ca4_processor.publishing import EventPublisher, MessageTooLargeError, PublishUnavailableError
from ca4_processor.security import RateLimits
from ca4_processor.validation import (
    RequestValidationFailedError,
    parse_batch,
    parse_report,
)

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/v1/metadata", tags=["metadata"])
legacy_router = APIRouter(tags=["metadata"])
"""``POST /metadata``: a deprecated alias of ``POST /v1/metadata``, kept for clients that use it."""

_JSON = "application/json"
_DUPLICATE_KEYS_CHECKED_ABOVE = f"{CHECK_ABOVE_WEIGHT // 2**20} MiB of weight"
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
_COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": MessageErrorBody, "description": "Body is not valid gzip"},
    401: {"model": MessageErrorBody, "description": "Missing, invalid or revoked API key"},
    403: {
        "model": MessageErrorBody,
        "description": "The key lacks the write scope, or the session belongs to another tenant",
    },
    415: {"model": MessageErrorBody, "description": "Not application/json, or unknown encoding"},
    429: {
        "model": MessageErrorBody,
        "description": (
            "Rate limit of this key or of its tenant's keys together (one token per report, "
            "per RATE_LIMIT_TOKEN_WEIGHT of body weight or per RATE_LIMIT_GPUS_PER_TOKEN "
            "GPUs, whichever is most), MAX_REQUESTS_IN_FLIGHT_PER_TENANT bodies of its tenant "
            "being read or validated, or MAX_WAITING_WEIGHT_PER_TENANT of its tenant's reports "
            "waiting for a slow Kafka; nothing was accepted, see Retry-After"
        ),
        "headers": _RETRY_AFTER,
    },
    503: {
        "model": MessageErrorBody,
        "description": "Kafka did not acknowledge in time, session ownership could not be "
        "checked, or MAX_WAITING_WEIGHT of every key's reports already waits for a slow Kafka; "
        "nothing was accepted, retry after Retry-After with the same event_id (safe: the worker "
        "deduplicates)",
        "headers": _RETRY_AFTER,
    },
}
_SINGLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_COMMON_ERRORS,
    403: {
        "model": MessageErrorBody | SessionForbiddenBody,
        "description": "The key lacks the write scope, or the session belongs to another "
        "tenant (type: session_forbidden; a session first reported before the tenancy upgrade "
        "belongs to tenant legacy, which no key holds)",
    },
    413: {
        "model": MessageErrorBody,
        "description": "Body over the size cap (before or after gzip) or its weight cap (what "
        "it decodes to), or the encoded event over the largest message Kafka takes (the limit "
        "is in the message); never retry",
    },
    422: {
        "model": ValidationErrorBody,
        "description": "The report breaks the contract, or the body weighs over "
        f"{_DUPLICATE_KEYS_CHECKED_ABOVE} and repeats a key in an object (duplicate_key)",
    },
}
_BATCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_COMMON_ERRORS,
    207: {"model": BatchResponse, "description": "Some reports accepted, some rejected"},
    413: {
        "model": MessageErrorBody,
        "description": "Body over the size cap (before or after gzip) or its weight cap (what "
        "it decodes to), or more reports than the key's rate-limit burst; split the batch",
    },
    422: {
        "model": ValidationErrorBody | BatchResponse,
        "description": "The request itself is unusable (not JSON, no reports list, too many "
        f"reports, or a body weighing over {_DUPLICATE_KEYS_CHECKED_ABOVE} that repeats a key "
        "in an object, duplicate_key: a ValidationErrorBody; no JSON encoder repeats keys) or "
        "every report was rejected (a BatchResponse)",
    },
}


async def _read_body(
    request: Request, key: ApiKey, settings: SettingsDep, metrics: IngestMetrics, *, batch: bool
) -> tuple[JsonBody, int]:
    """The body, once its weight's share of the rate limit is paid (a gzip body's as it is
    decompressed); and the tokens paid so far."""
    paid, refused_by_charge = 1, False

    def pay(weight: int) -> None:
        """Pay up to ``weight``: a gzip body's bytes as they are decompressed (never more than
        its weight), then the body's weight."""
        nonlocal paid, refused_by_charge
        try:
            paid = charge(request, key, metrics, weight=weight, reports=0, paid=paid)
        except HTTPException:
            refused_by_charge = True  # counted by charge
            raise

    try:
        body = await read_json_body(
            request,
            max_body_bytes=settings.MAX_BODY_BYTES,
            max_decompressed_bytes=settings.MAX_DECOMPRESSED_BYTES,
            max_body_weight=settings.MAX_BODY_WEIGHT,
            read_timeout_s=settings.BODY_READ_TIMEOUT_S,
            batch=batch,
            pay=pay,
        )
    except HTTPException:
        if not refused_by_charge:
            metrics.count("rejected")
        raise
    pay(body.weight)
    return body, paid


def _validation_error(error: RequestValidationFailedError) -> Response:
    return Response(
        ValidationErrorBody(detail=error.errors).model_dump_json(),
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        media_type=_JSON,
    )


def _limits(request: Request) -> RateLimits:
    limits: RateLimits = request.app.state.rate_limits
    return limits


def _log_accepted(
    event: GpuMetadataReported, receipt: Receipt, *, level: int = logging.INFO
) -> None:
    """One line for an accepted event: the ids a client looks for."""
    log.log(
        level,
        "ingest.accepted",
        event_id=str(event.event_id),
        session_id=event.session_id,
        partition=receipt.partition,
        offset=receipt.offset,
    )


async def _publish(
    events: list[GpuMetadataReported],
    publisher: EventPublisher,
    metrics: IngestMetrics,
    settings: SettingsDep,
) -> dict[int, Receipt | str]:
    """Publish every event that fits in one Kafka message; the others get why they don't.

    Keys are positions in ``events``; a value is the receipt, or the reason it was refused.
    """
    try:
        return dict(enumerate(await _publish_all(events, publisher, metrics, settings)))
    except MessageTooLargeError as too_large:
        metrics.count("rejected", len(too_large.sizes))
        log.info("ingest.too_large", sizes=too_large.sizes, limit=too_large.limit)
        fitting = [position for position in range(len(events)) if position not in too_large.sizes]
        receipts = await _publish_all([events[p] for p in fitting], publisher, metrics, settings)
        refused = {position: too_large.reason(position) for position in too_large.sizes}
        return {**dict(zip(fitting, receipts, strict=True)), **refused}


async def _publish_all(
    events: list[GpuMetadataReported],
    publisher: EventPublisher,
    metrics: IngestMetrics,
    settings: SettingsDep,
) -> list[Receipt]:
    if not events:
        return []
    try:
        receipts = await publisher.publish(events)
    except PublishUnavailableError as error:
        metrics.count("unavailable", len(events))
        log.warning("ingest.unavailable", events=len(events), error=str(error))
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"event store temporarily unavailable: {error}; nothing was accepted, retry later "
            "with the same event_id",
            headers={"Retry-After": str(settings.RETRY_AFTER_S)},
        ) from None
    metrics.count("accepted", len(receipts))
    return receipts


async def create_report(
    request: Request,
    *,
    writer: WriterDep,
    settings: SettingsDep,
    publisher: PublisherDep,
    metrics: MetricsDep,
    owners: SessionOwnersDep,
) -> Response:
    """Publish one report; the receipt names its Kafka partition and offset."""
    key = writer.key
    body, paid = await _read_body(request, key, settings, metrics, batch=False)
    try:
        report = parse_report(body.data)
    except RequestValidationFailedError as error:
        metrics.count("rejected")
        log.info("ingest.rejected", reason=str(error)[:500])
        return _validation_error(error)
    finally:
        # Validated: what follows waits on the database and Kafka, holding neither the
        # body's bytes nor one of the tenant's in-flight slots, but the weight of its report.
        weight = body.weight
        del body
        writer.release_slot()
    with waiting_for_kafka(request, key, metrics, weight=weight, reports=1):
        paid = charge(
            request,
            key,
            metrics,
            weight=0,
            reports=1,
            gpus=len(report.payload.gpus),
            paid=paid,
        )
        event = stamp(report, key, datetime.now(UTC))
        if await foreign_sessions(
            [event], key, owners, metrics, settings, limits=_limits(request), paid=paid
        ):
            metrics.count("rejected")
            return session_forbidden_response(event.session_id)
        outcome = (await _publish([event], publisher, metrics, settings))[0]
        if isinstance(outcome, str):
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"report refused: {outcome}")
        _log_accepted(event, outcome)
        return Response(
            outcome.model_dump_json(), status_code=status.HTTP_202_ACCEPTED, media_type=_JSON
        )


async def create_reports(
    request: Request,
    *,
    writer: WriterDep,
    settings: SettingsDep,
    publisher: PublisherDep,
    metrics: MetricsDep,
    owners: SessionOwnersDep,
) -> Response:
    """Publish every valid report of a batch, even when others are rejected.

    ``202`` when all are accepted, ``207`` when some are rejected, ``422`` when none is
    accepted. Each result carries its receipt or its errors; a report of another tenant's
    session is rejected with the error type ``session_forbidden``. Each report costs one token
    of the key's and its tenant's rate limits, or the body one per ``RATE_LIMIT_TOKEN_WEIGHT``
    of its weight or per ``RATE_LIMIT_GPUS_PER_TOKEN`` of its reports' GPUs, whichever is most.
    """
    key = writer.key
    body, paid = await _read_body(request, key, settings, metrics, batch=True)
    try:
        parsed = parse_batch(body.data, max_batch_size=settings.MAX_BATCH_SIZE)
    except RequestValidationFailedError as error:
        metrics.count("rejected")
        log.info("ingest.rejected", reason=str(error)[:500])
        return _validation_error(error)
    finally:
        # Validated: what follows waits on the database and Kafka, holding neither the
        # body's bytes nor one of the tenant's in-flight slots, but the weight of its reports.
        weight = body.weight
        del body
        writer.release_slot()
    with waiting_for_kafka(request, key, metrics, weight=weight, reports=parsed.size):
        # Its reports are paid only once it may wait: a refused batch is retried as it is.
        paid = charge(
            request,
            key,
            metrics,
            weight=0,
            reports=parsed.size,
            gpus=sum(len(report.payload.gpus) for report in parsed.reports.values()),
            paid=paid,
        )
        received_at = datetime.now(UTC)
        stamped = {
            index: stamp(report, key, received_at) for index, report in parsed.reports.items()
        }
        foreign = await foreign_sessions(
            list(stamped.values()),
            key,
            owners,
            metrics,
            settings,
            limits=_limits(request),
            paid=paid,
        )
        invalid = dict(parsed.rejected)
        for index, event in stamped.items():
            if event.session_id in foreign:
                invalid[index] = [session_forbidden_item(index)]
        metrics.count("rejected", len(invalid))
        indexes = sorted(stamped.keys() - invalid.keys())
        events = [stamped[index] for index in indexes]
        outcomes = await _publish(events, publisher, metrics, settings)
        by_index = {index: outcomes[position] for position, index in enumerate(indexes)}
        results = [
            _batch_item(index, by_index.get(index), invalid.get(index))
            for index in range(parsed.size)
        ]
        accepted = sum(result.status == "accepted" for result in results)
        rejected = parsed.size - accepted
        # One line names the batch's events: a line each cost a quarter of the batch route's
        # throughput (docs/architecture.md, "Where the running code reads the brief's
        # contracts its own way"); at DEBUG each accepted event has its own.
        log.info(
            "ingest.batch",
            accepted=accepted,
            rejected=rejected,
            event_ids=[str(event.event_id) for event in events],
            session_ids=sorted({event.session_id for event in events}),
        )
        if log.is_enabled_for(logging.DEBUG):
            for position, event in enumerate(events):
                if not isinstance(receipt := outcomes[position], str):
                    _log_accepted(event, receipt, level=logging.DEBUG)
        if not rejected:
            status_code = status.HTTP_202_ACCEPTED
        elif accepted:
            status_code = status.HTTP_207_MULTI_STATUS
        else:
            status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
        response = BatchResponse(accepted=accepted, rejected=rejected, results=results)
        return Response(
            response.model_dump_json(exclude_none=True), status_code=status_code, media_type=_JSON
        )


def _batch_item(
    index: int, outcome: Receipt | str | None, errors: list[ErrorItem] | None
) -> BatchItemResult:
    """One report's result: its receipt, why Kafka can't take it, or its validation errors."""
    if isinstance(outcome, Receipt):
        return BatchItemResult(index=index, status="accepted", receipt=outcome)
    if isinstance(outcome, str):
        errors = [ErrorItem(loc=["body", "reports", index], msg=outcome, type="message_too_large")]
    return BatchItemResult(index=index, status="rejected", errors=errors)


def _add_single_report_route(target: APIRouter, path: str, **documentation: Any) -> None:
    target.add_api_route(
        path,
        create_report,
        methods=["POST"],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=Receipt,
        responses=_SINGLE_RESPONSES,
        **documentation,
    )


_add_single_report_route(router, "", summary="Report GPU metadata")
router.add_api_route(
    "/batch",
    create_reports,
    methods=["POST"],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchResponse,
    responses=_BATCH_RESPONSES,
    summary="Report several GPU metadata samples at once",
)
_add_single_report_route(
    legacy_router,
    "/metadata",
    summary="Report GPU metadata (alias of POST /v1/metadata)",
    description="Kept for clients that post here: the same handling, "
    "answers and limits as `POST /v1/metadata`. New clients use `/v1/metadata`.",
    deprecated=True,
)
