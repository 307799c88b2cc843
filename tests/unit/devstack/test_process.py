"""PID-file supervision: detached start, ownership check, stop by process group."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ca4_provision.devstack.process import LaunchSpec, ServiceProcess, alive


def _sleeper(marker: str) -> LaunchSpec:
    return LaunchSpec(
        argv=[sys.executable, "-c", "import time; time.sleep(120)", marker],
        markers=[marker],
    )


async def test_spawn_records_pid_and_stop_terminates(tmp_path: Path) -> None:
    service = ServiceProcess("sleeper", tmp_path / "run", tmp_path / "logs" / "sleeper.log")
    spec = _sleeper(f"marker-{tmp_path.name}")

    proc = service.spawn(spec)
    try:
        assert service.recorded_pid() == proc.pid
        assert service.owned_pid(spec.markers) == proc.pid
        assert os.getpgid(proc.pid) == proc.pid  # its own session and process group

        assert await service.stop(spec.markers, timeout_s=10)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not alive(proc.pid)
    assert not service.pid_file.exists()


async def test_a_pid_that_is_not_ours_is_never_signalled(tmp_path: Path) -> None:
    service = ServiceProcess("impostor", tmp_path / "run", tmp_path / "impostor.log")
    service.run_dir.mkdir(parents=True)
    service.pid_file.write_text(f"{os.getpid()}\n")  # this test process: alive, wrong cmdline

    assert service.owned_pid(["marker-that-is-not-there"]) is None
    assert not await service.stop(["marker-that-is-not-there"], timeout_s=1)
    assert alive(os.getpid())
    assert not service.pid_file.exists()  # the stale PID file is cleaned up
