"""API keys shared by the processor (``write``) and the worker's read API (``read``, ``read:all``).

Services depend on this library, never on each other; see :mod:`ca4_auth.keys` for the keys
file format, :mod:`ca4_auth.http` for the FastAPI Bearer scheme and :mod:`ca4_auth.in_flight`
for the cap on each key's requests in flight, :mod:`ca4_auth.token_buckets` for rate limits and
budgets, and :mod:`ca4_auth.owner_cache` for the session owners each service remembers.
"""

from ca4_auth.in_flight import InFlight
from ca4_auth.keys import (
    DEV_API_KEY,
    DEV_API_KEY_ID,
    DEV_TENANT,
    ApiKey,
    ApiKeyConfigError,
    ApiKeyRing,
    Scope,
    accepts_dev_key,
    check_key_settings,
    parse_key_entries,
)
from ca4_auth.owner_cache import SessionOwnerCache
from ca4_auth.redirects import RelativeRedirects
from ca4_auth.token_buckets import TokenBuckets

__all__ = [
    "DEV_API_KEY",
    "DEV_API_KEY_ID",
    "DEV_TENANT",
    "ApiKey",
    "ApiKeyConfigError",
    "ApiKeyRing",
    "InFlight",
    "RelativeRedirects",
    "Scope",
    "SessionOwnerCache",
    "TokenBuckets",
    "accepts_dev_key",
    "check_key_settings",
    "parse_key_entries",
]
