"""The worker bench's CPU accounting reads what the kernel counts for the machine and a process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.worker import _cpu_seconds, _cpu_us_per_event, _steady_window


def test_cpu_per_event_counts_the_process_and_the_whole_machine() -> None:
    before = _cpu_seconds(os.getpid())
    spent_from = time.process_time()
    while time.process_time() - spent_from < 0.3:  # 0.3 CPU seconds in this process
        pass
    after = _cpu_seconds(os.getpid())

    spent = _cpu_us_per_event(before, after, 1000)

    assert spent is not None
    assert 250 <= spent.process <= 450  # 300 us per event, give or take the kernel's ticks
    assert spent.machine >= spent.process - 20  # the machine's count includes this process


def test_the_database_count_is_the_database_processes() -> None:
    """A process named ``postgres`` (FerretDB's backend) that spends 0.3 CPU seconds counts."""
    burn = (
        "import time\n"
        "open('/proc/self/comm', 'w').write('postgres')\n"
        "print(flush=True); input()\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass\n"
        "print(flush=True); input()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        child.stdout.readline()  # named
        before = _cpu_seconds(os.getpid())
        child.stdin.write("\n")
        child.stdin.flush()
        spent_from = time.process_time()
        while time.process_time() - spent_from < 0.3:
            pass
        child.stdout.readline()  # spent
        after = _cpu_seconds(os.getpid())
    finally:
        child.communicate("\n", timeout=30)

    spent = _cpu_us_per_event(before, after, 1000)

    assert spent is not None
    # The child's 300 us per event and whatever a running dev stack's database spent meanwhile.
    assert spent.database >= 250
    assert 250 <= spent.process <= 450


def test_cpu_per_event_is_unknown_without_a_reading() -> None:
    assert _cpu_us_per_event(None, _cpu_seconds(), 10) is None
    assert _cpu_seconds(pid=2**22 + 1) is None  # no such process


def test_the_steady_window_uses_the_samples_past_10_and_90_percent() -> None:
    samples = [(0.0, 0.0), (1.0, 5.0), (2.0, 20.0), (3.0, 60.0), (4.0, 95.0), (5.0, 100.0)]

    assert _steady_window(samples, 100) == (2, 4)
