"""Which runtime this is (Colab, Kaggle, SageMaker, Jupyter, plain Python) and its session id.

The session id must survive re-running a notebook cell and re-creating the Reporter, but change
when the runtime (VM or container) is recycled. It is a random id persisted in the temp
directory, keyed by the user and the kernel boot id: a recycled Colab runtime has a fresh temp
directory, and each user of a shared host (JupyterHub, a lab's GPU server) has a file of its own.
Where that file cannot be kept (a read-only temp directory, or its name taken by another user)
the id lives as long as this process, with one warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sys
import tempfile
import uuid
from pathlib import Path

logger = logging.getLogger("ca4_sdk")

SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
"""Never follow a link another user of a shared temp directory put in place (0: Windows)."""
_SESSION_FILE_MAX_BYTES = 256
"""A session id is at most 128 characters: a larger file is not one the SDK wrote."""
_process_session_ids: dict[str, str] = {}
"""The session id of each runtime whose session file could not be used, for this process's
later reporters (a cell run again), keyed by the file (or the runtime, without a temp dir)."""


HOSTED_RUNTIMES = frozenset({"colab", "kaggle"})
"""Runtimes (:func:`detect_runtime`) whose machine, and so a spool's disk, goes when the
runtime is deleted or recycled (Colab's "Restart session" keeps it; "Disconnect and delete
runtime" does not)."""


def detect_runtime(environ: dict[str, str] | None = None) -> str:
    """``colab``, ``kaggle``, ``sagemaker``, ``jupyter`` or ``python``."""
    env = os.environ if environ is None else environ
    if "COLAB_RELEASE_TAG" in env or "COLAB_GPU" in env or "google.colab" in sys.modules:
        return "colab"
    if "KAGGLE_KERNEL_RUN_TYPE" in env or "KAGGLE_URL_BASE" in env:
        return "kaggle"
    if (
        any(key.startswith(("SM_", "SAGEMAKER_")) for key in env)
        or Path("/opt/ml/metadata/resource-metadata.json").exists()
    ):
        return "sagemaker"
    if "ipykernel" in sys.modules or "JPY_PARENT_PID" in env:
        return "jupyter"
    return "python"


def current_uid() -> int | None:
    """This process's user id; None where there is none (Windows, whose temp directory is the
    user's own)."""
    getuid = getattr(os, "getuid", None)
    return None if getuid is None else int(getuid())


def user_suffix() -> str:
    """``-<uid>``, or nothing without a uid: what names a file or directory of this user in a
    temp directory that other users share."""
    uid = current_uid()
    return "" if uid is None else f"-{uid}"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return "no-boot-id"


def _runtime_key(runtime: str) -> str:
    return hashlib.sha256(f"{runtime}:{_boot_id()}".encode()).hexdigest()[:16]


def session_file(runtime: str, directory: Path | None = None) -> Path:
    """Where this user's session id of this runtime is kept for the runtime's lifetime
    (``<tmp>/ca4-session-<uid>-<key>.id``). OSError when there is no usable temp directory."""
    return (directory or Path(tempfile.gettempdir())) / (
        f"ca4-session{user_suffix()}-{_runtime_key(runtime)}.id"
    )


def _legacy_session_file(runtime: str, directory: Path | None = None) -> Path | None:
    """Where SDKs before the uid in the name kept it (one file for every user of the host)."""
    if current_uid() is None:
        return None  # the same name as session_file's
    return (directory or Path(tempfile.gettempdir())) / f"ca4-session-{_runtime_key(runtime)}.id"


def new_session_id(runtime: str) -> str:
    """A fresh, random session id for ``runtime`` (``colab-<20 hex>``)."""
    return f"{runtime}-{uuid.uuid4().hex[:20]}"


def read_own(path: Path) -> str | None:
    """The session id in ``path`` (or the privacy salt: hex digits are one too), when it is
    this user's file (never a link) and holds one.

    OSError when it cannot be read, or is another user's: an id another user put in place for
    this user's runtime is not taken.
    """
    fd = os.open(path, os.O_RDONLY | NOFOLLOW)
    try:
        uid = current_uid()
        owner = os.fstat(fd).st_uid
        if uid is not None and owner != uid:
            raise PermissionError(f"{path} belongs to another user (uid {owner})")
        data = os.read(fd, _SESSION_FILE_MAX_BYTES)
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    return text if SESSION_ID_PATTERN.match(text) else None


def _process_key(runtime: str, path: Path | None) -> str:
    return str(path) if path is not None else f"<no temp directory>/{runtime}"


def _in_process_only(runtime: str, path: Path | None, error: OSError | ValueError) -> str:
    """The session id for this process's life, when the session file cannot be used (warned
    once per file): a cell run again keeps it, a restarted kernel gets a fresh one."""
    key = _process_key(runtime, path)
    existing = _process_session_ids.get(key)
    if existing is not None:
        return existing
    session_id = _process_session_ids[key] = new_session_id(runtime)
    where = f"in {path}" if path is not None else "in the temp directory"
    logger.warning(
        "ca4: cannot keep the session id %s (%s); session %s lasts as long as this process: "
        "pass session_id= or set CA4_SESSION_ID to keep one across restarts",
        where,
        error,
        session_id,
    )
    return session_id


def stable_session_id(runtime: str, directory: Path | None = None) -> str:
    """The session id for this runtime's life, created once and then read back; never raises
    (without a usable session file the id lives in this process only)."""
    path: Path | None = None
    try:
        path = session_file(runtime, directory)
        try:
            existing = read_own(path)
        except FileNotFoundError:
            existing = None
        if existing is not None:
            return existing
        candidate = _legacy_session_id(runtime, directory) or new_session_id(runtime)
        try:
            # O_EXCL: two reporters starting at once agree on whichever id was written first.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
        except FileExistsError:
            existing = read_own(path)
            if existing is None:
                raise ValueError(f"{path} holds no session id") from None
            return existing
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(candidate)
        return candidate
    except (OSError, ValueError) as error:
        return _in_process_only(runtime, path, error)


def _legacy_session_id(runtime: str, directory: Path | None) -> str | None:
    """The id an earlier SDK kept for this runtime, when this user wrote it: kept on upgrade,
    so the reports that SDK spooled for it are found again."""
    legacy = _legacy_session_file(runtime, directory)
    if legacy is None:
        return None
    try:
        return read_own(legacy)
    except OSError:
        return None


def replace_session_id(runtime: str, refused: str, directory: Path | None = None) -> str:
    """This runtime's session id from now on, instead of ``refused`` (see :func:`session_file`).

    The id another reporter of the runtime already put in place of ``refused``, or a fresh one,
    written for the runtime's later reporters (a cell run again) to read back. Two processes
    replacing the same id at once may each keep their own: harmless, each reports under an id
    of its own.
    """
    path: Path | None = None
    try:
        path = session_file(runtime, directory)
        existing = read_own(path)
    except (OSError, ValueError):
        # No usable file: the id this process keeps instead, if any.
        existing = _process_session_ids.get(_process_key(runtime, path))
    if existing and existing != refused:
        return existing
    key = _process_key(runtime, path)
    candidate = new_session_id(runtime)
    if path is None:
        _process_session_ids[key] = candidate
        return candidate
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    created = False
    try:
        # A shared temp directory: never follow or reuse what another user may have put there.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
        created = True
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(candidate)
        os.replace(temp, path)
    except OSError:
        _process_session_ids[key] = candidate  # the id lives as long as this process
        if created:
            with contextlib.suppress(OSError):
                temp.unlink()
    return candidate
