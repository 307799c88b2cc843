"""Host facts (hostname, OS, Python, CPU, RAM, disk) from the standard library and /proc.

No psutil: Colab and minimal containers may not have it, and everything needed is in /proc or
``os.sysconf``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
from pathlib import Path
from typing import Any

from ca4_sdk.collectors.base import short_text

MIB = 1024 * 1024
GIB = 1024 * MIB


def read_meminfo(text: str) -> dict[str, float]:
    """``/proc/meminfo`` as MiB per key (the file speaks kB)."""
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0]) / 1024.0
    return values


def _memory_mib() -> tuple[float, float | None]:
    try:
        info = read_meminfo(Path("/proc/meminfo").read_text(encoding="ascii"))
        return info["MemTotal"], info.get("MemAvailable")
    except (OSError, KeyError):
        pass
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = page * os.sysconf("SC_PHYS_PAGES") / MIB
        available = page * os.sysconf("SC_AVPHYS_PAGES") / MIB
    except (ValueError, OSError, AttributeError):
        return 0.0, None
    return total, available


def _cpu_model() -> str | None:
    try:
        for line in (
            Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
        ):
            if line.startswith("model name"):
                return short_text(line.partition(":")[2])
    except OSError:
        pass
    return short_text(platform.processor())


def collect_host(
    *,
    driver_version: str | None = None,
    cuda_version: str | None = None,
    nvml_version: str | None = None,
) -> dict[str, Any]:
    """Facts about this host, shaped like ``ca4_schemas.HostFacts``."""
    ram_total, ram_available = _memory_mib()
    host: dict[str, Any] = {
        "hostname": short_text(socket.gethostname()) or "unknown",
        "os": short_text(platform.system()) or "unknown",
        "os_release": short_text(platform.release()),
        "architecture": short_text(platform.machine()),
        "python_version": platform.python_version(),
        "driver_version": short_text(driver_version),
        "cuda_version": short_text(cuda_version),
        "nvml_version": short_text(nvml_version),
        "cpu_model": _cpu_model(),
        "cpu_count": max(1, os.cpu_count() or 1),
        "ram_total_mib": float(ram_total),
        "ram_available_mib": ram_available,
    }
    with contextlib.suppress(OSError, AttributeError):  # no load average on Windows
        host["cpu_load_1m"] = float(os.getloadavg()[0])
    try:
        disk = shutil.disk_usage(Path.cwd())
        host["disk_total_gib"] = disk.total / GIB
        host["disk_free_gib"] = disk.free / GIB
    except OSError:
        pass
    return {key: value for key, value in host.items() if value is not None}
