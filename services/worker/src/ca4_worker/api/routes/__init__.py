"""One module per resource; the error answers every read route shares."""

from typing import Any

from ca4_schemas.api import MessageErrorBody

READ_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": MessageErrorBody, "description": "Missing, invalid or revoked API key"},
    403: {"model": MessageErrorBody, "description": "The key has neither read nor read:all"},
}
"""Answers of every read route, whatever the resource."""

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "model": MessageErrorBody,
        "description": "No such resource for this key's tenant (another tenant's looks the same)",
    }
}
"""The ``404`` of a single-resource read."""
