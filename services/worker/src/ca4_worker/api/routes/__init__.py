"""One module per resource; the error answers every read route shares."""

from datetime import UTC, date, datetime
from typing import Any

from ca4_schemas.api import MessageErrorBody
from fastapi.exceptions import RequestValidationError

READ_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": MessageErrorBody, "description": "Missing, invalid or revoked API key"},
    403: {"model": MessageErrorBody, "description": "The key has neither read nor read:all"},
    429: {
        "model": MessageErrorBody,
        "description": "The key, or this worker, has as many reads in flight as it may; retry "
        "after the Retry-After seconds",
    },
    503: {
        "model": MessageErrorBody,
        "description": "The database did not answer in time, or at all; retry after the "
        "Retry-After seconds",
    },
}
"""Answers of every read route, whatever the resource."""

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "model": MessageErrorBody,
        "description": "No such resource for this key's tenant (another tenant's looks the same)",
    }
}
"""The ``404`` of a single-resource read."""


def unprocessable(description: str) -> dict[int | str, dict[str, Any]]:
    """A ``422`` whose body is either a ``detail`` string (what ``description`` says) or, for
    any other bad parameter, FastAPI's validation body (both are in the document's
    components: every read route answers ``401`` and has parameters)."""
    either = [
        {"$ref": "#/components/schemas/MessageErrorBody"},
        {"$ref": "#/components/schemas/HTTPValidationError"},
    ]
    return {
        422: {
            "description": description,
            "content": {"application/json": {"schema": {"anyOf": either}}},
        }
    }


DATABASE_RETRY_AFTER_S = 5
"""``Retry-After`` of a read the database did not serve, or a usage report past its deadline."""


def bad_query(name: str, message: str, value: date) -> RequestValidationError:
    """The documented ``422`` body (FastAPI's validation errors), like every other bad query."""
    return RequestValidationError(
        [
            {
                "type": "value_error",
                "loc": ("query", name),
                "msg": message,
                "input": value.isoformat(),
            }
        ]
    )


def in_utc(name: str, value: datetime | None) -> datetime | None:
    """A query's instant in UTC, as the database compares them (naive means UTC already). One
    whose offset moves it past year 1 or 9999 is a bad query, not a failed read."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise bad_query(name, "the instant is outside years 1 to 9999 in UTC", value) from None
