"""The notebook-facing reporter: collect every ``interval`` seconds and deliver in the background.

Everything slow (NVML or nvidia-smi, HTTP, disk) happens on one daemon thread; the caller's
thread only flips an event. No asyncio anywhere, so Jupyter's own event loop is never touched.
The thread's reports go to the bounded on-disk spool before they are sent (a bounded one in
memory, with a warning, where no spool directory can be used), and stay there until the API
takes them: they are sent, oldest first and with unchanged ``event_id``, as soon as the API
answers again, and once more at interpreter exit. A reporter is active only in the process
that started it (a child made by ``os.fork()`` inherits an inactive one), and one per session id
runs in a process (starting another stops the earlier one; :func:`stop_all` stops them all).

One process per host reports a session: the one holding the OS lock of the session's spool
directory. A reporter started in another process of the host (a torchrun or DDP rank, a spawned
worker: they share the session id) stands by, said once in a log line, and tries the lock again
each interval, so it takes over when the holder's process ends. Every rank reporting would send
each GPU once per rank and drain one spool from several processes at once.

A report that keeps making its batches fail with a server error is isolated by sending those
batches in halves (after :data:`ISOLATE_AFTER` failures in a row), so the reports around it get
through; one that then keeps failing alone (:data:`DEAD_AFTER_TRIES` times over
:data:`DEAD_AFTER_S` at least) is moved out of the queue into ``dead/`` in the spool directory,
with a warning that names it.

When the API refuses the runtime's session as another tenant's (a session reported before the
API's tenancy upgrade, or an API key moved to another tenant), the reporter switches once to a
fresh session id and sends the refused reports again under it with their ``event_id``: a
refused report was neither published nor stored, so nothing is counted twice.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import os
import re
import threading
import time
import unicodedata
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ca4_sdk.collectors import AutoCollector, GpuCollector
from ca4_sdk.host import collect_host
from ca4_sdk.privacy import default_salt
from ca4_sdk.report import ReportDict, build_report, validate_labels
from ca4_sdk.runtime import (
    HOSTED_RUNTIMES,
    SESSION_ID_PATTERN,
    detect_runtime,
    replace_session_id,
    stable_session_id,
)
from ca4_sdk.spool import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_REPORTS,
    MemorySpool,
    Spool,
    SpooledReport,
    default_spool_dir,
    forget_host_lock,
    host_lock_file,
    host_lock_holder,
    host_lock_intact,
    legacy_spool_dir,
    prepare_default_spool_dir,
    release_host_lock,
    take_host_lock,
)
from ca4_sdk.transport import BATCH_PATH, Backoff, SendOutcome, Transport

logger = logging.getLogger("ca4_sdk")

DEFAULT_MAX_BATCH = 100
AUTH_RETRY_S = 300.0
"""A refused API key won't fix itself soon; try again rarely instead of hammering the API."""
STOP_TIMEOUT_S = 5.0
"""What :meth:`Reporter.stop` (and leaving ``with``) waits at most by default: the last POST
gets what is left of it, so an edge that accepts and never answers can't freeze the notebook."""
VM_GOES_WITH_THE_RUNTIME = (
    " (not if this runtime is deleted or recycled: its disk goes with it; pass spool_dir= on "
    "a mounted Drive to keep them)"
)
AT_EXIT_TIMEOUT_S = 5.0
"""What the interpreter-exit flush waits at most, for every reporter of the process together."""
COLLECT_WAIT_S = 30.0
"""How long :meth:`Reporter.collect` waits for a collection already running (the reporter
thread's) before it gives up with TimeoutError: a GPU query that hangs must not hang the
caller's cell too."""
ISOLATE_AFTER = 3
"""Failed tries in a row of batches holding the same report before they are sent in halves, to
isolate a report that makes them fail (an API down fails every half alike: two POSTs a try)."""
DEAD_AFTER_TRIES = 10
DEAD_AFTER_S = 3600.0
"""A report that failed sent alone, while others got through, this many times and for this
long at least is moved out of the queue (into ``dead/``): it would otherwise be sent for good."""
API_PATHS = (
    "/v1/metadata/batch",
    "/v1/metadata",
    "/v1/sessions",
    "/v1/gpus",
    "/v1/events",
    "/v1/usage",
    "/v1",
    "/metadata",
    "/sdk",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/asyncapi",
    "/asyncapi.json",
    "/healthz",
    "/readyz",
    "/metrics",
)
"""Paths of the edge that are not its base URL: a ``url`` ending in one is a setup mistake (the
SDK would post to ``.../v1/metadata/v1/metadata/batch`` or ``.../docs/v1/metadata/batch``, and
retry for good). Any other path prefix is kept, for an edge behind a proxy under a path of its
own."""
_MANGLED_SCHEME = re.compile(r"(https?)[:/]+(?=[^:/])", re.IGNORECASE)
"""``https//host``, ``https:/host``, ``http:host``: a scheme with its ``://`` mistyped."""
API_PATH_TREES = ("/v1/metadata", "/v1/sessions", "/v1/gpus", "/v1/events", "/v1/usage", "/sdk")
"""API paths whose every sub-path is one too (a session's or a GPU's page, the SDK's wheel): a
``url`` with one anywhere in its path is refused the same way."""


