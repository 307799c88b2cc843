"""One module per resource; the error answers every read route shares."""

from typing import Any

from ca4_schemas.api import MessageErrorBody

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
