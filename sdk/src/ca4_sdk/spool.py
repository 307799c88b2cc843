"""A bounded queue of reports the API could not take yet: on disk, or in memory without a disk.

One JSON file per report, named ``<ns clock>-<event_id>.json``, written atomically (temp file +
rename), so a crash never leaves half a report and the same event is never spooled twice. The
clock in the names only goes up (past the newest name spooled, whatever the wall clock does), so
a clock stepped back never sends new reports first nor evicts them before older ones. When
the count or byte cap is reached the oldest reports go first, with a counter and one warning
until the spool has emptied again (the API took or refused them all): a notebook that lost the API
for a day must not fill its disk or memory, nor its cell's output with a line per collection.

The default directory is ``<tmp>/ca4-spool-<uid>/<session id>``: each user of a shared host
has one of their own. The directory also holds ``.reporter-<hash of the session id>.lock``,
whose OS lock the one process of the host that reports the session holds, and ``dead/``, the
reports the reporter gave up on (the API kept failing on them alone). Without a usable
directory (a read-only or missing temp directory, a ``spool_dir`` that cannot be written) the
reporter keeps its reports in a :class:`MemorySpool` instead, under the same caps, until the
process ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ca4_sdk import runtime

try:
    import fcntl
except ImportError:  # Windows: no OS file locks here; reporters are not coordinated
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("ca4_sdk")

_SPOOLED = re.compile(r"[0-9]{20}-[^/]+\.json")
"""The name of a spooled report: its time in nanoseconds, then its event id."""
DEFAULT_MAX_REPORTS = 5000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEAD_DIR = "dead"
"""Where, in the spool directory, reports the API kept failing on are moved out of the queue."""
MAX_DEAD = 100
"""Reports kept in ``dead/``: the newest; older ones are deleted."""


def default_spool_dir(session_id: str) -> Path:
    """``<tmp>/ca4-spool-<uid>/<session id>``: survives re-running a cell, not a new runtime.
    OSError when there is no usable temp directory."""
    return Path(tempfile.gettempdir()) / f"ca4-spool{runtime.user_suffix()}" / session_id


def legacy_spool_dir(session_id: str) -> Path | None:
    """``<tmp>/ca4-spool/<session id>``, where SDKs before the uid in the name spooled (one
    directory for every user of the host); None where that is the default still (no uid)."""
    if runtime.current_uid() is None:
        return None
    return Path(tempfile.gettempdir()) / "ca4-spool" / session_id


def prepare_default_spool_dir(directory: Path) -> None:
    """Make the parent of a default spool directory, this user's only; OSError when it is
    another user's (or a link), or cannot be made: a shared temp directory must not hand this
    user's reports to another, nor send theirs with this user's key."""
    parent = directory.parent
    with contextlib.suppress(FileExistsError):
        parent.mkdir(mode=0o700)
    _check_own_directory(parent)


def _check_own_directory(directory: Path) -> None:
    """OSError unless ``directory`` is a directory (not a link) of this user that no one else
    may write to."""
    info = os.lstat(directory)
    uid = runtime.current_uid()
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"{directory} is not a directory")
    if uid is not None and info.st_uid != uid:
        raise PermissionError(f"{directory} belongs to another user (uid {info.st_uid})")
    if uid is not None and info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(f"{directory} may be written by other users")


@dataclass(frozen=True)
class SpooledReport:
    """A report read back from the spool, with the file to delete once it is delivered (its
    name alone, for a :class:`MemorySpool`)."""

    path: Path
    report: dict[str, Any]


class Spool:
    """Thread-safe, bounded, oldest-first on-disk report queue.

    Its storage is a few small methods (``_names``, ``_load``, ``_store``, ``_delete``,
    ``_size``), which :class:`MemorySpool` replaces; the queue's rules live here once.
    """

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
        self._said_full = False
        """The spool-full warning was logged and no report has left the spool since."""
        self._last_stamp = 0
        """The clock in the newest name this spool wrote: the next one is later."""
        self._lock = threading.Lock()
        self._prepare()

    @property
    def location(self) -> str:
        """Where the reports are kept, for messages: the directory, or ``memory``."""
        return str(self.directory)

    @property
    def on_disk(self) -> bool:
        """Whether the reports outlive this process (and are sent by the next run)."""
        return True

    def after_fork_in_child(self) -> None:
        """In a child made by ``os.fork()``: a lock of its own (a parent's thread may have held
        the inherited one, and it does not exist in the child to release it)."""
        self._lock = threading.Lock()

    # -- storage: files in the directory -------------------------------------------------------

    def _prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _names(self) -> list[str]:
        # Only the spool's own names: a spool_dir shared with other files must never send,
        # evict or delete them.
        return sorted(
            path.name for path in self.directory.glob("*.json") if _SPOOLED.fullmatch(path.name)
        )

    def _path(self, name: str) -> Path:
        return self.directory / name

    def _load(self, name: str) -> bytes:
        return (self.directory / name).read_bytes()

    def _store(self, name: str, data: bytes) -> None:
        path = self.directory / name
        temp = path.with_name(f".{name}.tmp")
        temp.write_bytes(data)
        os.replace(temp, path)

    def _delete(self, name: str) -> None:
        (self.directory / name).unlink(missing_ok=True)

    def _size(self, name: str) -> int:
        try:
            return (self.directory / name).stat().st_size
        except OSError:
            return 0

    def _emptied(self) -> None:
        """Every report moved to another spool (a session left for a fresh one): remove the
        directory, once empty, with the lock files this process holds in it (its reporters
        are done with that session; one another process holds keeps the directory)."""
        remove_own_lock_files(self.directory)
        with contextlib.suppress(OSError):  # not empty, or already gone
            self.directory.rmdir()

    # -- the queue -----------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._names())

    def put(self, reports: list[dict[str, Any]]) -> int:
        """Store reports (already-spooled event ids are skipped), then enforce the caps; returns
        how many of the oldest reports were dropped for room."""
        with self._lock:
            # Another process of this runtime may have moved the shared spool away when it left
            # a refused session (``move_sessions``): this one spools on until it is refused too.
            self._prepare()
            names = self._names()
            existing = {_event_id(name) for name in names}
            stamp = max(self._last_stamp, int(names[-1][:20]) if names else 0)
            for report in reports:
                event_id = str(report["event_id"])
                if event_id in existing:
                    continue
                existing.add(event_id)
                stamp = max(time.time_ns(), stamp + 1)
                self._write(f"{stamp:020d}-{event_id}.json", report)
            self._last_stamp = stamp
            return self._enforce_caps()

    def _write(self, name: str, report: dict[str, Any]) -> None:
        self._store(name, json.dumps(report, separators=(",", ":")).encode())

    def _enforce_caps(self) -> int:
        names = self._names()
        sizes = {name: self._size(name) for name in names}
        total = sum(sizes.values())
        dropped_now = 0
        while names and (len(names) > self.max_reports or total > self.max_bytes):
            oldest = names.pop(0)
            total -= sizes[oldest]
            self._delete(oldest)
            dropped_now += 1
        self.dropped += dropped_now
        if dropped_now and not self._said_full:
            self._said_full = True
            logger.warning(
                "ca4 spool full (%d reports / %d bytes max): dropped the %d oldest reports; until "
                "it has emptied, each new one drops the oldest (counted in "
                "reporter.stats.dropped, not logged again)",
                self.max_reports,
                self.max_bytes,
                dropped_now,
            )
        return dropped_now

    def peek(self, limit: int) -> list[SpooledReport]:
        """Up to ``limit`` oldest reports; unreadable files are removed and skipped."""
        with self._lock:
            found = []
            for name in self._names()[:limit]:
                try:
                    found.append(SpooledReport(self._path(name), json.loads(self._load(name))))
                except (OSError, ValueError):
                    self._delete(name)
            return found

    def move_sessions(self, session_ids: Collection[str], session_id: str, into: Spool) -> int:
        """Give every spooled report of ``session_ids`` the session ``session_id``, keeping its
        ``event_id`` and its place in the queue; returns how many.

        ``into`` is this spool (rewritten in place) or the one that replaces it, which then
        gets every report, the others unchanged, and this directory is removed once empty.
        """
        changed = 0
        moving: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            for name in self._names():
                try:
                    report = json.loads(self._load(name))
                except (OSError, ValueError):
                    self._delete(name)
                    continue
                if report.get("session_id") in session_ids:
                    report["session_id"] = session_id
                    changed += 1
                    if into is self:
                        self._write(name, report)
                if into is not self:
                    moving.append((name, report))
        if moving:
            into.put([report for _, report in moving])  # written there before deleted here
            with self._lock:
                for name, _ in moving:
                    self._delete(name)
        if into is not self:
            self._emptied()
        return changed

    def adopt(self, directory: Path) -> int:
        """Move the reports spooled in ``directory`` (an earlier SDK's spool) into this one,
        oldest first, when it is this user's own directory; returns how many. OSError when it
        cannot be read or is not this user's."""
        _check_own_directory(directory)
        earlier = Spool(directory, max_reports=self.max_reports, max_bytes=self.max_bytes)
        count = len(earlier)
        earlier.move_sessions((), "", into=self)
        with contextlib.suppress(OSError):  # the shared parent: empty only once every user's went
            directory.parent.rmdir()
        return count

    def remove(self, spooled: list[SpooledReport]) -> None:
        """Delete delivered (or permanently refused) reports."""
        with self._lock:
            for item in spooled:
                self._delete(item.path.name)
            self._said_full_until_empty()

    def dead_letter(self, item: SpooledReport) -> Path | None:
        """Move ``item`` out of the queue, into ``dead/`` in the spool directory, where a person
        can look at it (the newest :data:`MAX_DEAD` are kept); None for a spool in memory,
        where it is dropped."""
        with self._lock:
            dead = self._dead_path(item.path.name)
            if dead is None:
                self._delete(item.path.name)
            self._said_full_until_empty()
            return dead

    def _dead_path(self, name: str) -> Path | None:
        dead = self.directory / DEAD_DIR
        dead.mkdir(exist_ok=True, mode=0o700)
        os.replace(self.directory / name, dead / name)
        kept = sorted(path.name for path in dead.glob("*.json") if _SPOOLED.fullmatch(path.name))
        for old in kept[:-MAX_DEAD]:
            (dead / old).unlink(missing_ok=True)
        return dead / name

    def discard(self, event_ids: Collection[str]) -> None:
        """Delete the spooled reports of ``event_ids`` (delivered, or refused for good)."""
        with self._lock:
            for name in self._names():
                if _event_id(name) in event_ids:
                    self._delete(name)
            self._said_full_until_empty()

    def _said_full_until_empty(self) -> None:
        """Say the spool full again only after it emptied: a flaky API that takes a report now
        and then, with the spool still full, would otherwise get a warning each time."""
        if self._said_full and not self._names():
            self._said_full = False


class MemorySpool(Spool):
    """The spool's queue, caps and rules, in this process's memory: for a host without a
    usable spool directory. Its reports are lost when the process ends."""

    def __init__(
        self, *, max_reports: int = DEFAULT_MAX_REPORTS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self._reports: dict[str, bytes] = {}
        super().__init__(Path("<memory>"), max_reports=max_reports, max_bytes=max_bytes)

    @property
    def location(self) -> str:
        return "memory (no usable spool directory)"

    @property
    def on_disk(self) -> bool:
        return False

    def _prepare(self) -> None:
        pass

    def _names(self) -> list[str]:
        return sorted(self._reports)

    def _path(self, name: str) -> Path:
        return Path(name)

    def _load(self, name: str) -> bytes:
        try:
            return self._reports[name]
        except KeyError:
            raise FileNotFoundError(name) from None

    def _store(self, name: str, data: bytes) -> None:
        self._reports[name] = data

    def _delete(self, name: str) -> None:
        self._reports.pop(name, None)

    def _size(self, name: str) -> int:
        return len(self._reports.get(name, b""))

    def _emptied(self) -> None:
        pass

    def _dead_path(self, name: str) -> Path | None:
        return None


def _event_id(name: str) -> str:
    """The event id in a spooled report's name (``<ns clock>-<event_id>.json``)."""
    return name.split("-", 1)[1].removesuffix(".json")


class _HostLocks:
    """The lock files whose OS lock this process holds: ``{lock file: [fd, users]}``.

    One OS lock (``fcntl.flock``) per session's lock file and process, shared by this process's
    reporters; released when the last one lets it go.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[Path, list[int]] = {}


_host_locks = _HostLocks()


def host_lock_file(directory: Path, session_id: str) -> Path:
    """The file whose OS lock the process reporting ``session_id`` from ``directory`` holds:
    one per session, since a ``spool_dir`` given by hand may hold several sessions' spools."""
    digest = hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return directory / f".reporter-{digest}.lock"


def take_host_lock(lock_file: Path) -> bool | None:
    """Whether this process now holds ``lock_file``'s lock: False while another process holds
    it; None when the lock cannot be used (no ``fcntl``, as on Windows; a file system without
    locks; a directory that cannot be written): reporting then goes on uncoordinated rather
    than not at all, and the caller tries again later.

    The file is never deleted while a process may wait on it, and a lock is checked to be on
    the file the path names now (a temp cleaner may have deleted it): another process could
    otherwise lock a new file of the same name and report too.
    """
    if fcntl is None:
        return None
    with _host_locks.lock:
        held = _host_locks.held.get(lock_file)
        if held is not None:
            held[1] += 1
            return True
        try:
            fd = _lock_the_file(lock_file)
        except BlockingIOError:
            return False
        if fd is None:
            return None
        with contextlib.suppress(OSError):  # the holder's pid, for the others' message
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        _host_locks.held[lock_file] = [fd, 1]
        return True


def _lock_the_file(lock_file: Path) -> int | None:
    """A descriptor holding ``lock_file``'s lock; None when no lock can be used there.
    BlockingIOError while another process holds it."""
    assert fcntl is not None
    for _ in range(3):
        try:
            lock_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            logger.debug("ca4: no lock file %s (%s): reporting uncoordinated", lock_file, error)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise
        except OSError as error:  # no locks on this file system
            os.close(fd)
            logger.debug("ca4: cannot lock %s (%s): reporting uncoordinated", lock_file, error)
            return None
        if _is_the_file(fd, lock_file):
            return fd
        os.close(fd)  # deleted or replaced since it was opened: lock the one there now
    return None


def _is_the_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is open on the file ``path`` names now."""
    try:
        opened, named = os.fstat(fd), path.stat()
    except OSError:
        return False
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)


def host_lock_intact(lock_file: Path) -> bool:
    """Whether this process holds ``lock_file``'s lock on the file the path names now (False
    after a temp cleaner deleted it: the holder then takes the lock again)."""
    with _host_locks.lock:
        held = _host_locks.held.get(lock_file)
        return held is not None and _is_the_file(held[0], lock_file)


def release_host_lock(lock_file: Path) -> None:
    """Let go of one use of ``lock_file``'s lock; the OS lock goes with the last one."""
    if fcntl is None:
        return
    with _host_locks.lock:
        held = _host_locks.held.get(lock_file)
        if held is None:
            return
        held[1] -= 1
        if held[1] <= 0:
            del _host_locks.held[lock_file]
            os.close(held[0])  # releases the OS lock


def remove_own_lock_files(directory: Path) -> None:
    """Delete the lock files in ``directory`` whose lock this process holds (it keeps them
    until its reporters let go)."""
    with _host_locks.lock:
        for lock_file in _host_locks.held:
            if lock_file.parent == directory:
                with contextlib.suppress(OSError):
                    lock_file.unlink()


def forget_host_lock(lock_file: Path) -> None:
    """Let go of every use of ``lock_file``'s lock in this process (its file was replaced)."""
    with _host_locks.lock:
        held = _host_locks.held.pop(lock_file, None)
    if held is not None:
        with contextlib.suppress(OSError):
            os.close(held[0])


def host_lock_holder(lock_file: Path) -> str | None:
    """The pid written by the process holding ``lock_file``'s lock, when it can be read."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = lock_file.read_text(encoding="ascii").strip()
        return text if text.isdigit() else None
    return None


def _forget_host_locks_in_child() -> None:
    """A forked child holds none of the parent's locks: it closes its copies of their files
    without unlocking (the lock is the parent's open file, which stays locked)."""
    _host_locks.lock = threading.Lock()
    for fd, _users in _host_locks.held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _host_locks.held.clear()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forget_host_locks_in_child)