class _Registry:
    """This process's reporters."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[str, Reporter] = {}
        """The reporter started last for each session id (the one a re-run cell's earlier run
        left running, with no handle left to stop it)."""
        self.instances: weakref.WeakSet[Reporter] = weakref.WeakSet()
        """Every reporter, to make those a forked child inherits inactive there."""
        self.exit_due: dict[Reporter, None] = {}
        """Reporters whose interpreter-exit flush is due (in the order they started)."""


_registry = _Registry()


@dataclass
class ReporterStats:
    """Counters for the notebook user (``reporter.stats``)."""

    collected: int = 0
    delivered: int = 0
    rejected: int = 0
    send_failures: int = 0
    last_error: str | None = None
    """Why the last delivery failed; cleared once a delivery empties the spool again."""
    last_success_at: datetime | None = None
    """When the API last accepted a report (UTC)."""
    dropped: int = 0
    """Reports dropped unsent, the oldest first, to make room in a full spool (last, so the
    fields of earlier releases keep their places)."""


@dataclass(frozen=True)
class DeliveryResult:
    """What :meth:`Reporter.report_once` did with its report."""

    event_id: str
    delivered: bool
    error: str | None = None


@dataclass
class _RunControl:
    """One run of the background thread: its stop signal and its last POST's deadline."""

    stop: threading.Event = field(default_factory=threading.Event)
    flush_deadline: float | None = None
    """``time.monotonic()`` by which the final flush must be done (set when stopping)."""
    doing: str = "sending"
    """What the thread is busy with, for the message of a stop that timed out."""


def stop_all(timeout: float | None = None) -> int:
    """Stop every reporter running in this process (each as :meth:`Reporter.stop`); returns how
    many there were. Handy in a notebook whose earlier cells lost their reporter's handle."""
    with _registry.lock:
        reporters = list(_registry.running.values())
    for reporter in reporters:
        reporter.stop(timeout)
    return len(reporters)


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads: every reporter it inherits is inactive
    there (its pid says so), and gets locks of its own, which no thread of the child holds."""
    _registry.lock = threading.Lock()
    _registry.running.clear()
    _registry.exit_due.clear()
    for reporter in list(_registry.instances):
        reporter._inherited_through_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _flush_all_at_exit() -> None:
    """Interpreter exit: every reporter due is told to stop first, then each is waited for
    within what is left of one :data:`AT_EXIT_TIMEOUT_S`, so that several reporters don't
    wait that long each in turn."""
    with _registry.lock:
        due = [reporter for reporter in _registry.exit_due if reporter._active_here()]
    deadline = time.monotonic() + AT_EXIT_TIMEOUT_S
    for reporter in due:
        reporter._signal_stop(deadline - 0.25)
    for reporter in due:
        reporter._finish_at_exit(deadline)


def _exit_flush_due(reporter: Reporter) -> None:
    with _registry.lock:
        _registry.exit_due[reporter] = None
    atexit.unregister(_flush_all_at_exit)  # once, whatever the number of reporters
    atexit.register(_flush_all_at_exit)


def _exit_flush_done(reporter: Reporter) -> None:
    with _registry.lock:
        _registry.exit_due.pop(reporter, None)
        empty = not _registry.exit_due
    if empty:
        atexit.unregister(_flush_all_at_exit)


def _base_url(url: str) -> str:
    """``url`` checked and without trailing ``/``; ValueError saying what to pass instead."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        hint = f"; did you mean {_with_scheme(url)!r}?" if "://" not in url else ""
        raise ValueError(
            "url must start with http:// or https:// and name a host, e.g. "
            f"https://edge.example (got {url!r}{hint})"
        )
    try:
        _ = parts.port  # a port that is not a number raises ValueError
    except ValueError as error:
        raise ValueError(f"url has an invalid port (got {url!r}): {error}") from None
    if parts.query or parts.fragment:
        raise ValueError(f"url must be the edge's base URL, without ?query or #fragment: {url!r}")
    path = parts.path.rstrip("/")
    found = _api_path_in(path)
    if found is not None:
        at, api_path = found
        base = urlunsplit((parts.scheme, parts.netloc, path[:at], "", ""))
        raise ValueError(
            f"url {url!r} ends in the API path {api_path}: pass the edge's base URL, "
            f"e.g. {base} (the SDK adds {BATCH_PATH} itself)"
        )
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _with_scheme(url: str) -> str:
    """``url`` (without ``://``) as it was likely meant: a scheme typed with a slash or colon
    missing put right, else ``https://`` in front, and ``http://`` for this machine's own host
    (the dev edge). An edge elsewhere (ngrok's) is HTTPS: plain http would send the key in
    clear text."""
    mangled = _MANGLED_SCHEME.match(url)
    if mangled:
        return f"{mangled.group(1).lower()}://{url[mangled.end() :]}"
    loopback = False
    with contextlib.suppress(ValueError):  # a malformed host, or a name that is no address
        host = urlsplit(f"//{url}").hostname or ""
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    return f"{'http' if loopback else 'https'}://{url}"


def _api_path_in(path: str) -> tuple[int, str] | None:
    """Where ``path`` (without trailing ``/``) turns into an API path, and which, or None."""
    lowered = path.lower()
    for tree in API_PATH_TREES:
        at = lowered.find(tree + "/")
        if at >= 0:
            return at, lowered[at:]
    for api_path in API_PATHS:
        if lowered.endswith(api_path):
            return len(path) - len(api_path), api_path
    return None


def _checked_api_key(key: str) -> str:
    """``key`` without surrounding whitespace; ValueError for a character no API key has (a
    curly quote or a line break pasted from a document), naming its place, never the key, and
    for a key pasted with its ``Bearer`` prefix, which the API would refuse as a wrong key."""
    key = key.strip()
    if key[:7].lower() == "bearer ":
        raise ValueError(
            "the API key (api_key= or CA4_API_KEY) starts with 'Bearer ': paste the key alone, "
            "the SDK sends it as 'Bearer <key>' itself"
        )
    for position, character in enumerate(key, start=1):
        if not " " <= character <= "~":
            name = unicodedata.name(character, "a control character")
            raise ValueError(
                f"the API key (api_key= or CA4_API_KEY, {len(key)} characters) has "
                f"U+{ord(character):04X} ({name}) at position {position}: an API key is "
                "printable ASCII only; paste it again as plain text (a document or chat may "
                "have turned its quotes curly or added a line break)"
            )
    return key


