"""A bounded on-disk queue of reports the API could not take yet.

One JSON file per report, named ``<ns clock>-<event_id>.json``, written atomically (temp file +
rename), so a crash never leaves half a report and the same event is never spooled twice. When
the count or byte cap is reached the oldest reports go first, with a warning and a counter: a
notebook that lost the API for a day must not fill its disk or memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("ca4_sdk")

_SPOOLED = re.compile(r"[0-9]{20}-[^/]+\.json")
"""The name of a spooled report: its time in nanoseconds, then its event id."""
DEFAULT_MAX_REPORTS = 5000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def default_spool_dir(session_id: str) -> Path:
    """``<tmp>/ca4-spool/<session id>``: survives re-running a cell, not a new runtime."""
    return Path(tempfile.gettempdir()) / "ca4-spool" / session_id


@dataclass(frozen=True)
class SpooledReport:
    """A report read back from the spool, with the file to delete once it is delivered."""

    path: Path
    report: dict[str, Any]


class Spool:
    """Thread-safe, bounded, oldest-first on-disk report queue."""

    def __init__(
        self,
        directory: Path,
        *,
        max_reports: int = DEFAULT_MAX_REPORTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.directory = directory
        self.max_reports = max_reports
        self.max_bytes = max_bytes
        self.dropped = 0
        """Reports deleted unsent because the spool was full."""
        self._lock = threading.Lock()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def after_fork_in_child(self) -> None:
        """In a child made by ``os.fork()``: a lock of its own (a parent's thread may have held
        the inherited one, and it does not exist in the child to release it)."""
        self._lock = threading.Lock()

    def _files(self) -> list[Path]:
        # Only the spool's own names: a spool_dir shared with other files must never send,
        # evict or delete them.
        return sorted(
            path for path in self.directory.glob("*.json") if _SPOOLED.fullmatch(path.name)
        )

    def __len__(self) -> int:
        with self._lock:
            return len(self._files())

    def put(self, reports: list[dict[str, Any]]) -> None:
        """Store reports (already-spooled event ids are skipped), then enforce the caps."""
        with self._lock:
            # Another process of this runtime may have moved the shared spool away when it left
            # a refused session (``move_sessions``): this one spools on until it is refused too.
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            existing = {path.stem.split("-", 1)[1] for path in self._files()}
            for report in reports:
                event_id = str(report["event_id"])
                if event_id in existing:
                    continue
                existing.add(event_id)
                self._write(self.directory / f"{time.time_ns():020d}-{event_id}.json", report)
            self._enforce_caps()

    def _write(self, path: Path, report: dict[str, Any]) -> None:
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_bytes(json.dumps(report, separators=(",", ":")).encode())
        os.replace(temp, path)

    def _enforce_caps(self) -> None:
        files = self._files()
        sizes = {path: _size(path) for path in files}
        total = sum(sizes.values())
        dropped_now = 0
        while files and (len(files) > self.max_reports or total > self.max_bytes):
            oldest = files.pop(0)
            total -= sizes[oldest]
            oldest.unlink(missing_ok=True)
            dropped_now += 1
        if dropped_now:
            self.dropped += dropped_now
            logger.warning(
                "ca4 spool full (%d reports / %d bytes max): dropped the %d oldest reports",
                self.max_reports,
                self.max_bytes,
                dropped_now,
            )

    def peek(self, limit: int) -> list[SpooledReport]:
        """Up to ``limit`` oldest reports; unreadable files are removed and skipped."""
        with self._lock:
            found = []
            for path in self._files()[:limit]:
                try:
                    found.append(SpooledReport(path, json.loads(path.read_bytes())))
                except (OSError, ValueError):
                    path.unlink(missing_ok=True)
            return found

    def move_sessions(self, session_ids: Collection[str], session_id: str, into: Spool) -> int:
        """Give every spooled report of ``session_ids`` the session ``session_id``, keeping its
        ``event_id`` and its place in the queue; returns how many.

        ``into`` is this spool (rewritten in place) or the one that replaces it, which then
        gets every report, the others unchanged, and this directory is removed once empty.
        """
        changed = 0
        moving: list[tuple[Path, dict[str, Any]]] = []
        with self._lock:
            for path in self._files():
                try:
                    report = json.loads(path.read_bytes())
                except (OSError, ValueError):
                    path.unlink(missing_ok=True)
                    continue
                if report.get("session_id") in session_ids:
                    report["session_id"] = session_id
                    changed += 1
                    if into is self:
                        self._write(path, report)
                if into is not self:
                    moving.append((path, report))
        if moving:
            into.put([report for _, report in moving])  # written there before deleted here
            with self._lock:
                for path, _ in moving:
                    path.unlink(missing_ok=True)
        if into is not self:
            with contextlib.suppress(OSError):  # not empty, or already gone
                self.directory.rmdir()
        return changed

    def remove(self, spooled: list[SpooledReport]) -> None:
        """Delete delivered (or permanently refused) reports."""
        with self._lock:
            for item in spooled:
                item.path.unlink(missing_ok=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
