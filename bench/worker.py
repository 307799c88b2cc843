"""Worker benchmark: topic -> store throughput vs a bare ``insert_many``, and end-to-end
latency at a steady 1,000 events/s. Writes ``worker.json`` and ``worker.png`` under results.

Needs the dev stack (``eval "$(uv run ca4 devstack env)"``). The worker runs in this process
(archive consumer off, so only the store path is measured) and shares the CPU with the producer.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from asgi_lifespan import LifespanManager
from ca4_schemas import GpuMetadataReported
from ca4_worker.core import metrics
from ca4_worker.core.config import Settings
from ca4_worker.domain.records import Position, PositionedEvent
from ca4_worker.main import create_app
from ca4_worker.persistence.mongo import connect, event_document

THROUGHPUT_EVENTS = int(os.environ.get("CA4_BENCH_WORKER_EVENTS", "20000"))
LATENCY_RATE = 1000
LATENCY_SECONDS = 10
SESSIONS = 50


def _body(index: int) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "gpu.metadata.reported",
        "schema_version": 1,
        "occurred_at": now,
        "received_at": now,
        "source": {"sdk": "ca4-sdk", "sdk_version": "0.1.0", "runtime": "colab"},
        "session_id": f"bench-{index % SESSIONS}",
        "labels": {"project": "bench"},
        "payload": {
            "host": {
                "hostname": "bench",
                "os": "Linux",
                "python_version": "3.11",
                "cpu_count": 2,
                "ram_total_mib": 12976.0,
            },
            "gpus": [
                {
                    "uuid": f"GPU-bench-{index % SESSIONS}",
                    "index": 0,
                    "name": "Tesla T4",
                    "memory_total_mib": 15360.0,
                    "memory_used_mib": float(index % 15000),
                    "utilization_gpu_pct": float(index % 100),
                    "temperature_gpu_c": 60.0,
                    "power_draw_w": 40.0,
                }
            ],
            "collector": {"collector": "nvml"},
        },
    }


def _stored_total() -> float:
    return float(metrics.EVENTS.labels("stored")._value.get())


async def _baseline(settings: Settings, bodies: list[dict[str, Any]]) -> float:
    """Events/s of a bare insert_many of the same documents in batches of the same size."""
    client = connect(settings.mongo_url)
    collection = client[settings.mongo_db]["baseline_events"]
    documents = [
        event_document(
            PositionedEvent(GpuMetadataReported.model_validate(body), Position(0, index)),
            topic=settings.kafka_topic,
            stored_at=datetime.now(UTC),
        )
        for index, body in enumerate(bodies)
    ]
    started = time.perf_counter()
    for start in range(0, len(documents), settings.store_max_records):
        await collection.insert_many(documents[start : start + settings.store_max_records])
    elapsed = time.perf_counter() - started
    await client.close()
    return len(documents) / elapsed


async def _produce(settings: Settings, bodies: list[dict[str, Any]], rate: float | None) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=5
    )
    await producer.start()
    try:
        started = time.perf_counter()
        futures = []
        for index, body in enumerate(bodies):
            if rate is not None:
                due = started + index / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                body["received_at"] = datetime.now(UTC).isoformat()
            futures.append(
                await producer.send(
                    settings.kafka_topic,
                    json.dumps(body).encode(),
                    key=str(body["session_id"]).encode(),
                )
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _measure(results_dir: Path) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_topic=f"bench-worker-{suffix}",
        kafka_dlq_topic=f"bench-worker-{suffix}.dlq",
        mongo_db=f"bench_worker_{suffix}",
        archive_enabled=False,
        lag_poll_interval_s=5,
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    latency_topic = f"{settings.kafka_topic}-latency"
    await admin.create_topics(
        [NewTopic(name, 3, 1) for name in (settings.kafka_topic, latency_topic)]
    )
    client = connect(settings.mongo_url)
    try:
        bodies = [_body(index) for index in range(THROUGHPUT_EVENTS)]
        baseline = await _baseline(settings, bodies)
        await client[settings.mongo_db]["baseline_events"].drop()
        await _produce(settings, bodies, rate=None)

        samples: list[tuple[float, float]] = []
        start_total = _stored_total()
        async with LifespanManager(create_app(settings), startup_timeout=60):
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                done = _stored_total() - start_total
                samples.append((time.perf_counter(), done))
                if done >= THROUGHPUT_EVENTS:
                    break
                await asyncio.sleep(0.05)
        low = next(t for t, done in samples if done >= 0.1 * THROUGHPUT_EVENTS)
        high = next(t for t, done in samples if done >= 0.9 * THROUGHPUT_EVENTS)
        worker_rate = 0.8 * THROUGHPUT_EVENTS / (high - low)

        latency_settings = settings.model_copy(
            update={"kafka_topic": latency_topic, "mongo_db": f"{settings.mongo_db}_latency"}
        )
        latency_bodies = [_body(index) for index in range(LATENCY_RATE * LATENCY_SECONDS)]
        async with LifespanManager(create_app(latency_settings), startup_timeout=60):
            await asyncio.sleep(5)  # group joined before the steady stream starts
            await _produce(latency_settings, latency_bodies, rate=LATENCY_RATE)
            events = client[latency_settings.mongo_db]["events"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if await events.count_documents({}) >= len(latency_bodies):
                    break
                await asyncio.sleep(0.5)
            latencies_ms = sorted(
                [
                    (doc["stored_at"] - doc["received_at"]).total_seconds() * 1000
                    async for doc in events.find({}, {"stored_at": 1, "received_at": 1})
                ]
            )
        quantiles = statistics.quantiles(latencies_ms, n=100)
        result = {
            "events": THROUGHPUT_EVENTS,
            "store_batch_max_records": settings.store_max_records,
            "bare_insert_many_events_per_s": round(baseline, 1),
            "worker_topic_to_store_events_per_s": round(worker_rate, 1),
            "worker_vs_bare_ratio": round(worker_rate / baseline, 3),
            "target_ratio": 0.7,
            "latency_rate_events_per_s": LATENCY_RATE,
            "latency_events": len(latencies_ms),
            "end_to_end_latency_ms_p50": round(quantiles[49], 1),
            "end_to_end_latency_ms_p99": round(quantiles[98], 1),
        }
        _plot(results_dir / "worker.png", result, latencies_ms)
        (results_dir / "worker.json").write_text(json.dumps(result, indent=2) + "\n")
        return result
    finally:
        for name in (settings.mongo_db, f"{settings.mongo_db}_latency"):
            await client.drop_database(name)
        await client.close()
        await admin.delete_topics([settings.kafka_topic, latency_topic])
        await admin.close()


def _plot(path: Path, result: dict[str, Any], latencies_ms: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(
        ["bare insert_many", "worker topic->store"],
        [result["bare_insert_many_events_per_s"], result["worker_topic_to_store_events_per_s"]],
        color=["grey", "tab:blue"],
    )
    left.set_ylabel("events/s")
    left.set_title(f"Throughput (ratio {result['worker_vs_bare_ratio']:.2f}, target 0.70)")
    right.hist(latencies_ms, bins=50, color="tab:green")
    right.set_xlabel("received_at -> stored (ms)")
    right.set_title(
        f"End-to-end at {LATENCY_RATE}/s: p50 {result['end_to_end_latency_ms_p50']} ms, "
        f"p99 {result['end_to_end_latency_ms_p99']} ms"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run(results_dir: Path) -> dict[str, Any]:
    """Run the worker benchmark; results land in ``results_dir``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_measure(results_dir))


if __name__ == "__main__":
    print(json.dumps(run(Path(__file__).parent / "results"), indent=2))
