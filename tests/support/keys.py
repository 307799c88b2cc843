"""API key entries for test key rings (``CA4_API_KEY_HASHES`` or a keys file)."""

from __future__ import annotations

import hashlib


def key_entry(key_id: str, key: str, tenant: str, scopes: str) -> str:
    """One key ring entry: ``id:sha256(key):tenant:scopes`` (scopes joined by ``+``)."""
    return f"{key_id}:{hashlib.sha256(key.encode()).hexdigest()}:{tenant}:{scopes}"
