"""The notebook-facing reporter: collect every ``interval`` seconds and deliver in the background.

Everything slow (NVML or nvidia-smi, HTTP, disk) happens on one daemon thread; the caller's
thread only flips an event. No asyncio anywhere, so Jupyter's own event loop is never touched.
Reports that can't be delivered go to the bounded on-disk spool and are sent, oldest first and
with unchanged ``event_id``, as soon as the API answers again, and once more at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ca4_sdk.collectors import AutoCollector, GpuCollector
from ca4_sdk.host import collect_host
from ca4_sdk.privacy import default_salt
from ca4_sdk.report import ReportDict, build_report, validate_labels
from ca4_sdk.runtime import SESSION_ID_PATTERN, detect_runtime, stable_session_id
from ca4_sdk.spool import DEFAULT_MAX_BYTES, DEFAULT_MAX_REPORTS, Spool, default_spool_dir
from ca4_sdk.transport import Backoff, SendOutcome, Transport

logger = logging.getLogger("ca4_sdk")

DEFAULT_MAX_BATCH = 100
AUTH_RETRY_S = 300.0
"""A refused API key won't fix itself soon; try again rarely instead of hammering the API."""


@dataclass
class ReporterStats:
    """Counters for the notebook user (``reporter.stats``)."""

    collected: int = 0
    delivered: int = 0
    rejected: int = 0
    send_failures: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class DeliveryResult:
    """What :meth:`Reporter.report_once` did with its report."""

    event_id: str
    delivered: bool
    error: str | None = None


