"""Which runtime this is (Colab, Kaggle, SageMaker, Jupyter, plain Python) and its session id.

The session id must survive re-running a notebook cell and re-creating the Reporter, but change
when the runtime (VM or container) is recycled. It is a random id persisted in the temp
directory, keyed by the kernel boot id: a recycled Colab runtime has a fresh temp directory.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import uuid
from pathlib import Path

SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")


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


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return "no-boot-id"


def session_file(runtime: str, directory: Path | None = None) -> Path:
    """Where this runtime's session id is kept for its lifetime."""
    key = hashlib.sha256(f"{runtime}:{_boot_id()}".encode()).hexdigest()[:16]
    return (directory or Path(tempfile.gettempdir())) / f"ca4-session-{key}.id"


def new_session_id(runtime: str) -> str:
    """A fresh, random session id for ``runtime`` (``colab-<20 hex>``)."""
    return f"{runtime}-{uuid.uuid4().hex[:20]}"


def stable_session_id(runtime: str, directory: Path | None = None) -> str:
    """The session id for this runtime's life, created once and then read back."""
    path = session_file(runtime, directory)
    try:
        existing = path.read_text(encoding="ascii").strip()
        if SESSION_ID_PATTERN.match(existing):
            return existing
    except OSError:
        pass
    candidate = new_session_id(runtime)
    try:
        # O_EXCL: two reporters starting at once agree on whichever id was written first.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(candidate)
    except FileExistsError:
        existing = path.read_text(encoding="ascii").strip()
        return existing if SESSION_ID_PATTERN.match(existing) else candidate
    except OSError:
        pass  # read-only temp dir: the id lives as long as this process
    return candidate


def replace_session_id(runtime: str, refused: str, directory: Path | None = None) -> str:
    """This runtime's session id from now on, instead of ``refused`` (see :func:`session_file`).

    The id another reporter of the runtime already put in place of ``refused``, or a fresh one,
    written for the runtime's later reporters (a cell run again) to read back. Two processes
    replacing the same id at once may each keep their own: harmless, each reports under an id
    of its own.
    """
    path = session_file(runtime, directory)
    try:
        existing = path.read_text(encoding="ascii").strip()
    except OSError:
        existing = ""
    if existing and existing != refused and SESSION_ID_PATTERN.match(existing):
        return existing
    candidate = new_session_id(runtime)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # A shared temp directory: never follow or reuse what another user may have put there.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(candidate)
        os.replace(temp, path)
    except OSError:
        pass  # read-only temp dir: the id lives as long as this process
    return candidate
