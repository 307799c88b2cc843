"""Privacy mode: a salted hostname hash and no process names.

A bare hash of a hostname can be reversed by guessing; the salt (argument, ``CA4_PRIVACY_SALT``
or a random one kept beside the session id) makes that impractical while keeping one host's
reports recognisable to each other.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any


def default_salt(directory: Path | None = None) -> str:
    """``CA4_PRIVACY_SALT`` if set, else a random salt persisted in the temp directory."""
    configured = os.environ.get("CA4_PRIVACY_SALT")
    if configured:
        return configured
    path = (directory or Path(tempfile.gettempdir())) / "ca4-privacy-salt"
    try:
        return path.read_text(encoding="ascii").strip() or _write_salt(path)
    except OSError:
        return _write_salt(path)


def _write_salt(path: Path) -> str:
    salt = secrets.token_hex(16)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(salt)
    except OSError:
        pass
    return salt


def hash_hostname(hostname: str, salt: str) -> str:
    """A short, salted, stable stand-in for the hostname."""
    digest = hashlib.sha256(f"{salt}\x00{hostname}".encode()).hexdigest()
    return f"host-{digest[:16]}"


def apply_privacy(payload: dict[str, Any], salt: str) -> dict[str, Any]:
    """Hash the hostname and drop process names in a payload dict (returns a new dict)."""
    host = dict(payload["host"], hostname=hash_hostname(payload["host"]["hostname"], salt))
    gpus = [
        dict(
            gpu,
            processes=[
                {key: value for key, value in process.items() if key != "name"}
                for process in gpu.get("processes", [])
            ],
        )
        for gpu in payload.get("gpus", [])
    ]
    return dict(payload, host=host, gpus=gpus)