class Reporter:
    """Report GPU metadata to a CA4 edge API without ever blocking the notebook.

    ``url`` and ``api_key`` default to ``CA4_EDGE_API_URL`` and ``CA4_API_KEY``. ``privacy``
    hashes the hostname (salted) and drops process names. Use :meth:`start` / :meth:`stop` or
    ``with Reporter(...):``; :meth:`report_once` collects and sends one report synchronously.
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
        if not resolved_url:
            raise ValueError("no API URL: pass url=... or set CA4_EDGE_API_URL")
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.url = resolved_url
        self.interval = float(interval)
        self.labels = validate_labels(labels)
        self.runtime = detect_runtime()
        self.session_id = (
            session_id or os.environ.get("CA4_SESSION_ID") or stable_session_id(self.runtime)
        )
        if not SESSION_ID_PATTERN.match(self.session_id):
            raise ValueError(f"session_id must match {SESSION_ID_PATTERN.pattern}")
        self._privacy_salt = (privacy_salt or default_salt()) if privacy else None
        self._collector = collector
        self._transport = Transport(
            resolved_url, api_key or os.environ.get("CA4_API_KEY"), read_timeout_s=read_timeout_s
        )
        self.spool = Spool(
            Path(spool_dir) if spool_dir else default_spool_dir(self.session_id),
            max_reports=spool_max_reports,
            max_bytes=spool_max_bytes,
        )
        self.max_batch = max_batch
        self.stats = ReporterStats()
        self.self_check: dict[str, Any] | None = None
        """Which collector is active and what it could not read (set by the first collection)."""
        self._backoff = Backoff(base_s=backoff_base_s, max_s=backoff_max_s)
        self._next_send_at = 0.0
        self._delivery_lock = threading.RLock()
        self._collect_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Reporter:
        """Start the background thread (returns at once); a second call does nothing."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ca4-reporter", daemon=True)
        self._thread.start()
        atexit.register(self._flush_at_exit)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop collecting, try one last delivery, keep what's left in the spool."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        atexit.unregister(self._flush_at_exit)

    def close(self) -> None:
        """Stop and release NVML and pooled connections."""
        self.stop()
        close = getattr(self._collector, "close", None)
        if close is not None:
            close()
        self._transport.close()

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
        """True while the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    # -- collection ------------------------------------------------------------------------

    def collect(self) -> ReportDict:
        """Collect one report now (in the caller's thread); logs the self-check the first time."""
        with self._collect_lock:
            if self._collector is None:
                self._collector = AutoCollector()
            collection = self._collector.collect()
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
        """Collect and send one report now (blocks the caller); spools it if the API is down."""
        report = self.collect()
        with self._delivery_lock:
            outcome = self._transport.send([report])
            self._account(outcome)
            if outcome.retry:
                self.spool.put(outcome.retry)
                self._schedule_retry(outcome)
        return DeliveryResult(
            event_id=str(report["event_id"]),
            delivered=bool(outcome.accepted),
            error=outcome.error or (outcome.rejected[0][1] if outcome.rejected else None),
        )

    def flush(self) -> bool:
        """Send everything spooled now; True when the spool is empty afterwards."""
        with self._delivery_lock:
            self._next_send_at = 0.0
            return self._deliver([])

    def _deliver(self, fresh: list[ReportDict]) -> bool:
        """Send spooled reports (oldest first), then ``fresh`` ones; spool what fails.

        Returns True when everything was delivered or refused for good.
        """
        with self._delivery_lock:
            if time.monotonic() < self._next_send_at:
                self.spool.put(fresh)
                return False
            while True:
                spooled = self.spool.peek(self.max_batch)
                if spooled:
                    outcome = self._transport.send([item.report for item in spooled])
                    self._account(outcome)
                    retry_ids = {str(report["event_id"]) for report in outcome.retry}
                    self.spool.remove(
                        [i for i in spooled if str(i.report["event_id"]) not in retry_ids]
                    )
                elif fresh:
                    batch, fresh = fresh[: self.max_batch], fresh[self.max_batch :]
                    outcome = self._transport.send(batch)
                    self._account(outcome)
                    self.spool.put(outcome.retry)
                else:
                    self._backoff.reset()
                    return True
                if outcome.retry:
                    self.spool.put(fresh)
                    self._schedule_retry(outcome)
                    return False

    def _account(self, outcome: SendOutcome) -> None:
        self.stats.delivered += len(outcome.accepted)
        self.stats.rejected += len(outcome.rejected)
        for event_id, reason in outcome.rejected:
            logger.warning("ca4 report %s refused by the API, not retried: %s", event_id, reason)
        if outcome.retry:
            self.stats.send_failures += 1
            self.stats.last_error = outcome.error

    def _schedule_retry(self, outcome: SendOutcome) -> None:
        delay = self._backoff.next_delay(outcome.retry_after_s)
        if outcome.auth_failed:
            delay = max(delay, AUTH_RETRY_S)
        if self._backoff.attempt == 1 or outcome.auth_failed:
            logger.warning(
                "ca4 API unreachable (%s); spooling reports to %s, next try in %.1fs",
                outcome.error,
                self.spool.directory,
                delay,
            )
        self._next_send_at = time.monotonic() + delay

    # -- background thread -----------------------------------------------------------------

    def _run(self) -> None:
        next_collect = time.monotonic()
        drained = False  # unknown at start: a spool left by an earlier run is sent first
        while not self._stop.is_set():
            fresh: list[ReportDict] = []
            if time.monotonic() >= next_collect:
                next_collect = time.monotonic() + self.interval
                try:
                    fresh.append(self.collect())
                except Exception:
                    # A failing collection must never kill the reporter thread.
                    logger.exception("ca4 collection failed")
            if fresh or (not drained and time.monotonic() >= self._next_send_at):
                try:
                    drained = self._deliver(fresh)
                except Exception:
                    logger.exception("ca4 delivery failed")
                    drained = False
            wake_at = next_collect if drained else min(next_collect, self._next_send_at)
            self._stop.wait(max(0.0, wake_at - time.monotonic()))
        try:
            self.flush()
        except Exception:
            logger.exception("ca4 final flush failed")

    def _flush_at_exit(self) -> None:
        """Interpreter exit: stop the thread and give the spool one last chance."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if not self.running:
            self.flush()
