"""Ingest routes: validate, publish, and answer with Kafka receipts only after ``acks=all``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from ca4_schemas import GpuMetadataReported
from ca4_schemas.api import (
    BatchItemResult,
    BatchResponse,
    MessageErrorBody,
    Receipt,
    ValidationErrorBody,
)
from fastapi import APIRouter, HTTPException, Request, Response, status

from ca4_processor.api.deps import (
    ApiKeyDep,
    MetricsDep,
    PublisherDep,
    SessionOwnersDep,
    SettingsDep,
)
from ca4_processor.api.tenancy import (
    foreign_sessions,
    session_forbidden_item,
    session_forbidden_message,
    stamp,
)
from ca4_processor.body import read_json_body
from ca4_processor.metrics import IngestMetrics
from ca4_processor.publishing import EventPublisher, PublishUnavailableError
from ca4_processor.validation import RequestValidationFailedError, parse_batch, parse_report

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/v1/metadata", tags=["metadata"])

_JSON = "application/json"
_COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": MessageErrorBody, "description": "Body is not valid gzip"},
    401: {"model": MessageErrorBody, "description": "Missing, invalid or revoked API key"},
    403: {
        "model": MessageErrorBody,
        "description": "The key lacks the write scope, or the session belongs to another tenant",
    },
    413: {
        "model": MessageErrorBody,
        "description": "Body over the size cap (before or after gzip)",
    },
    415: {"model": MessageErrorBody, "description": "Not application/json, or unknown encoding"},
    429: {"model": MessageErrorBody, "description": "Rate limit of this key; see Retry-After"},
    503: {
        "model": MessageErrorBody,
        "description": "Kafka did not acknowledge in time, or session ownership could not be "
        "checked; nothing was accepted, retry after Retry-After with the same event_id (safe: "
        "the worker deduplicates)",
    },
}


async def _read_body(request: Request, settings: SettingsDep, metrics: IngestMetrics) -> bytes:
    try:
        return await read_json_body(
            request,
            max_body_bytes=settings.MAX_BODY_BYTES,
            max_decompressed_bytes=settings.MAX_DECOMPRESSED_BYTES,
        )
    except HTTPException:
        metrics.count("rejected")
        raise


def _validation_error(error: RequestValidationFailedError) -> Response:
    return Response(
        ValidationErrorBody(detail=error.errors).model_dump_json(),
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        media_type=_JSON,
    )


async def _publish(
    events: list[GpuMetadataReported],
    publisher: EventPublisher,
    metrics: IngestMetrics,
    settings: SettingsDep,
) -> list[Receipt]:
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


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Receipt,
    responses={**_COMMON_ERRORS, 422: {"model": ValidationErrorBody}},
    summary="Report GPU metadata",
)
async def create_report(
    request: Request,
    *,
    key: ApiKeyDep,
    settings: SettingsDep,
    publisher: PublisherDep,
    metrics: MetricsDep,
    owners: SessionOwnersDep,
) -> Response:
    """Publish one report; the receipt names its Kafka partition and offset."""
    body = await _read_body(request, settings, metrics)
    try:
        report = parse_report(body)
    except RequestValidationFailedError as error:
        metrics.count("rejected")
        log.info("ingest.rejected", reason=str(error)[:500])
        return _validation_error(error)
    event = stamp(report, key, datetime.now(UTC))
    if await foreign_sessions([event], key, owners, metrics, settings):
        metrics.count("rejected")
        raise HTTPException(status.HTTP_403_FORBIDDEN, session_forbidden_message(event.session_id))
    (receipt,) = await _publish([event], publisher, metrics, settings)
    log.info(
        "ingest.accepted",
        event_id=str(event.event_id),
        session_id=event.session_id,
        partition=receipt.partition,
        offset=receipt.offset,
    )
    return Response(
        receipt.model_dump_json(), status_code=status.HTTP_202_ACCEPTED, media_type=_JSON
    )


@router.post(
    "/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchResponse,
    responses={
        **_COMMON_ERRORS,
        207: {"model": BatchResponse, "description": "Some reports accepted, some rejected"},
        422: {
            "model": ValidationErrorBody,
            "description": "The request itself is unusable (not JSON, no reports list, too many "
            "reports) or every report was rejected (body is then a BatchResponse)",
        },
    },
    summary="Report several GPU metadata samples at once",
)
async def create_reports(
    request: Request,
    *,
    key: ApiKeyDep,
    settings: SettingsDep,
    publisher: PublisherDep,
    metrics: MetricsDep,
    owners: SessionOwnersDep,
) -> Response:
    """Publish every valid report of a batch, even when others are rejected.

    ``202`` when all are accepted, ``207`` when some are rejected, ``422`` when none is
    accepted. Each result carries its receipt or its errors; a report of another tenant's
    session is rejected with the error type ``session_forbidden``.
    """
    body = await _read_body(request, settings, metrics)
    try:
        parsed = parse_batch(body, max_batch_size=settings.MAX_BATCH_SIZE)
    except RequestValidationFailedError as error:
        metrics.count("rejected")
        log.info("ingest.rejected", reason=str(error)[:500])
        return _validation_error(error)
    received_at = datetime.now(UTC)
    stamped = {index: stamp(report, key, received_at) for index, report in parsed.reports.items()}
    foreign = await foreign_sessions(list(stamped.values()), key, owners, metrics, settings)
    rejected = dict(parsed.rejected)
    for index, event in stamped.items():
        if event.session_id in foreign:
            rejected[index] = [session_forbidden_item(index)]
    metrics.count("rejected", len(rejected))
    indexes = sorted(stamped.keys() - rejected.keys())
    events = [stamped[index] for index in indexes]
    published = await _publish(events, publisher, metrics, settings) if events else []
    receipts = dict(zip(indexes, published, strict=True))
    results = [
        BatchItemResult(index=index, status="accepted", receipt=receipts[index])
        if index in receipts
        else BatchItemResult(index=index, status="rejected", errors=rejected[index])
        for index in range(parsed.size)
    ]
    log.info(
        "ingest.batch",
        accepted=len(receipts),
        rejected=len(rejected),
        event_ids=[str(event.event_id) for event in events],
        session_ids=sorted({event.session_id for event in events}),
    )
    if not rejected:
        status_code = status.HTTP_202_ACCEPTED
    elif receipts:
        status_code = status.HTTP_207_MULTI_STATUS
    else:
        status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    response = BatchResponse(accepted=len(receipts), rejected=len(rejected), results=results)
    return Response(
        response.model_dump_json(exclude_none=True), status_code=status_code, media_type=_JSON
    )