def _open_spool(chosen: Path | None, session_id: str, *, max_reports: int, max_bytes: int) -> Spool:
    """The chosen spool directory, or the session's default one (with what an earlier SDK
    spooled for the session moved in); without a usable directory (a read-only or missing temp
    directory, another user's), a :class:`MemorySpool` and one warning: never an exception."""
    try:
        if chosen is not None:
            return Spool(chosen, max_reports=max_reports, max_bytes=max_bytes)
        directory = default_spool_dir(session_id)
        prepare_default_spool_dir(directory)
        spool = Spool(directory, max_reports=max_reports, max_bytes=max_bytes)
    except OSError as error:
        fix = (
            "pass spool_dir= a directory this user can write to"
            if chosen is not None
            else "set TMPDIR to a directory this user can write to, or pass spool_dir="
        )
        logger.warning(
            "ca4: no usable spool directory (%s): reports the API cannot take yet are kept in "
            "memory (%d reports / %g MiB at most) and lost when this process ends; %s",
            error,
            max_reports,
            max_bytes / 2**20,
            fix,
        )
        return MemorySpool(max_reports=max_reports, max_bytes=max_bytes)
    _adopt_legacy_spool(spool, session_id)
    return spool


def _adopt_legacy_spool(spool: Spool, session_id: str) -> None:
    """Move what an SDK before the uid in the spool's name spooled for ``session_id`` (in the
    directory every user shared) into ``spool``, when that directory is this user's."""
    legacy: Path | None = None
    try:
        legacy = legacy_spool_dir(session_id)
        if legacy is None or not legacy.is_dir():
            return
        moved = spool.adopt(legacy)
    except OSError as error:
        logger.debug("ca4: left the earlier spool %s alone: %s", legacy, error)
        return
    if moved:
        logger.info(
            "ca4: moved %s an earlier SDK spooled in %s to %s",
            _reports(moved),
            legacy,
            spool.location,
        )


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def _reports(count: int) -> str:
    return f"{count} report" if count == 1 else f"{count} reports"


