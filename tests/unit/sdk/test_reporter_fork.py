"""A child made with ``os.fork()`` while a reporter runs: the reporter it inherits is inactive
there, so the child neither hangs at exit on a lock held by a thread it does not have, nor sends
the parent's spool again."""

from __future__ import annotations

import fcntl
import os
import signal
import time
from pathlib import Path

import pytest
from ca4_sdk.spool import host_lock_file

from tests.unit.sdk.reporter_support import FakeAtexit, make_reporter, wait_for
from tests.unit.sdk.stub_api import stub_api

CHILD_TIMEOUT_S = 10.0


def _wait_child(pid: int, timeout: float) -> int | None:
    """The child's exit code, or None (after killing it) when it did not exit in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_neither_hangs_at_exit_nor_resends_the_spool(
    tmp_path: Path, fake_atexit: FakeAtexit
) -> None:
    with stub_api() as (url, state):
        state.delay_s = 1.0  # the reporter thread holds the delivery lock for a second
        reporter = make_reporter(url, tmp_path, interval=60).start()
        try:
            wait_for(lambda: len(state.requests) == 1)  # fork mid-POST, lock held
            assert fake_atexit.due() == [reporter]
            pid = os.fork()
            if pid == 0:  # the child: what its interpreter does at exit, then leave at once
                code = 1
                try:
                    reporter._flush_at_exit()  # what atexit runs in the child
                    flushed = reporter.flush()
                    reporter.stop(timeout=5)
                    code = 0 if (not flushed and not reporter.running) else 2
                finally:
                    os._exit(code)
            exit_code = _wait_child(pid, CHILD_TIMEOUT_S)
            assert exit_code is not None, "the child hung at exit"
            assert exit_code == 0
            wait_for(lambda: len(state.accepted_ids()) == 1)
            time.sleep(0.2)
            assert len(state.requests) == 1  # the child sent nothing
            assert reporter.running  # the parent's reporter is untouched
        finally:
            state.delay_s = 0.0
            reporter.stop()
    assert len(reporter.spool) == 0


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_can_still_collect_with_fresh_locks(
    tmp_path: Path, fake_atexit: FakeAtexit
) -> None:
    """The locks the child inherits may be held by the parent's thread: they are replaced."""
    with stub_api() as (url, state):
        reporter = make_reporter(url, tmp_path, interval=60).start()
        try:
            wait_for(lambda: len(state.accepted_ids()) == 1)
            with reporter._collect_lock, reporter.spool._lock:  # held by "another thread"
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        reporter.collect()
                        reporter.spool.put([])
                        code = 0
                    finally:
                        os._exit(code)
            assert _wait_child(pid, CHILD_TIMEOUT_S) == 0
        finally:
            reporter.stop()


def _locked_by_another(directory: Path, session_id: str = "unit-session") -> bool:
    """Whether a process holds the host lock of the session's spool: a lock of another open
    file conflicts with it, in this process too."""
    fd = os.open(host_lock_file(directory, session_id), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases it, if taken
    return False


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_does_not_hold_the_parents_host_lock(
    tmp_path: Path, fake_atexit: FakeAtexit
) -> None:
    """The child inherits the lock's file: it must neither report as the holder (a reporter of
    the session it starts stands by) nor release the parent's lock when it exits."""
    with stub_api() as (url, state):
        reporter = make_reporter(url, tmp_path, interval=60).start()
        try:
            wait_for(lambda: len(state.accepted_ids()) == 1)
            directory = reporter.spool.directory
            assert _locked_by_another(directory)
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    inherited_free = reporter._host_lock is None
                    other = make_reporter(url, tmp_path, interval=60)
                    stands_by = not other._hold_host_lock() and not other.flush()
                    code = 0 if (inherited_free and stands_by) else 2
                finally:
                    os._exit(code)
            assert _wait_child(pid, CHILD_TIMEOUT_S) == 0
            assert _locked_by_another(directory)  # still the parent's
            assert reporter._hold_host_lock()
        finally:
            reporter.stop()
    assert not _locked_by_another(directory)  # let go of once stopped
