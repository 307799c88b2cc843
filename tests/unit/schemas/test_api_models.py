"""The HTTP API models keep FastAPI's error shape and round-trip through JSON."""

from __future__ import annotations

import uuid

from ca4_schemas.api import BatchItemResult, BatchResponse, ErrorItem, Receipt, ValidationErrorBody


def test_batch_response_round_trips() -> None:
    receipt = Receipt(event_id=uuid.uuid4(), topic="gpu-metadata", partition=2, offset=41)
    response = BatchResponse(
        accepted=1,
        rejected=1,
        results=[
            BatchItemResult(index=0, status="accepted", receipt=receipt),
            BatchItemResult(
                index=1,
                status="rejected",
                errors=[ErrorItem(loc=["body", "reports", 1, "session_id"], msg="bad", type="x")],
            ),
        ],
    )

    assert BatchResponse.model_validate_json(response.model_dump_json()) == response


def test_validation_error_body_has_fastapi_shape() -> None:
    body = ValidationErrorBody(detail=[ErrorItem(loc=["body", "event_id"], msg="m", type="t")])

    assert body.model_dump() == {"detail": [{"loc": ["body", "event_id"], "msg": "m", "type": "t"}]}
