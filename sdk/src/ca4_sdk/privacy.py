"""Privacy mode: a salted hostname hash and no process names.

A bare hash of a hostname can be reversed by guessing; the salt (argument, ``CA4_PRIVACY_SALT``
or a random one kept beside the session id) makes that impractical while keeping one host's
reports recognisable to each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from ca4_sdk.runtime import NOFOLLOW, read_own, user_suffix


def default_salt(directory: Path | None = None) -> str:
    """``CA4_PRIVACY_SALT`` if set, else a random salt persisted in the temp directory.

    Kept as the session id is (:mod:`ca4_sdk.runtime`): a file of this user's own, never a
    link, read at most 256 bytes. One name for every user of a shared host let another user
    put a salt of their choosing in place, or a file of gigabytes that privacy mode then read
    whole into the notebook's memory.
    """
    configured = os.environ.get("CA4_PRIVACY_SALT")
    if configured:
        return configured
    temp = directory or Path(tempfile.gettempdir())
    path = temp / f"ca4-privacy-salt{user_suffix()}"
    # The second: where SDKs before the uid in the name kept it, when this user wrote it.
    for candidate in (path, temp / "ca4-privacy-salt"):
        try:
            salt = read_own(candidate)
        except OSError:
            continue
        if salt:
            return salt
    return _write_salt(path)


def _write_salt(path: Path) -> str:
    salt = secrets.token_hex(16)
    try:
        # O_EXCL: never follow or reuse what another user may have put in a shared directory.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
    except FileExistsError:
        return _salt_in_place(path, salt)
    except OSError:
        return salt
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(salt)
    except OSError:
        pass
    return salt


_SALT_WRITE_WAITS_S = (0.01, 0.02, 0.05, 0.1)
"""How long a salt file just created by another process may stay empty before it is taken
as one left empty (that process stopped between creating and writing it)."""


def _salt_in_place(path: Path, fresh: str) -> str:
    """The salt in ``path``, which another process created first (two notebooks starting at
    once agree on it); ``fresh`` written in its place when this user's file holds none (left
    empty), and kept in this process only when the file is another user's or a link."""
    for wait in (*_SALT_WRITE_WAITS_S, None):
        try:
            salt = read_own(path)
        except OSError:
            return fresh
        if salt:
            return salt
        if wait is not None:
            time.sleep(wait)
    # This user's own file with no salt in it: replaced whole, never written through.
    temp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(fresh)
        os.replace(temp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        return fresh
    try:
        return read_own(path) or fresh  # another process's repair, when it came last
    except OSError:
        return fresh


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