class Reporter:
    """Report GPU metadata to a CA4 edge API without ever blocking the notebook.

    ``url`` (the edge's base URL) and ``api_key`` default to ``CA4_EDGE_API_URL`` and
    ``CA4_API_KEY``; a missing key, a key that is not printable ASCII (surrounding whitespace
    is stripped) or a URL that is not an edge's base URL raise ValueError at once. ``privacy``
    hashes the hostname (salted) and drops process names. Use :meth:`start` / :meth:`stop` or
    ``with Reporter(...):``; :meth:`report_once` collects and sends one report synchronously.
    Starting a reporter stops the one started earlier in this process for the same session (a
    notebook cell run again); :func:`stop_all` stops them all.

    A session the API refuses as another tenant's is left once for a fresh id (logged, and
    :attr:`session_id` says which), unless ``session_id`` or ``CA4_SESSION_ID`` chose it.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        interval: float = 15.0,
        labels: Mapping[str, str] | None = None,
        *,
        session_id: str | None = None,
        privacy: bool = False,
        privacy_salt: str | None = None,
        collector: GpuCollector | None = None,
        spool_dir: str | Path | None = None,
        spool_max_reports: int = DEFAULT_MAX_REPORTS,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        max_batch: int = DEFAULT_MAX_BATCH,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        read_timeout_s: float = 10.0,
    ) -> None:
        resolved_url = url or os.environ.get("CA4_EDGE_API_URL")
        if not resolved_url or not resolved_url.strip():
            raise ValueError(
                "no API URL: pass url=... or set CA4_EDGE_API_URL (in a notebook, a value set "
                "by an earlier cell is gone after a restart: run that cell again)"
            )
        resolved_key = _checked_api_key(api_key or os.environ.get("CA4_API_KEY") or "")
        if not resolved_key:
            raise ValueError("no API key: pass api_key=... or set CA4_API_KEY")
        # NaN fails both comparisons: it made the thread spin, and one past TIMEOUT_MAX (inf)
        # killed it at its first full wait.
        if not 0 < interval <= threading.TIMEOUT_MAX:
            raise ValueError(f"interval must be a positive number of seconds (got {interval!r})")
        self.url = _base_url(resolved_url)
        self.interval = float(interval)
        self.labels = validate_labels(labels)
        self.runtime = detect_runtime()
        # Stripped as the key and URL are: a value from a file or a secret ends in a line break.
        chosen_session_id = (session_id or os.environ.get("CA4_SESSION_ID") or "").strip()
        self.session_id = chosen_session_id or stable_session_id(self.runtime)
        self._session_id_chosen = bool(chosen_session_id)
        """The caller chose the session id: the reporter never leaves it for another."""
        self._left_sessions: set[str] = set()
        """Session ids this reporter left because the API refused them as another tenant's."""
        self._kept_refused_sessions: set[str] = set()
        """Refused session ids it could not leave (logged once each); their reports are dropped."""
        # fullmatch: the pattern's $ matches before a final line break, the contract's does not.
        if not SESSION_ID_PATTERN.fullmatch(self.session_id):
            raise ValueError(
                f"the session id (session_id= or CA4_SESSION_ID) must match "
                f"{SESSION_ID_PATTERN.pattern} (got {self.session_id!r})"
            )
        self._privacy_salt = (privacy_salt or default_salt()) if privacy else None
        self._collector = collector
        self._transport = Transport(self.url, resolved_key, read_timeout_s=read_timeout_s)
        self._spool_dir_chosen = bool(spool_dir)
        self.spool = _open_spool(
            Path(spool_dir) if spool_dir else None,
            self.session_id,
            max_reports=spool_max_reports,
            max_bytes=spool_max_bytes,
        )
        self.max_batch = max_batch
        self.stats = ReporterStats()
        self.self_check: dict[str, Any] | None = None
        """Which collector is active and what it could not read (set by the first collection)."""
        self._backoff = Backoff(base_s=backoff_base_s, max_s=backoff_max_s)
        self._next_send_at = 0.0
        self._failing = False
        """A delivery failed and the spool has not been emptied since."""
        self._error_is_refusal = False
        """``stats.last_error`` says why the API refused reports (cleared by the next success)."""
        self._delivery_lock = threading.RLock()
        self._collect_lock = threading.Lock()
        self._release_lock = threading.Lock()
        self._control = _RunControl()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        """The process that started this reporter: in any other (a forked child) it is inactive."""
        self._close_requested = False
        self._released = False
        self._init_failure_tracking()
        with _registry.lock:
            _registry.instances.add(self)

    def _init_failure_tracking(self) -> None:
        self._delivered_while_failing = 0
        self._dropped_while_failing = 0
        self._host_lock: Path | None = None
        """The spool directory whose host lock the thread holds: it reports the session."""
        self._standing_by = False
        """Another process of this host reports the session; this one waits to take over."""
        self._collect_error: str | None = None
        """The thread's last collection failure (logged once until the message changes)."""
        self._stuck: tuple[str, int] | None = None
        """A report the last batches failed with, and how many tries in a row (isolation)."""
        self._strikes: dict[str, tuple[int, float]] = {}
        """Reports that failed sent alone while others got through: times, and first when."""

    def __repr__(self) -> str:
        return (
            f"Reporter(url={_without_userinfo(self.url)!r}, session_id={self.session_id!r}, "
            f"running={self.running}, interval={self.interval:g}s, "
            + ("standing_by=True, " if self.standing_by else "")
            + f"delivered={self.stats.delivered}, spooled={len(self.spool)}, "
            + (f"dropped={self.stats.dropped}, " if self.stats.dropped else "")
            + f"last_error={self.stats.last_error!r})"
        )

    # -- lifecycle -------------------------------------------------------------------------

    def _active_here(self) -> bool:
        """False in a process forked from the one that started this reporter."""
        return self._pid is None or self._pid == os.getpid()

    def start(self) -> Reporter:
        """Start the background thread (returns at once); a second call does nothing.

        A reporter of the same session started earlier in this process is stopped first: two
        would double the report rate. One made alike (the cell that makes the reporter, run
        again) is replaced quietly; another (a ``with Reporter(labels=...)`` block in a notebook
        whose first cells started one) is stopped with a warning that says how to start it
        again.
        """
        thread = self._thread
        if (
            self._active_here()
            and thread is not None
            and thread.is_alive()
            and not self._control.stop.is_set()
        ):
            return self
        with _registry.lock:
            earlier = _registry.running.get(self.session_id)
            _registry.running[self.session_id] = self
        if earlier is not None and earlier is not self and earlier.running:
            earlier.stop()
            if earlier._made_alike(self):
                logger.info(
                    "ca4: stopped the reporter started earlier for session %s in this process "
                    "(cell run again)",
                    self.session_id,
                )
            else:
                logger.warning(
                    "ca4: stopped the reporter started earlier for session %s (labels %s): one "
                    "reporter reports a session at a time; start it again (its start()) once "
                    "this one (labels %s) stops",
                    self.session_id,
                    earlier.labels,
                    self.labels,
                )
        self._pid = os.getpid()
        self._close_requested = self._released = self._standing_by = False
        self._control = control = _RunControl()
        self._thread = threading.Thread(
            target=self._run, args=(control,), name="ca4-reporter", daemon=True
        )
        self._thread.start()
        _exit_flush_due(self)
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop collecting, try one last delivery, keep what's left in the spool.

        Returns within about ``timeout`` seconds (default :data:`STOP_TIMEOUT_S`): a drain of
        the spool in progress ends, and the last POST gets what is left of it. If the thread is
        still sending (or collecting: a GPU query that hangs) then, its reports stay spooled
        and the interpreter-exit flush stays due.
        """
        if not self._active_here():
            return  # inherited through fork: the thread is the parent's
        timeout = STOP_TIMEOUT_S if timeout is None else max(0.0, timeout)
        with _registry.lock:
            if _registry.running.get(self.session_id) is self:
                del _registry.running[self.session_id]
        thread, control = self._thread, self._control
        if thread is not None and thread.is_alive():
            # A margin, so the thread is done with its last POST before join gives up.
            control.flush_deadline = time.monotonic() + timeout - min(0.25, timeout / 4)
            control.stop.set()
            thread.join(timeout)
            if thread.is_alive():
                kept = len(self.spool)
                logger.warning(
                    "ca4: reporter still %s after %gs; %s %s spooled in %s",
                    "collecting (a GPU query has not returned)"
                    if control.doing == "collecting"
                    else "sending",
                    timeout,
                    _reports(kept),
                    "stays" if kept == 1 else "stay",
                    self.spool.location,
                )
                return  # the exit-time flush stays registered
            self._say_what_stays_spooled()
        control.stop.set()
        _exit_flush_done(self)

    def _made_alike(self, other: Reporter) -> bool:
        """Whether ``other`` reports as this one does (the same cell, run again: a new edge
        URL or interval is still that cell)."""
        return self.labels == other.labels

    def _say_what_stays_spooled(self, *, at_exit: bool = False) -> None:
        """After the final flush of a stop or of interpreter exit: one line for the reports it
        could not deliver, kept on disk for the next run or, in memory, lost with the process
        (nothing when it stood by: the process reporting the session sends them)."""
        kept = len(self.spool)
        if not kept or self._standing_by:
            return
        if at_exit and not self.spool.on_disk:
            logger.warning(
                "ca4: %s in %s lost: the API did not take %s before this process ended",
                _reports(kept),
                self.spool.location,
                "it" if kept == 1 else "them",
            )
        elif self.spool.on_disk:
            logger.warning(
                "ca4: %s %s spooled in %s; %s sent when a reporter starts again on this machine%s",
                _reports(kept),
                "stays" if kept == 1 else "stay",
                self.spool.location,
                "it is" if kept == 1 else "they are",
                VM_GOES_WITH_THE_RUNTIME if self.runtime in HOSTED_RUNTIMES else "",
            )
        else:
            logger.warning(
                "ca4: %s %s in %s; %s sent if this reporter starts again, and lost when this "
                "process ends",
                _reports(kept),
                "stays" if kept == 1 else "stay",
                self.spool.location,
                "it is" if kept == 1 else "they are",
            )

    def close(self) -> None:
        """Stop and release NVML and pooled connections (once the thread is done with them)."""
        self._close_requested = True
        self.stop()
        if not self._active_here():
            return
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._release()
        # Otherwise the thread, still waiting for the edge, releases them when it ends.

    def _release(self) -> None:
        with self._release_lock:
            if self._released:
                return
            self._released = True
        close = getattr(self._collector, "close", None)
        if close is not None:
            close()
        self._transport.close()

    def _inherited_through_fork(self) -> None:
        """In a forked child (see :func:`_after_fork_in_child`): it holds none of the parent's
        locks, the host lock of its spool directory included."""
        self._host_lock = None
        self._standing_by = False
        self._delivery_lock = threading.RLock()
        self._collect_lock = threading.Lock()
        self._release_lock = threading.Lock()
        self._control = _RunControl()
        self.spool.after_fork_in_child()
        self._transport.after_fork_in_child()

    def __enter__(self) -> Reporter:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """True while the background thread is alive (never in a forked child)."""
        return self._active_here() and self._thread is not None and self._thread.is_alive()

    @property
    def standing_by(self) -> bool:
        """True while another process of this host reports the session and this running
        reporter waits to take over (it collects and sends nothing meanwhile)."""
        return self.running and self._standing_by

    def _hold_host_lock(self) -> bool:
        """Whether the thread may collect and send: it holds the host lock of the session's
        spool, or takes it now (said once, after standing by). A spool in memory is this
        process's own, and where no lock can be used reporting goes on uncoordinated (tried
        again each interval)."""
        if not self.spool.on_disk:
            return True
        lock_file = host_lock_file(self.spool.directory, self.session_id)
        if self._host_lock == lock_file and host_lock_intact(lock_file):
            return True
        if self._host_lock is not None:  # the session moved, or its lock file was deleted
            if self._host_lock == lock_file:
                forget_host_lock(lock_file)
            else:
                release_host_lock(self._host_lock)
            self._host_lock = None
        taken = take_host_lock(lock_file)
        if taken is not False:
            self._host_lock = lock_file if taken else None
            if self._standing_by:
                logger.info(
                    "ca4: reporting session %s from this process (pid %d) now",
                    self.session_id,
                    os.getpid(),
                )
            self._standing_by = False
            return True
        if not self._standing_by:
            holder = host_lock_holder(lock_file)
            logger.info(
                "ca4: another process on this host%s reports session %s; this one (pid %d) "
                "stands by, and takes over if that one ends (tries every %gs)",
                f" (pid {holder})" if holder else "",
                self.session_id,
                os.getpid(),
                self.interval,
            )
        self._standing_by = True
        return False

    def _let_go_of_host_lock(self) -> None:
        if self._host_lock is not None:
            release_host_lock(self._host_lock)
            self._host_lock = None

    # -- collection ------------------------------------------------------------------------

    def collect(self) -> ReportDict:
        """Collect one report now (in the caller's thread); logs the self-check the first time.

        TimeoutError when a collection already running (the reporter thread's) has not
        returned within :data:`COLLECT_WAIT_S`: a GPU query that hangs.
        """
        if not self._collect_lock.acquire(timeout=COLLECT_WAIT_S):
            raise TimeoutError(
                f"ca4: another collection has not returned for {COLLECT_WAIT_S:g}s (a GPU "
                "query that hangs?); no report collected"
            )
        try:
            if self._collector is None:
                self._collector = AutoCollector()
            collection = self._collector.collect()
        finally:
            self._collect_lock.release()
        host = collect_host(
            driver_version=collection.driver_version,
            cuda_version=collection.cuda_version,
            nvml_version=collection.nvml_version,
        )
        report = build_report(
            session_id=self.session_id,
            runtime=self.runtime,
            host=host,
            collection=collection,
            labels=self.labels,
            privacy_salt=self._privacy_salt,
        )
        self.stats.collected += 1
        if self.self_check is None:
            self.self_check = dict(report["payload"]["collector"], gpus=len(collection.gpus))
            self._log_self_check(self.self_check)
        return report

    def _log_self_check(self, check: dict[str, Any]) -> None:
        level = logging.WARNING if check["errors"] or check["collector"] == "none" else logging.INFO
        logger.log(
            level,
            "ca4 self-check: session %s, collector %s, %d GPU sample(s), unavailable fields %s, "
            "errors %s",
            self.session_id,
            check["collector"],
            check["gpus"],
            ", ".join(check["unavailable_fields"]) or "none",
            "; ".join(check["errors"]) or "none",
        )

    # -- delivery --------------------------------------------------------------------------

    def report_once(self) -> DeliveryResult:
        """Collect and send one report now (blocks the caller); spools it if the API is down.

        The report is spooled before it is sent, as the background thread's are: an interrupt
        (Ctrl-C) while the edge is slow to answer leaves it spooled, for the next delivery.
        TimeoutError as :meth:`collect` when a collection running already hangs.
        """
        report = self.collect()
        event_id = str(report["event_id"])
        with self._delivery_lock:
            spooled = self._spool_put([report])
            outcome = self._transport.send([report])
            self._account(outcome)
            if outcome.session_forbidden and self._session_refused(outcome.session_forbidden):
                # Under the session switched to (once at most: a second refusal drops it),
                # and so are the reports spooled for the one left (this one among them).
                self._spool_under_current_session()
                outcome = self._transport.send([dict(report, session_id=self.session_id)])
                self._account(outcome)
                self._session_refused(outcome.session_forbidden)
            if outcome.retry:
                if not spooled:
                    self._spool_put(outcome.retry)
                self._schedule_retry(outcome)
            else:  # delivered, or refused for good
                if spooled:
                    self.spool.discard({event_id})
                if self._failing and len(self.spool) == 0:
                    self._recovered()
        error = outcome.error or (outcome.rejected[0][1] if outcome.rejected else None)
        if outcome.session_forbidden:
            error = self.stats.last_error
        return DeliveryResult(event_id=event_id, delivered=bool(outcome.accepted), error=error)

    def _spool_put(self, reports: list[ReportDict]) -> bool:
        """Spool ``reports``; False, with a warning, when the spool cannot take them (a full or
        vanished disk): the send goes on without that safety net."""
        try:
            self._count_dropped(self.spool.put(reports))
        except OSError as error:
            logger.warning("ca4: could not spool %s: %s", _reports(len(reports)), error)
            return False
        return True

    def _count_dropped(self, dropped: int) -> None:
        """Reports the full spool dropped for room (its warning is logged once per outage)."""
        self.stats.dropped += dropped
        if self._failing:
            self._dropped_while_failing += dropped

    def flush(self) -> bool:
        """Send everything spooled now; True when the spool is empty afterwards.

        Does nothing (False) in a process forked from the one that started this reporter, nor
        while another process of this host reports the session (and sends its spool).
        """
        if not self._active_here():
            return False
        return self._flush(None)

    def _flush(self, deadline: float | None) -> bool:
        with self._delivery_lock:
            lock_file = (
                host_lock_file(self.spool.directory, self.session_id)
                if self.spool.on_disk
                else None
            )
            taken = take_host_lock(lock_file) if lock_file is not None else None
            if taken is False:
                return False  # another process of this host sends this spool
            try:
                self._next_send_at = 0.0
                return self._deliver([], deadline)
            finally:
                if lock_file is not None and taken:
                    release_host_lock(lock_file)

    def _deliver(
        self,
        fresh: list[ReportDict],
        deadline: float | None = None,
        stop: threading.Event | None = None,
    ) -> bool:
        """Spool ``fresh`` reports, then send the spool oldest first until it is empty, or
        ``stop`` is set (the thread's final flush then goes on, by its deadline).

        Every report is on disk before it is sent, so one whose POST is still waiting for the
        edge when the reporter is stopped is kept. Returns True when everything was delivered
        or refused for good.
        """
        with self._delivery_lock:
            self._count_dropped(self.spool.put(fresh))
            if time.monotonic() < self._next_send_at:
                return False
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                if stop is not None and stop.is_set():
                    return False
                spooled = self.spool.peek(self.max_batch)
                if not spooled:
                    self._backoff.reset()
                    if self._failing:
                        self._recovered()
                    return True
                reports = [item.report for item in spooled]
                if self._isolating(reports):
                    outcome = self._transport.send_isolating(reports, deadline=deadline)
                else:
                    outcome = self._transport.send(reports, deadline=deadline)
                self._account(outcome)
                retry_ids = {str(report["event_id"]) for report in outcome.retry}
                retry_ids -= self._note_failing(spooled, outcome, retry_ids)
                # Refused as another tenant's: kept to be sent again under a fresh session, or
                # dropped (see _session_refused).
                again = self._session_refused(outcome.session_forbidden)
                kept = retry_ids | again
                self.spool.remove([i for i in spooled if str(i.report["event_id"]) not in kept])
                if again:
                    self._spool_under_current_session()  # sent on the next turn of this loop
                if retry_ids:
                    self._schedule_retry(outcome)
                    return False

    def _isolating(self, reports: list[ReportDict]) -> bool:
        """Whether to send ``reports`` in halves: they hold a report their batches failed
        with :data:`ISOLATE_AFTER` times in a row."""
        return (
            len(reports) > 1
            and self._stuck is not None
            and self._stuck[1] >= ISOLATE_AFTER
            and any(str(report["event_id"]) == self._stuck[0] for report in reports)
        )

    def _note_failing(
        self, spooled: list[SpooledReport], outcome: SendOutcome, retry_ids: set[str]
    ) -> set[str]:
        """Count the tries a report's batches failed on the server's side (to isolate it),
        and those it failed alone while others got through; move one that failed alone
        :data:`DEAD_AFTER_TRIES` times over :data:`DEAD_AFTER_S` out of the queue. Returns
        the event ids moved out."""
        oldest = str(spooled[0].report["event_id"])
        if outcome.isolated:
            tries = self._stuck[1] if self._stuck is not None else 0
            self._stuck = (outcome.isolated[0], max(tries + 1, ISOLATE_AFTER))
        elif self._stuck is not None and self._stuck[0] in retry_ids and outcome.server_failed:
            self._stuck = (self._stuck[0], self._stuck[1] + 1)
        elif oldest in retry_ids and outcome.server_failed:
            self._stuck = (oldest, 1)
        else:
            self._stuck = None
        now = time.monotonic()
        self._strikes = {key: value for key, value in self._strikes.items() if key in retry_ids}
        for event_id in outcome.isolated:
            times, since = self._strikes.get(event_id, (0, now))
            self._strikes[event_id] = (times + 1, since)
        dead: set[str] = set()
        for item in spooled:
            event_id = str(item.report["event_id"])
            times, since = self._strikes.get(event_id, (0, now))
            if (
                times >= DEAD_AFTER_TRIES
                and now - since >= DEAD_AFTER_S
                and self._dead_letter(item, times, now - since, outcome.error)
            ):
                dead.add(event_id)
        return dead

    def _dead_letter(
        self, item: SpooledReport, times: int, for_s: float, error: str | None
    ) -> bool:
        """Move a report out of the queue for good (counted as refused), with a warning; False
        when it could not be moved (it stays queued, and is tried again)."""
        event_id = str(item.report["event_id"])
        self._strikes.pop(event_id, None)
        if self._stuck is not None and self._stuck[0] == event_id:
            self._stuck = None
        try:
            where = self.spool.dead_letter(item)
        except OSError as error_moving:
            logger.warning(
                "ca4: could not move report %s out of the spool (%s): it stays queued",
                event_id,
                error_moving,
            )
            return False
        self.stats.rejected += 1
        self.stats.last_error = (
            f"report {event_id} failed alone {times} times over {for_s / 60:.0f} min while "
            f"others got through (last: {error}); moved out of the queue"
        )
        self._error_is_refusal = True
        logger.warning(
            "ca4: report %s failed alone %d times over %.0f min while others got through "
            "(last: %s); not sent again: %s",
            event_id,
            times,
            for_s / 60,
            error,
            f"moved to {where}" if where is not None else "dropped (spool in memory)",
        )
        return True

    def _account(self, outcome: SendOutcome) -> None:
        if outcome.accepted and not self.stats.delivered:
            # Without it show_logs() said nothing on a healthy run: no sign reports arrive.
            logger.info(
                "ca4: first report delivered to %s (session %s); print(reporter) shows the counts",
                _without_userinfo(self.url),
                self.session_id,
            )
        self.stats.delivered += len(outcome.accepted)
        self.stats.rejected += len(outcome.rejected)
        if outcome.accepted:
            self.stats.last_success_at = datetime.now(timezone.utc)
            if self._failing:
                self._delivered_while_failing += len(outcome.accepted)
        for event_id, reason in outcome.rejected:
            logger.warning("ca4 report %s refused by the API, not retried: %s", event_id, reason)
        if outcome.rejected:
            # Shown by print(reporter) too: every report dropped must not read as no error.
            self.stats.last_error = (
                f"{_reports(len(outcome.rejected))} refused by the API, not retried: "
                f"{outcome.rejected[-1][1]}"
            )
            self._error_is_refusal = True
        elif outcome.accepted and not outcome.retry and self._error_is_refusal:
            self.stats.last_error = None  # reports get through again
            self._error_is_refusal = False
        if outcome.retry:
            self.stats.send_failures += 1
            self.stats.last_error = outcome.error
            self._error_is_refusal = False

    def _session_refused(self, refused: list[ReportDict]) -> set[str]:
        """Reports the API refused because their session is another tenant's: the event ids to
        send again under :attr:`session_id`, which is first switched to a fresh id when it is
        the refused one and may be left (once per reporter, and never a caller's choice). The
        other reports are dropped (``rejected``), with an error logged once per session.

        Each report is sent again at most once: only reports of a session left here are, and
        they then carry the current id, which is never left twice.
        """
        if not refused:
            return set()
        current = self.session_id
        if (
            any(report["session_id"] == current for report in refused)
            and not self._session_id_chosen
            and not self._left_sessions
        ):
            self._switch_session()
        again = {
            str(report["event_id"])
            for report in refused
            if report["session_id"] in self._left_sessions
            and self.session_id not in self._kept_refused_sessions
        }
        dropped = [report for report in refused if str(report["event_id"]) not in again]
        if dropped:
            self._drop_refused(dropped)
        return again

    def _switch_session(self) -> None:
        """Leave the refused session for a fresh id (the runtime's from now on)."""
        old = self.session_id
        self.session_id = replace_session_id(self.runtime, old)
        self._left_sessions.add(old)
        with _registry.lock:
            if _registry.running.get(old) is self:
                del _registry.running[old]
                _registry.running.setdefault(self.session_id, self)
        logger.warning(
            "ca4: the API refused session %s as another tenant's (a session reported before "
            "the API's tenancy upgrade belongs to no key, this API key now belongs to another "
            "tenant, or another tenant's key reported from this runtime); reporting under the "
            "fresh session %s from now on, and sending the refused and spooled reports again "
            "under it with their event ids (refused reports were never stored). Read this "
            "runtime's new data under session %s.",
            old,
            self.session_id,
            self.session_id,
        )

    def _spool_under_current_session(self) -> None:
        """Spooled reports of the sessions left go under the current one, oldest first, into
        its own default spool directory (a ``spool_dir`` the caller chose is kept)."""
        target = self.spool
        if not self._spool_dir_chosen and self.spool.on_disk:
            try:
                directory = default_spool_dir(self.session_id)
                if target.directory != directory:
                    prepare_default_spool_dir(directory)
                    target = Spool(
                        directory,
                        max_reports=self.spool.max_reports,
                        max_bytes=self.spool.max_bytes,
                    )
                    target.dropped = self.spool.dropped
            except OSError as error:
                # Kept where they are, under the fresh session: sent all the same.
                logger.warning("ca4: spooled reports stay in %s: %s", self.spool.location, error)
                target = self.spool
        self.spool.move_sessions(self._left_sessions, self.session_id, target)
        self.spool = target

    def _drop_refused(self, dropped: list[ReportDict]) -> None:
        """Reports refused as another tenant's that will not be sent again."""
        self.stats.rejected += len(dropped)
        for session_id in sorted({str(report["session_id"]) for report in dropped}):
            count = sum(report["session_id"] == session_id for report in dropped)
            if session_id == self.session_id and self._session_id_chosen:
                why = (
                    "it was set with session_id= or CA4_SESSION_ID, so the reporter keeps it; "
                    "choose a session id of your own, or leave it out for a fresh one"
                )
            elif session_id == self.session_id:
                left = ", ".join(sorted(self._left_sessions))
                why = (
                    f"the reporter had already left session {left} for it for the same reason, "
                    "and never switches twice: is the API key's tenant changing (keys file)? "
                    "Set session_id= or CA4_SESSION_ID to go on"
                )
            elif session_id in self._left_sessions:
                why = (
                    f"the reporter left it, and its session now, {self.session_id}, is refused too"
                )
            else:
                why = "a session this reporter does not report under"
            message = (
                f"the API refused session {session_id} as another tenant's; {_reports(count)} "
                f"of it dropped, not retried: {why}"
            )
            self.stats.last_error = message
            if session_id not in self._kept_refused_sessions:
                self._kept_refused_sessions.add(session_id)
                logger.error("ca4: %s", message)

    def _recovered(self) -> None:
        """The spool is empty again after failures: say so once (a warning when the full spool
        dropped reports meanwhile), and forget the error."""
        count, dropped = self._delivered_while_failing, self._dropped_while_failing
        logger.log(
            logging.WARNING if dropped else logging.INFO,
            "ca4 API reachable again: delivered %d spooled %s%s",
            count,
            "report" if count == 1 else "reports",
            f"; {dropped} dropped while the spool was full" if dropped else "",
        )
        self._failing = False
        self._delivered_while_failing = 0
        self._dropped_while_failing = 0
        self.stats.last_error = None
        self._error_is_refusal = False

    def _schedule_retry(self, outcome: SendOutcome) -> None:
        delay = self._backoff.next_delay(outcome.retry_after_s)
        if outcome.auth_failed:
            delay = max(delay, AUTH_RETRY_S)
        self._failing = True
        if outcome.auth_failed:
            logger.warning(
                "ca4 API refused the key (%s): check api_key / CA4_API_KEY; %s kept in %s, "
                "next try in %.0fs",
                outcome.error,
                _reports(len(self.spool)),
                self.spool.location,
                delay,
            )
        elif self._backoff.attempt == 1:
            error = outcome.error
            if outcome.status == 404:
                error = f"{error}, from POST {self._transport.url}"
            logger.warning(
                "ca4 API %s (%s); %s kept in %s, next try in %.1fs",
                "not reached"
                if outcome.status is not None and 300 <= outcome.status < 400
                else "unreachable",
                error,
                _reports(len(self.spool)),
                self.spool.location,
                delay,
            )
        self._next_send_at = time.monotonic() + delay

    # -- background thread -----------------------------------------------------------------

    def _run(self, control: _RunControl) -> None:
        try:
            self._run_until_stopped(control)
        finally:
            self._let_go_of_host_lock()
        if self._close_requested and self._thread is threading.current_thread():
            self._release()  # close() left them to this thread, which was still using them

    def _run_until_stopped(self, control: _RunControl) -> None:
        next_collect = time.monotonic()
        drained = False  # unknown at start: a spool left by an earlier run is sent first
        while not control.stop.is_set():
            if not self._hold_host_lock():
                control.stop.wait(self.interval)  # standing by: another process reports
                continue
            fresh: list[ReportDict] = []
            if time.monotonic() >= next_collect:
                next_collect = time.monotonic() + self.interval
                control.doing = "collecting"
                try:
                    fresh.append(self.collect())
                except Exception as error:
                    # A failing collection must never kill the reporter thread.
                    self._collection_failed(error)
                else:
                    if self._collect_error is not None:
                        logger.info("ca4 collection works again")
                        self._collect_error = None
                control.doing = "sending"
            if fresh or (not drained and time.monotonic() >= self._next_send_at):
                try:
                    drained = self._deliver(fresh, stop=control.stop)
                except Exception as error:
                    logger.exception("ca4 delivery failed")
                    drained = False
                    # Backed off like any failed send: a fault that repeats (an answer this SDK
                    # cannot read, a broken spool) tried again at once, a hundred POSTs a second.
                    self._schedule_retry(SendOutcome(error=f"{type(error).__name__}: {error}"))
            wake_at = next_collect if drained else min(next_collect, self._next_send_at)
            control.stop.wait(max(0.0, wake_at - time.monotonic()))
        deadline = control.flush_deadline
        if not self._standing_by and (deadline is None or time.monotonic() < deadline):
            try:
                self._flush(deadline)
            except Exception:
                logger.exception("ca4 final flush failed")

    def _collection_failed(self, error: Exception) -> None:
        """Log a failing collection once (with its traceback) until its message changes: a
        GPU gone for good fails each interval alike."""
        message = f"{type(error).__name__}: {error}"
        if message == self._collect_error:
            return
        self._collect_error = message
        logger.error(
            "ca4 collection failed (said again only when the error changes): %s",
            message,
            exc_info=error,
        )

    def _flush_at_exit(self) -> None:
        """Interpreter exit for this reporter alone: stop the thread and give the spool one
        last chance (never in a forked child, whose reporter is the parent's). With several
        reporters, :func:`_flush_all_at_exit` stops them all first."""
        if not self._active_here():
            return
        deadline = time.monotonic() + AT_EXIT_TIMEOUT_S
        self._signal_stop(deadline - 0.25)
        self._finish_at_exit(deadline)

    def _signal_stop(self, flush_deadline: float) -> None:
        """Tell a running thread to stop, its last flush due by ``flush_deadline``."""
        thread, control = self._thread, self._control
        if thread is not None and thread.is_alive():
            control.flush_deadline = flush_deadline
            control.stop.set()

    def _finish_at_exit(self, deadline: float) -> None:
        """Wait for the thread (told to stop) until ``deadline``, whose last flush is the exit
        flush, or flush here when it is gone; then say what stays spooled."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(max(0.0, deadline - time.monotonic()))
        else:  # stopped earlier while waiting for the edge, and done since
            self._flush(deadline)
        self._say_what_stays_spooled(at_exit=True)
