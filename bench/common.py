"""Helpers shared by bench parts: percentiles, report bodies, free ports, waiting for HTTP."""

from __future__ import annotations

import os
import socket
import statistics
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from typing import Any


def percentiles(samples_s: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds."""
    if not samples_s:
        return {"p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    ordered = sorted(samples_s)
    cuts = (
        statistics.quantiles(ordered, n=100, method="inclusive")
        if len(ordered) > 1
        else ordered * 99
    )

    def ms(value: float) -> float:
        return round(value * 1000, 2)

    return {
        "p50_ms": ms(cuts[49]),
        "p90_ms": ms(cuts[89]),
        "p99_ms": ms(cuts[98]),
        "max_ms": ms(ordered[-1]),
    }


def make_report(session_id: str, gpus: int = 1) -> dict[str, Any]:
    """A realistic Colab report (one T4 by default) with a fresh event id."""
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC).isoformat(),
        "source": {"sdk": "ca4-sdk", "sdk_version": "0.1.0", "runtime": "colab"},
        "session_id": session_id,
        "labels": {"project": "bench", "run": "r1"},
        "payload": {
            "host": {
                "hostname": "bench-host",
                "os": "Linux",
                "python_version": "3.11.9",
                "cuda_version": "12.4",
                "driver_version": "550.54.15",
                "cpu_count": 2,
                "ram_total_mib": 12976.0,
            },
            "gpus": [
                {
                    "uuid": f"GPU-bench-{index}",
                    "index": index,
                    "name": "Tesla T4",
                    "memory_total_mib": 15360.0,
                    "memory_used_mib": 10423.0,
                    "utilization_gpu_pct": 87.0,
                    "temperature_gpu_c": 71.0,
                    "power_draw_w": 63.4,
                    "power_limit_w": 70.0,
                    "clock_sm_mhz": 1590.0,
                }
                for index in range(gpus)
            ],
            "collector": {"collector": "nvml"},
        },
    }


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_http(url: str, timeout_s: float = 60.0) -> None:
    """Poll ``url`` until it answers 200 (the bench runner is synchronous on purpose)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout_s}s")
        time.sleep(0.25)


def kafka_bootstrap_servers() -> str:
    """The dev stack's Kafka (``CA4_KAFKA_BOOTSTRAP_SERVERS``)."""
    return os.environ.get("CA4_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


async def delete_topic(bootstrap: str, topic: str) -> None:
    """Delete a topic a bench part made for itself."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()
