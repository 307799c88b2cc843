"""The HTTP side of the key ring: one Bearer scheme and one set of answers for every service.

Declaring the scheme as a FastAPI security dependency puts it in the OpenAPI document, so
"Authorize" in ``/docs`` sends the key; both services answer a missing or unknown key with the
same ``401`` body, and a key without the needed scope with ``403``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Annotated

import structlog
from fastapi import HTTPException, Security, status
from fastapi.requests import HTTPConnection
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from ca4_auth.keys import ApiKey, ApiKeyRing, Scope

MISSING_KEY = "missing API key: send 'Authorization: Bearer <key>'"
"""``detail`` of the ``401`` without an ``Authorization`` header, or ``Bearer`` with no key."""
NOT_BEARER = (
    "the Authorization header must be 'Bearer <key>': the word Bearer, a space, then the API "
    "key (no other scheme, such as Basic, is accepted)"
)
"""``detail`` of the ``401`` for an ``Authorization`` header of another form: a bare key or
another scheme. Never repeats the header, which may hold a key."""
INVALID_KEY = "invalid or revoked API key"
"""``detail`` of the ``401`` for a key the ring does not hold (never says which)."""


class _AnyAuthorization(HTTPBearer):
    """The Bearer scheme in the OpenAPI document, but any ``Authorization`` header handed on
    (FastAPI's gives ``None`` for one that is not ``Bearer <key>``, so a client that sent its
    key bare or as ``Basic`` was told it sent none)."""

    async def __call__(self, request: HTTPConnection) -> HTTPAuthorizationCredentials | None:
        """The header's scheme and credentials (either may be empty); ``None`` without one."""
        authorization = request.headers.get("Authorization", "")
        if not authorization.strip():
            return None
        scheme, credentials = get_authorization_scheme_param(authorization)
        return HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials)


BEARER = _AnyAuthorization(
    scheme_name="ApiKey",
    description="An API key: `Authorization: Bearer <key>`. Keys have an owner (tenant) and "
    "scopes: `write` reports, `read` reads its own tenant's data, `read:all` reads every "
    "tenant's.",
    auto_error=False,
)
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
"""The ``Authorization`` header's scheme and credentials, or ``None`` when it is absent
(:func:`identify_bearer` refuses any scheme but ``Bearer``)."""


REJECTION_LOG_INTERVAL_S = 10.0
"""Each reason a key is refused for is logged at most this often."""


class RejectionLog:
    """Logs refused keys by reason, at most once per :data:`REJECTION_LOG_INTERVAL_S` each,
    with how many were refused since the last line: anyone can send a bad key, and a line per
    request let an anonymous flood write as fast as it sent. The reasons are bounded (a missing
    or unknown key, and one per key lacking a scope), and so is what is kept."""

    def __init__(
        self,
        interval_s: float = REJECTION_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._logged_at: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def refused(self, reason: str) -> None:
        """One key refused for ``reason``."""
        now = self._clock()
        logged_at = self._logged_at.get(reason)
        if logged_at is not None and now - logged_at < self._interval_s:
            self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
            return
        self._logged_at[reason] = now
        also = self._unlogged.pop(reason, 0)
        log = structlog.get_logger(__name__)
        if also:
            log.warning("auth.rejected", reason=reason, also_refused_since_last_line=also)
        else:
            log.warning("auth.rejected", reason=reason)


REJECTIONS = RejectionLog()
"""The process's log of refused keys."""


class InvalidKeyError(HTTPException):
    """``401``: no key, or a key the ring does not hold."""

    def __init__(self, detail: str, *, invalid_token: bool) -> None:
        challenge = 'Bearer error="invalid_token"' if invalid_token else "Bearer"
        super().__init__(
            status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": challenge}
        )


def identify_bearer(
    key_ring: ApiKeyRing, credentials: HTTPAuthorizationCredentials | None
) -> ApiKey:
    """The key behind ``credentials``; raises :class:`InvalidKeyError` without a valid one."""
    if credentials is not None and credentials.scheme.lower() != "bearer":
        raise InvalidKeyError(NOT_BEARER, invalid_token=False)
    presented = credentials.credentials.strip() if credentials is not None else ""
    if not presented:
        raise InvalidKeyError(MISSING_KEY, invalid_token=False)
    key = key_ring.identify(presented)
    if key is None:
        raise InvalidKeyError(INVALID_KEY, invalid_token=True)
    return key


def require_scope(key: ApiKey, scope: Scope) -> None:
    """Raise ``403`` unless ``key`` holds ``scope``."""
    if not key.allows(scope):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"API key {key.key_id!r} lacks the {scope.value!r} scope",
        )


def authorize(
    key_ring: ApiKeyRing, credentials: HTTPAuthorizationCredentials | None, scope: Scope
) -> ApiKey:
    """The key behind ``credentials`` if it holds ``scope``; ``401``/``403`` otherwise.

    Binds the key id and tenant to the request's log context, and logs refused keys by reason
    (never the key; :class:`RejectionLog`).
    """
    try:
        key = identify_bearer(key_ring, credentials)
        structlog.contextvars.bind_contextvars(key_id=key.key_id, tenant=key.tenant)
        require_scope(key, scope)
    except HTTPException as error:
        if credentials is not None:
            REJECTIONS.refused(str(error.detail))
        raise
    return key


def retry_after_header(wait_s: float) -> str:
    """``Retry-After`` for a wait of ``wait_s``: whole seconds, never ``0`` (a client reads
    ``0`` as "at once" and would be refused again)."""
    return str(max(1, math.ceil(wait_s)))
