"""Ingest bench: the processor's single and batch endpoints next to a bare aiokafka producer.

The processor runs under uvicorn in its own process, the load generator in another (so neither
steals the other's event loop), and the bare producer sends the same events to the same broker
with the same settings (idempotent, ``acks=all``) in the same run. Targets from the issue: batch
ingest >= 50% of the bare producer's events/s; single-report p99 <= 25 ms at 200 requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    delete_topic,
    free_port,
    kafka_bootstrap_servers,
    make_report,
    percentiles,
    wait_for_http,
)

API_KEY = "ca4-dev-key"
BATCH_SIZE = 500
BARE_EVENTS = int(os.environ.get("CA4_BENCH_INGEST_EVENTS", "20000"))
"""Events the bare producer sends, and the batch run posts in ``BATCH_SIZE`` reports a request."""
BATCH_REQUESTS = max(1, BARE_EVENTS // BATCH_SIZE)
BATCH_CONCURRENCY = 2
_TIMED_S = os.environ.get("CA4_BENCH_INGEST_SECONDS")
"""How long each timed single-report run lasts, when set (the defaults below otherwise)."""
SINGLE_CLOSED_S = float(_TIMED_S or 8.0)
SINGLE_CONCURRENCY = 16
STEADY_RATE = 200
STEADY_S = float(_TIMED_S or 10.0)
SESSIONS = 50


def _bodies(count: int) -> list[bytes]:
    return [json.dumps(make_report(f"bench-session-{i % SESSIONS}")).encode() for i in range(count)]


# --- bare producer ---------------------------------------------------------------------------


async def _bare_producer(bootstrap: str, topic: str, events: int) -> dict[str, Any]:
    """The raw client limit: the same events, settings and 500-event waves as the batch route."""
    from aiokafka import AIOKafkaProducer
    from ca4_schemas import GpuMetadataReport, GpuMetadataReported, encode_event

    reports = [GpuMetadataReport.model_validate_json(body) for body in _bodies(events)]
    wire = [
        (
            r.session_id.encode(),
            encode_event(
                GpuMetadataReported.stamped(
                    r, received_at=r.occurred_at, key_id="bench", tenant="bench"
                )
            ),
        )
        for r in reports
    ]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2
    )
    await producer.start()
    try:
        await (await producer.send(topic, b"warm-up"))
        started = time.perf_counter()
        for start in range(0, len(wire), BATCH_SIZE):
            futures = [
                await producer.send(topic, value, key=key, headers=[("ca4-event-id", b"x")])
                for key, value in wire[start : start + BATCH_SIZE]
            ]
            await asyncio.gather(*futures)
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return {"events": events, "seconds": round(elapsed, 3), "events_per_s": round(events / elapsed)}


async def _create_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()


# --- load generator (runs in its own process) --------------------------------------------------


async def _load(mode: str, base_url: str) -> dict[str, Any]:
    import aiohttp

    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(base_url, connector=connector, headers=headers) as session:

        async def post(path: str, body: bytes, scheduled: float | None = None) -> None:
            started = time.perf_counter() if scheduled is None else scheduled
            async with session.post(path, data=body) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            latencies.append(time.perf_counter() - started)

        # Warm up connections, the producer and the JIT-less hot paths.
        for body in _bodies(20):
            await post("/v1/metadata", body)
        latencies.clear()
        statuses.clear()

        if mode == "batch":
            reports = [json.loads(b) for b in _bodies(BATCH_SIZE)]
            payloads = []
            for _ in range(BATCH_REQUESTS):
                for report in reports:
                    report["event_id"] = str(uuid.uuid4())
                payloads.append(json.dumps({"reports": reports}).encode())
            queue = list(payloads)
            started = time.perf_counter()

            async def batch_worker() -> None:
                while queue:
                    await post("/v1/metadata/batch", queue.pop())

            await asyncio.gather(*(batch_worker() for _ in range(BATCH_CONCURRENCY)))
            elapsed = time.perf_counter() - started
            events = BATCH_REQUESTS * BATCH_SIZE
        elif mode == "single-closed":
            bodies = _bodies(20_000)
            deadline = time.perf_counter() + SINGLE_CLOSED_S
            started = time.perf_counter()

            async def single_worker() -> None:
                while time.perf_counter() < deadline and bodies:
                    await post("/v1/metadata", bodies.pop())

            await asyncio.gather(*(single_worker() for _ in range(SINGLE_CONCURRENCY)))
            elapsed = time.perf_counter() - started
            events = len(latencies)
        else:  # single-rate: open loop, latency from the scheduled send (no coordinated omission)
            total = int(STEADY_RATE * STEADY_S)
            bodies = _bodies(total)
            tasks = []
            started = time.perf_counter()
            for index, body in enumerate(bodies):
                scheduled = started + index / STEADY_RATE
                await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
                tasks.append(asyncio.create_task(post("/v1/metadata", body, scheduled)))
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - started
            events = total
    requests = len(latencies)
    return {
        "mode": mode,
        "requests": requests,
        "events": events,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(requests / elapsed, 1),
        "events_per_s": round(events / elapsed),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        **percentiles(latencies),
    }


def _run_load(mode: str, base_url: str) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "--load", mode, "--url", base_url],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    result: dict[str, Any] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


# --- the part --------------------------------------------------------------------------------


def run(results_dir: Path) -> dict[str, Any]:
    """Bare producer, then the processor's batch, closed-loop single and 200 req/s single runs."""
    bootstrap = kafka_bootstrap_servers()
    topic = f"bench-gpu-metadata-{uuid.uuid4().hex[:8]}"
    asyncio.run(_create_topic(bootstrap, topic))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "CA4_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CA4_KAFKA_TOPIC": topic,
        "CA4_ENVIRONMENT": "dev",
        "CA4_API_KEY_HASHES": "",
        "CA4_API_KEYS_FILE": "",
        "CA4_RATE_LIMIT_PER_SECOND": "0",
        "CA4_MAX_REQUESTS_IN_FLIGHT_PER_TENANT": "100000",  # the open loop is one key
        "CA4_LOG_LEVEL": os.environ.get("BENCH_PROCESSOR_LOG_LEVEL", "WARNING"),
    }
    env.pop("CA4_API_KEYS_FILE")
    server = subprocess.Popen(  # one worker process, uvloop + httptools, no access log
        [
            sys.executable,
            "-m",
            "uvicorn",
            "ca4_processor.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        bare = asyncio.run(_bare_producer(bootstrap, topic, BARE_EVENTS))
        wait_for_http(f"{base_url}/readyz")
        batch = _run_load("batch", base_url)
        single_closed = _run_load("single-closed", base_url)
        single_steady = _run_load("single-rate", base_url)
    finally:
        server.terminate()
        server.wait(timeout=30)
        asyncio.run(delete_topic(bootstrap, topic))
    ratio = batch["events_per_s"] / bare["events_per_s"]
    result = {
        "bare_producer": bare,
        "batch": batch,
        "single_closed_loop": single_closed,
        "single_200_rps": single_steady,
        "batch_vs_bare_ratio": round(ratio, 3),
        "targets": {
            "batch_ge_50pct_of_bare": ratio >= 0.5,
            "single_p99_le_25ms_at_200rps": single_steady["p99_ms"] <= 25.0
            and single_steady["statuses"] == {"202": single_steady["requests"]},
        },
        "setup": {
            "processor": "uvicorn, 1 worker, uvloop, httptools, log level " + env["CA4_LOG_LEVEL"],
            "batch": f"{BATCH_REQUESTS} x {BATCH_SIZE} reports, {BATCH_CONCURRENCY} concurrent",
            "single_closed": f"{SINGLE_CONCURRENCY} concurrent for {SINGLE_CLOSED_S}s",
            "bare": f"{BARE_EVENTS} events in waves of {BATCH_SIZE}, acks=all, idempotent",
            "cpus": os.cpu_count(),
        },
    }
    result["summary"] = (
        f"bare {bare['events_per_s']} ev/s; batch {batch['events_per_s']} ev/s "
        f"({ratio:.0%} of bare, p99 {batch['p99_ms']} ms); single closed-loop "
        f"{single_closed['requests_per_s']} req/s; single @200 rps p50 {single_steady['p50_ms']} "
        f"ms p99 {single_steady['p99_ms']} ms"
    )
    _plot(result, results_dir / "ingest.png")
    return result


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4))
    names = ["bare producer", "processor batch", "processor single"]
    values = [
        result["bare_producer"]["events_per_s"],
        result["batch"]["events_per_s"],
        result["single_closed_loop"]["events_per_s"],
    ]
    throughput.bar(names, values, color=["grey", "tab:blue", "tab:orange"])
    throughput.set_ylabel("events/s")
    throughput.set_title("Ingest throughput (same broker, same run)")
    runs = {"batch (per request)": result["batch"], "single @200 rps": result["single_200_rps"]}
    for offset, (label, run_result) in enumerate(runs.items()):
        latency.bar(
            [offset * 3, offset * 3 + 1],
            [run_result["p50_ms"], run_result["p99_ms"]],
            label=label,
        )
    latency.set_xticks([0, 1, 3, 4], ["p50", "p99", "p50", "p99"])
    latency.axhline(25, color="red", linestyle="--", linewidth=1, label="25 ms target")
    latency.set_ylabel("ms")
    latency.set_title("Latency")
    latency.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--load", choices=["batch", "single-closed", "single-rate"], required=True)
    parser.add_argument("--url", required=True)
    arguments = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        pass
    print(json.dumps(asyncio.run(_load(arguments.load, arguments.url))))
