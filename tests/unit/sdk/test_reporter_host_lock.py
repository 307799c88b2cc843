"""One process per host reports a session: torchrun or DDP ranks, spawned workers, each
starting a reporter with the session id they share, sent every GPU once per rank and drained
the one spool from several processes at once (reports sent twice)."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ca4_sdk.spool import host_lock_file, host_lock_intact

from tests.unit.sdk.reporter_support import FakeAtexit, make_reporter, wait_for
from tests.unit.sdk.stub_api import stub_api

HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
sys.stdin.read()
"""
"""Another process of the host reporting the session: holds the lock until its stdin closes."""

TRY_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("busy")
else:
    print("locked")
"""
"""Another process of the host starting: whether it could take the session's lock."""


@contextlib.contextmanager
def another_process_holding(lock_file: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process of the host reporting a session: it holds ``lock_file``'s lock until
    its stdin closes, or it is killed on the way out."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock_file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as other:
        try:
            assert other.stdout is not None
            assert other.stdout.readline() == "locked\n"
            yield other
        finally:
            other.kill()


def test_a_reporter_stands_by_while_another_process_reports_and_then_takes_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fake_atexit: FakeAtexit
) -> None:
    caplog.set_level(logging.INFO, logger="ca4_sdk")
    spool = tmp_path / "spool"
    spool.mkdir()
    with (
        another_process_holding(host_lock_file(spool, "unit-session")) as other,
        stub_api() as (url, state),
    ):
        reporter = make_reporter(url, tmp_path, interval=0.05).start()
        try:
            wait_for(lambda: reporter.standing_by)
            assert "standing_by=True" in repr(reporter)
            reporter.spool.put([reporter.collect()])  # the other process's to send
            assert not reporter.flush()
            time.sleep(0.3)  # six intervals
            assert state.requests == []
            assert reporter.stats.collected == 1  # the collect() above only
            said = [r.getMessage() for r in caplog.records if "stands by" in r.getMessage()]
            assert said == [
                f"ca4: another process on this host (pid {other.pid}) reports session "
                f"unit-session; this one (pid {os.getpid()}) stands by, and takes over if that "
                "one ends (tries every 0.05s)"
            ]
            assert other.stdin is not None
            other.stdin.close()  # that process ends
            other.wait(10)
            wait_for(lambda: len(state.accepted_ids()) >= 2)
            assert not reporter.standing_by
        finally:
            reporter.stop()
    assert f"ca4: reporting session unit-session from this process (pid {os.getpid()}) now" in [
        r.getMessage() for r in caplog.records
    ]
    assert len(reporter.spool) == 0


def test_reporters_of_one_process_share_the_lock(tmp_path: Path, fake_atexit: FakeAtexit) -> None:
    """Two sessions spooled in one directory, in one process: both report."""
    with stub_api() as (url, state):
        first = make_reporter(url, tmp_path, session_id="session-a", interval=60).start()
        second = make_reporter(url, tmp_path, session_id="session-b", interval=60).start()
        try:
            wait_for(lambda: len(state.accepted_ids()) >= 2)
            assert not first.standing_by
            assert not second.standing_by
        finally:
            first.stop()
            second.stop()


def test_another_session_spooled_in_the_same_directory_is_not_held_back(
    tmp_path: Path, fake_atexit: FakeAtexit
) -> None:
    """The README tells processes apart with ``session_id=``, and a ``spool_dir=`` (a mounted
    Drive) may hold every session's spool: a lock per directory kept the second process from
    ever reporting its own session."""
    spool = tmp_path / "spool"
    spool.mkdir()
    with (
        another_process_holding(host_lock_file(spool, "run-a")),
        stub_api() as (url, state),
    ):
        reporter = make_reporter(url, tmp_path, session_id="run-b", interval=0.05).start()
        try:
            wait_for(lambda: len(state.accepted_ids()) >= 1)
            assert not reporter.standing_by
        finally:
            reporter.stop()


def test_a_lock_file_deleted_under_the_holder_is_taken_again(
    tmp_path: Path, fake_atexit: FakeAtexit
) -> None:
    """A temp cleaner deleting the lock file let a second process lock a new file of the same
    name while the first still held the old one: both reported. The holder now finds its file
    replaced and locks the one there, so the second stands by (or the first does)."""
    spool = tmp_path / "spool"
    spool.mkdir()
    with stub_api() as (url, _):
        reporter = make_reporter(url, tmp_path, interval=0.05).start()
        try:
            wait_for(lambda: reporter._host_lock is not None)
            lock_file = host_lock_file(spool, "unit-session")
            lock_file.unlink()  # a temp cleaner
            # The holder locked a new one: wait for the lock itself, which the thread takes
            # after it creates the file (until then another process could take it).
            wait_for(lambda: host_lock_intact(lock_file))
            tried = subprocess.run(
                [sys.executable, "-c", TRY_LOCK, str(lock_file)],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            assert tried.stdout == "busy\n"
        finally:
            reporter.stop()
