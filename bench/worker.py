"""Worker benchmark: topic -> store throughput vs a bare ``insert_many``, and end-to-end
latency at a steady 1,000 events/s. Writes ``worker.json`` and ``worker.png`` under results.

Needs the dev stack (``eval "$(uv run ca4 devstack env)"``). The worker runs as its own
uvicorn process, as in production (archive consumer off, so only the store path is measured),
and progress is read from its ``/metrics``. Throughput is measured on a topic filled before the
worker starts (steady-state consumption, no producer competing for the 2 CPUs).

On the dev stack the same run varies by up to 30% from one minute to the next (FerretDB on
SQLite, shared disk), for the baseline and the worker alike. So throughput is measured in
``CA4_BENCH_WORKER_ROUNDS`` rounds (3), each a baseline followed by a worker run on fresh
collections, and the medians are reported next to every round. The plain sequential
``insert_many`` loop is the reference; a pipelined one (the worker's chunks and concurrency) is
reported next to it as the stricter comparison.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from ca4_schemas import GpuMetadataReported, encode_event
from ca4_worker.bootstrap import bootstrap
from ca4_worker.core.config import Settings
from ca4_worker.core.metrics import PROJECTION_STAGES, STORE_STAGES
from ca4_worker.domain.projection import applied_key
from ca4_worker.domain.records import Position, PositionedEvent
from ca4_worker.persistence.database import COLLECTIONS, connect
from ca4_worker.persistence.documents import EVENTS, event_document
from ca4_worker.persistence.documents import SESSIONS as SESSIONS_COLLECTION
from prometheus_client.parser import text_string_to_metric_families
from pymongo.asynchronous.collection import AsyncCollection

from bench.common import free_port, wait_for_http

THROUGHPUT_EVENTS = int(os.environ.get("CA4_BENCH_WORKER_EVENTS", "100000"))
ROUNDS = int(os.environ.get("CA4_BENCH_WORKER_ROUNDS", "3"))
LATENCY_RATE = 1000
LATENCY_SECONDS = int(os.environ.get("CA4_BENCH_WORKER_LATENCY_SECONDS", "10"))
PROJECTION_POLL_S = 0.02
METRICS_POLL_S = 0.5
"""How often a run polls the worker's ``/metrics`` for its counts: each scrape costs the worker
CPU on its event loop, so as rarely as the rate's resolution allows (docs/architecture.md,
"Latency")."""
GOALS = {
    "worker_vs_bare_ratio": 0.9,
    "worker_vs_pipelined_bare_ratio": 0.7,
    "stored_latency_ms_p99": 250.0,
    "projected_latency_ms_p99": 1000.0,
}
"""Issue 17's goals at a steady 1,000 events/s, drawn on the plot and kept in the JSON."""
SESSIONS = int(os.environ.get("CA4_BENCH_WORKER_SESSIONS", "50"))
GPUS_PER_SESSION = int(os.environ.get("CA4_BENCH_WORKER_GPUS_PER_SESSION", "1"))


def _body(index: int) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "gpu.metadata.reported",
        "schema_version": 2,
        "occurred_at": now,
        "received_at": now,
        "key_id": "bench",
        "tenant": "bench",
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
                    "uuid": f"GPU-bench-{index % SESSIONS}-{gpu}",
                    "index": gpu,
                    "name": "Tesla T4",
                    "memory_total_mib": 15360.0,
                    "memory_used_mib": float(index % 15000),
                    "utilization_gpu_pct": float(index % 100),
                    "temperature_gpu_c": 60.0,
                    "power_draw_w": 40.0,
                }
                for gpu in range(GPUS_PER_SESSION)
            ],
            "collector": {"collector": "nvml"},
        },
    }


async def _insert_all(
    collection: AsyncCollection[dict[str, Any]],
    documents: list[dict[str, Any]],
    *,
    chunk: int,
    concurrency: int,
) -> None:
    """``insert_many`` of ``documents`` in chunks, ``concurrency`` calls in flight."""
    slots = asyncio.Semaphore(concurrency)

    async def insert(part: list[dict[str, Any]]) -> None:
        async with slots:
            await collection.insert_many(part, ordered=False)

    starts = range(0, len(documents), chunk)
    await asyncio.gather(*(insert(documents[start : start + chunk]) for start in starts))


async def _baselines(settings: Settings, bodies: list[dict[str, Any]]) -> dict[str, float]:
    """Events/s of bare ``insert_many`` calls storing the same documents into a collection with
    the same indexes as ``events``, in two ways: ``sequential`` (one call per store batch, the
    plain client) and ``pipelined`` (the worker's chunk size and concurrency); and the whole
    machine's CPU per event of each (``<way>_machine_cpu_us_per_event``)."""
    documents = [
        event_document(
            PositionedEvent(GpuMetadataReported.model_validate(body), Position(0, index)),
            topic=settings.kafka_topic,
            stored_at=datetime.now(UTC),
        )
        for index, body in enumerate(bodies)
    ]
    shapes = {
        "sequential": (settings.store_max_records, 1),
        "pipelined": (settings.store_insert_chunk, settings.store_insert_concurrency),
    }
    rates = {}
    async with bootstrap(settings, dead_letters=False, archive=False, patient=False) as adapters:
        assert adapters.database is not None
        for name, (chunk, concurrency) in shapes.items():
            collection = adapters.database["baseline_events"]
            # The store's indexes cost inserts too.
            await collection.create_indexes(COLLECTIONS[EVENTS])
            cpu_before, started = _cpu_seconds(), time.perf_counter()
            await _insert_all(collection, documents, chunk=chunk, concurrency=concurrency)
            rates[name] = len(documents) / (time.perf_counter() - started)
            cpu_us = _cpu_us_per_event(cpu_before, _cpu_seconds(), len(documents))
            if cpu_us is not None:
                rates[f"{name}_machine_cpu_us_per_event"] = cpu_us.machine
                rates[f"{name}_database_cpu_us_per_event"] = cpu_us.database
            await collection.drop()
    return rates


def _record_value(body: dict[str, Any]) -> bytes:
    """The record the processor publishes for ``body``."""
    return encode_event(GpuMetadataReported.model_validate(body))


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
                    _record_value(body),
                    key=str(body["session_id"]).encode(),
                )
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def _worker_process(settings: Settings, log_path: Path) -> AsyncIterator[tuple[str, int]]:
    """A worker (uvicorn, as deployed) for ``settings``; yields its base URL and PID once it
    answers."""
    port = free_port()
    env = {
        **os.environ,
        "CA4_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "CA4_KAFKA_TOPIC": settings.kafka_topic,
        "CA4_KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
        "CA4_KAFKA_STORE_GROUP": settings.kafka_store_group,
        "CA4_KAFKA_PROJECT_GROUP": settings.kafka_project_group,
        "CA4_MONGO_URL": settings.mongo_url,
        "CA4_MONGO_DB": settings.mongo_db,
        "CA4_ARCHIVE_ENABLED": "false",
        "CA4_LAG_POLL_INTERVAL_S": "5",
        "CA4_LOG_LEVEL": "WARNING",
    }
    with log_path.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "uvicorn",
            "ca4_worker.main:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            env=env,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            await asyncio.to_thread(wait_for_http, f"{url}/healthz", 180.0)
            yield url, process.pid
        finally:
            with contextlib.suppress(ProcessLookupError):  # it may have died already
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


def _peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident memory (Linux ``VmHWM``), or None where /proc lacks it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


STORED = 'ca4_worker_events_total{result="stored"}'
PROJECTED = "ca4_worker_projected_latency_seconds_count"
HANDED_OVER = 'ca4_worker_projection_records_total{source="handoff"}'


DATABASE_PROCESSES = frozenset({"postgres", "ferretdb", "mongod"})
"""Process names of the database: FerretDB and the PostgreSQL (DocumentDB extension) under it,
or a MongoDB."""


class _CpuSeconds(NamedTuple):
    """Busy CPU seconds so far: the whole machine's (all cores), the worker process's and the
    database's processes'."""

    machine: float
    process: float
    database: float


def _process_cpu_seconds(stat_text: str, ticks: int) -> float:
    # utime and stime: fields 14 and 15, counted after the parenthesised name.
    fields = stat_text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks


def _database_cpu_seconds(ticks: int) -> float:
    """CPU seconds of the live database processes (a backend that exited takes its own along)."""
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as stat:
                text = stat.read()
        except OSError:  # gone meanwhile
            continue
        if text[text.index("(") + 1 : text.rindex(")")] in DATABASE_PROCESSES:
            total += _process_cpu_seconds(text, ticks)
    return total


def _cpu_seconds(pid: int | None = None) -> _CpuSeconds | None:
    """Read from ``/proc`` (Linux); None where it is absent."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat", encoding="ascii") as stat:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (
                int(field) for field in stat.readline().split()[1:9]
            )
        process = 0.0
        if pid is not None:
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                process = _process_cpu_seconds(stat.read(), ticks)
        database = _database_cpu_seconds(ticks)
    except (AttributeError, OSError, ValueError):  # no sysconf (Windows), no /proc
        return None
    return _CpuSeconds((user + nice + system + irq + softirq + steal) / ticks, process, database)


def _cpu_us_per_event(
    before: _CpuSeconds | None, after: _CpuSeconds | None, events: float
) -> _CpuSeconds | None:
    """Machine, process and database CPU microseconds per event between two readings."""
    if before is None or after is None or events <= 0:
        return None
    spent = (
        round((late - early) / events * 1e6, 1) for early, late in zip(before, after, strict=True)
    )
    return _CpuSeconds(*spent)


class _Sample(NamedTuple):
    at: float
    values: list[float]
    cpu: _CpuSeconds | None


def _scraped_values(url: str, series: tuple[str, ...]) -> list[float]:
    """The values of ``series`` (whole sample names with labels) scraped from the worker."""
    values = dict.fromkeys(series, 0.0)
    for line in _scrape(url).splitlines():
        name, _, value = line.rpartition(" ")
        if name in values:
            values[name] = float(value)
    return [values[name] for name in series]


async def _wait_stored(
    url: str, count: int, timeout_s: float, series: str = STORED
) -> list[tuple[float, float]]:
    """Poll the worker until ``series`` (stored events by default) reaches ``count``; the
    (time, value) samples."""
    samples = await _wait_all(url, count, timeout_s, (series,))
    return [(sample.at, sample.values[0]) for sample in samples]


async def _wait_all(
    url: str, count: int, timeout_s: float, series: tuple[str, ...], pid: int | None = None
) -> list[_Sample]:
    """Poll the worker until every one of ``series`` reaches ``count``; the samples, with the
    CPU seconds of the machine and of process ``pid`` at each."""
    samples: list[_Sample] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        values = await asyncio.to_thread(_scraped_values, url, series)
        samples.append(_Sample(time.perf_counter(), values, _cpu_seconds(pid)))
        if min(values) >= count:
            return samples
        await asyncio.sleep(METRICS_POLL_S)
    raise TimeoutError(f"worker reached {samples[-1].values} of {count} in {timeout_s}s")


def _steady_window(samples: list[tuple[float, float]], total: int) -> tuple[int, int]:
    """Indexes of the first samples past 10% and 90% of ``total``.

    The stored count moves a whole batch at a time, so rates use the counts actually seen at
    those two samples, not the nominal 80%.
    """
    low = next(index for index, (_, done) in enumerate(samples) if done >= 0.1 * total)
    high = next(index for index, (_, done) in enumerate(samples) if done >= 0.9 * total)
    if samples[high][1] <= samples[low][1]:
        raise ValueError("too few batches to measure a rate: raise CA4_BENCH_WORKER_EVENTS")
    return low, high


def _steady_rate(samples: list[tuple[float, float]], total: int) -> float:
    """Events/s over :func:`_steady_window`."""
    low, high = _steady_window(samples, total)
    (low_t, low_done), (high_t, high_done) = samples[low], samples[high]
    return (high_done - low_done) / (high_t - low_t)


@dataclass
class _Latencies:
    """POST-to-stored and POST-to-projected latencies (ms, sorted) of one steady stream, and
    the worker's store-cycle stages over it."""

    stored_ms: list[float]
    projected_ms: list[float]
    stages: dict[str, dict[str, float]]
    projection_stages: dict[str, dict[str, float]]

    def summary(self) -> dict[str, Any]:
        stored, projected = _p50_p99(self.stored_ms), _p50_p99(self.projected_ms)
        return {
            "stored_latency_ms_p50": stored[0],
            "stored_latency_ms_p99": stored[1],
            "projected_latency_ms_p50": projected[0],
            "projected_latency_ms_p99": projected[1],
            "latency_events": len(self.stored_ms),
            "projected_events": len(self.projected_ms),
            "store_stages": self.stages,
            "projection_stages": self.projection_stages,
        }


def _median_or_none(values: list[float | None]) -> float | None:
    """The median, or None when any round could not measure it (no ``/proc``)."""
    known = [value for value in values if value is not None]
    return round(statistics.median(known), 1) if known and len(known) == len(values) else None


def _p50_p99(values_ms: list[float]) -> tuple[float, float]:
    quantiles = statistics.quantiles(values_ms, n=100)
    return round(quantiles[49], 1), round(quantiles[98], 1)


class _ProjectionWatch:
    """Polls the ``sessions`` projection (what ``/v1/sessions`` reads) every
    ``PROJECTION_POLL_S`` and remembers when each session's applied offset per partition moved,
    so each event's projected time is the first poll that saw it applied (at most one poll
    interval late)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.seen: dict[tuple[str, str], tuple[list[int], list[datetime]]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        client = connect(self._settings.mongo_url)
        try:
            sessions = client[self._settings.mongo_db][SESSIONS_COLLECTION]
            while not stop.is_set():
                async for doc in sessions.find({}, {"applied": 1}):
                    now = datetime.now(UTC)
                    for key, offset in (doc.get("applied") or {}).items():
                        offsets, times = self.seen.setdefault((doc["_id"], key), ([], []))
                        if not offsets or offset > offsets[-1]:
                            offsets.append(offset)
                            times.append(now)
                await asyncio.sleep(PROJECTION_POLL_S)
        finally:
            await client.close()

    def projected_at(self, session_id: str, partition: int, offset: int) -> datetime | None:
        offsets, times = self.seen.get((session_id, applied_key(partition)), ([], []))
        index = bisect.bisect_left(offsets, offset)
        return times[index] if index < len(times) else None


async def _latencies(
    settings: Settings, watch: _ProjectionWatch
) -> tuple[list[float], list[float]]:
    """received_at -> stored_at, and received_at -> seen projected, of every steady-stream
    event (warm-up sessions left out)."""
    client = connect(settings.mongo_url)
    stored: list[float] = []
    projected: list[float] = []
    try:
        cursor = client[settings.mongo_db][EVENTS].find(
            {"session_id": {"$not": {"$regex": "^warmup-"}}},
            {"stored_at": 1, "received_at": 1, "session_id": 1, "partition": 1, "offset": 1},
        )
        async for doc in cursor:
            received = doc["received_at"].replace(tzinfo=UTC)
            stored.append((doc["stored_at"].replace(tzinfo=UTC) - received).total_seconds() * 1e3)
            seen = watch.projected_at(doc["session_id"], doc["partition"], doc["offset"])
            if seen is not None:
                projected.append((seen - received).total_seconds() * 1000)
        return sorted(stored), sorted(projected)
    finally:
        await client.close()


def _scrape(url: str) -> str:
    """The worker's ``/metrics`` text. The timeout is long because the worker's event loop
    answers between insert chunks only, which on a loaded machine can take seconds."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=60) as response:
        return str(response.read().decode())


STAGE_FAMILIES = {
    "store": ("ca4_worker_store_stage_seconds", STORE_STAGES),
    "projection": ("ca4_worker_projection_stage_seconds", PROJECTION_STAGES),
}


def _stage_totals(metrics_text: str, family_name: str) -> dict[str, tuple[float, float]]:
    """(sum seconds, count) of each stage of ``family_name`` in a ``/metrics`` scrape."""
    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != family_name:
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage", "")
            if sample.name.endswith("_sum"):
                totals.setdefault(stage, [0.0, 0.0])[0] = sample.value
            elif sample.name.endswith("_count"):
                totals.setdefault(stage, [0.0, 0.0])[1] = sample.value
    return {stage: (total, count) for stage, (total, count) in totals.items()}


def _stage_breakdown(before: str, after: str, kind: str) -> dict[str, dict[str, float]]:
    """Per stage of the ``kind`` cycle between two scrapes: cycles, mean ms per cycle, and
    share of the cycle's time."""
    family_name, stages = STAGE_FAMILIES[kind]
    start, end = _stage_totals(before, family_name), _stage_totals(after, family_name)
    spent = {s: end.get(s, (0, 0))[0] - start.get(s, (0, 0))[0] for s in stages}
    cycles = {s: end.get(s, (0, 0))[1] - start.get(s, (0, 0))[1] for s in stages}
    total = sum(spent.values()) or 1.0
    return {
        stage: {
            "cycles": cycles[stage],
            "mean_ms": round(1000 * spent[stage] / cycles[stage], 2) if cycles[stage] else 0.0,
            "share": round(spent[stage] / total, 3),
        }
        for stage in stages
    }


def _bench_settings(name: str) -> Settings:
    """Settings with a topic, group and database of their own."""
    suffix = f"{name}-{uuid.uuid4().hex[:8]}"
    return Settings(
        kafka_topic=f"bench-worker-{suffix}",
        kafka_dlq_topic=f"bench-worker-{suffix}.dlq",
        kafka_store_group=f"bench-worker-{suffix}",
        kafka_project_group=f"bench-worker-{suffix}-project",
        mongo_db=f"bench_worker_{suffix}".replace("-", "_"),
        archive_enabled=False,
    )


@contextlib.asynccontextmanager
async def _fresh_topic_and_database(settings: Settings) -> AsyncIterator[None]:
    """Create the settings' topic (3 partitions); drop it and the database afterwards."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(settings.kafka_topic, 3, 1)])
        yield
    finally:
        client = connect(settings.mongo_url)
        await client.drop_database(settings.mongo_db)
        await client.close()
        await admin.delete_topics([settings.kafka_topic])
        await admin.close()


async def _round(index: int, bodies: list[dict[str, Any]], log_path: Path) -> dict[str, Any]:
    """One baseline, the worker on a topic filled with the same events, then a steady stream."""
    load_before = round(os.getloadavg()[0], 1)
    throughput = await _throughput_round(index, bodies, log_path)
    latencies = await _steady_stream_latencies(log_path)
    return {
        **throughput,
        **latencies.summary(),
        # The machine is shared: a 1-minute load average far above the CPU count means the
        # round measured contention as much as the worker.
        "load_average_1m": [load_before, round(os.getloadavg()[0], 1)],
        "_latencies": latencies,
    }


async def _throughput_round(
    index: int, bodies: list[dict[str, Any]], log_path: Path
) -> dict[str, Any]:
    """One baseline, then the worker on a topic filled with the same events."""
    settings = _bench_settings(f"r{index}")
    async with _fresh_topic_and_database(settings):
        baseline = await _baselines(settings, bodies)
        await _produce(settings, bodies, rate=None)
        await asyncio.to_thread(os.sync)
        async with _worker_process(settings, log_path) as (url, pid):
            samples = await _wait_all(url, len(bodies), 600, (STORED, PROJECTED), pid)
            handed_over = (await asyncio.to_thread(_scraped_values, url, (HANDED_OVER,)))[0]
            peak_rss_mib = _peak_rss_mib(pid)
    stored = [(sample.at, sample.values[0]) for sample in samples]
    worker = _steady_rate(stored, len(bodies))
    projected = _steady_rate([(sample.at, sample.values[1]) for sample in samples], len(bodies))
    low, high = _steady_window(stored, len(bodies))
    cpu_us = _cpu_us_per_event(
        samples[low].cpu, samples[high].cpu, stored[high][1] - stored[low][1]
    )
    return {
        # The projection stage follows the store on the same CPUs and database; its own rate
        # over the same backlog shows it keeps up.
        "worker_topic_to_projected_events_per_s": round(projected, 1),
        # Records the projection stage took from the store stage's handoff instead of decoding
        # them again and looking them up.
        "projection_handoff_share": round(handed_over / len(bodies), 3),
        "bare_insert_many_events_per_s": round(baseline["sequential"], 1),
        "bare_pipelined_insert_many_events_per_s": round(baseline["pipelined"], 1),
        "worker_topic_to_store_events_per_s": round(worker, 1),
        "worker_vs_bare_ratio": round(worker / baseline["sequential"], 3),
        "worker_vs_pipelined_bare_ratio": round(worker / baseline["pipelined"], 3),
        "worker_peak_rss_mib": peak_rss_mib,
        # Where the CPU goes on a machine the worker shares with the database: per stored
        # event over the same window as the rate, both stages and every process together,
        # and the worker's own; next to the bare pipelined insert's.
        "bare_pipelined_machine_cpu_us_per_event": baseline.get(
            "pipelined_machine_cpu_us_per_event"
        ),
        "worker_machine_cpu_us_per_event": cpu_us and cpu_us.machine,
        "worker_process_cpu_us_per_event": cpu_us and cpu_us.process,
        # The database's share of the machine's: with the worker's own, what bounds the rate
        # on cores the two share (see docs/architecture.md, "Where the pipelined gap is").
        "bare_pipelined_database_cpu_us_per_event": baseline.get(
            "pipelined_database_cpu_us_per_event"
        ),
        "worker_database_cpu_us_per_event": cpu_us and cpu_us.database,
    }


async def _steady_stream_latencies(log_path: Path) -> _Latencies:
    """received_at -> stored and -> projected of ``LATENCY_SECONDS`` of events at 1,000/s
    (after a warm-up per session), and the worker's store-cycle stages meanwhile."""
    settings = _bench_settings("latency")
    warmup = [_body(index) for index in range(SESSIONS)]
    for body in warmup:
        body["session_id"] = f"warmup-{body['session_id']}"
    steady = [_body(index) for index in range(LATENCY_RATE * LATENCY_SECONDS)]
    total = len(warmup) + len(steady)
    watch = _ProjectionWatch(settings)
    stop = asyncio.Event()
    async with _fresh_topic_and_database(settings):
        async with _worker_process(settings, log_path) as (url, _):
            # Once the warm-up is stored the group has joined and the consumer is polling.
            await _produce(settings, warmup, rate=None)
            await _wait_stored(url, len(warmup), 120)
            before = await asyncio.to_thread(_scrape, url)
            watching = asyncio.create_task(watch.run(stop))
            await _produce(settings, steady, rate=LATENCY_RATE)
            await _wait_stored(url, total, 120)
            await _wait_stored(url, total, 120, series=PROJECTED)
            after = await asyncio.to_thread(_scrape, url)
            await asyncio.sleep(3 * PROJECTION_POLL_S)  # a last poll sees the last batch
            stop.set()
            await watching
        stored, projected = await _latencies(settings, watch)
        return _Latencies(
            stored,
            projected,
            _stage_breakdown(before, after, "store"),
            _stage_breakdown(before, after, "projection"),
        )


async def _measure(results_dir: Path) -> dict[str, Any]:
    log_path = Path(tempfile.gettempdir()) / f"ca4-worker-bench-{uuid.uuid4().hex[:8]}.log"
    bodies = [_body(index) for index in range(THROUGHPUT_EVENTS)]
    rounds = [await _round(index, bodies, log_path) for index in range(ROUNDS)]
    latencies: list[_Latencies] = [item.pop("_latencies") for item in rounds]

    def median(key: str) -> float:
        return round(statistics.median(item[key] for item in rounds), 1)

    def median_stages(kind: str) -> dict[str, dict[str, float]]:
        return {
            stage: {
                measure: round(
                    statistics.median(item[f"{kind}_stages"][stage][measure] for item in rounds),
                    3,
                )
                for measure in ("cycles", "mean_ms", "share")
            }
            for stage in STAGE_FAMILIES[kind][1]
        }

    bare, pipelined = (
        median("bare_insert_many_events_per_s"),
        median("bare_pipelined_insert_many_events_per_s"),
    )
    worker = median("worker_topic_to_store_events_per_s")
    settings = Settings()
    result = {
        "events": THROUGHPUT_EVENTS,
        "rounds": len(rounds),
        "sessions": SESSIONS,
        "gpus_per_session": GPUS_PER_SESSION,
        "partitions": 3,
        "store_batch_max_records": settings.store_max_records,
        "store_insert_chunk": settings.store_insert_chunk,
        "store_insert_concurrency": settings.store_insert_concurrency,
        "bare_insert_many_events_per_s": bare,
        "bare_pipelined_insert_many_events_per_s": pipelined,
        "worker_topic_to_store_events_per_s": worker,
        "worker_topic_to_projected_events_per_s": median("worker_topic_to_projected_events_per_s"),
        "projection_handoff_share": round(
            statistics.median(item["projection_handoff_share"] for item in rounds), 3
        ),
        "worker_vs_bare_ratio": round(worker / bare, 3),
        "worker_vs_pipelined_bare_ratio": round(worker / pipelined, 3),
        "worker_vs_bare_ratio_per_round": [item["worker_vs_bare_ratio"] for item in rounds],
        "worker_peak_rss_mib": max(item["worker_peak_rss_mib"] or 0.0 for item in rounds),
        **{
            key: _median_or_none([item[key] for item in rounds])
            for key in (
                "bare_pipelined_machine_cpu_us_per_event",
                "worker_machine_cpu_us_per_event",
                "worker_process_cpu_us_per_event",
                "bare_pipelined_database_cpu_us_per_event",
                "worker_database_cpu_us_per_event",
            )
        },
        "per_round": rounds,
        # Issue 17's goals; the ratio of 0.7 to sequential insert_many was the bench's before.
        "targets": GOALS,
        "latency_rate_events_per_s": LATENCY_RATE,
        "latency_seconds": LATENCY_SECONDS,
        **{
            f"{kind}_latency_ms_{quantile}": median(f"{kind}_latency_ms_{quantile}")
            for kind in ("stored", "projected")
            for quantile in ("p50", "p99")
        },
        "store_stages": median_stages("store"),
        "projection_stages": median_stages("projection"),
        "setup": {
            "worker": "separate uvicorn process, archive off, log level WARNING",
            "throughput": "topic filled before the worker starts; rate between the first "
            "samples past 10% and 90% stored, from the counts seen there (/metrics polled "
            f"every {METRICS_POLL_S} s)",
            "baseline": "bare insert_many of the same documents into a collection of the "
            "same database with the events indexes, just before the worker in each round: "
            "sequential (one call per store batch, the issue's reference) and pipelined (the "
            "worker's chunks and concurrency)",
            "rounds": "each round uses a fresh topic and database; reported rates are the "
            "medians over rounds, ratios are median worker over median baseline",
            "latency": "per round, a steady stream on a fresh topic and worker: stored is "
            "received_at (set by the producer) to the stored document's stored_at; projected is "
            "received_at to the first poll of the sessions projection (every "
            f"{PROJECTION_POLL_S * 1000:.0f} ms) that shows the event applied; medians over "
            "rounds",
            "store_stages": "worker's ca4_worker_store_stage_seconds over the steady stream: "
            "cycles, mean ms per cycle, share of the summed stage time (medians over rounds)",
            "cpu": "machine CPU from /proc/stat (every process: worker, database, Kafka, this "
            "bench), the worker's from /proc/<pid>/stat, the database's summed over its live "
            f"processes ({', '.join(sorted(DATABASE_PROCESSES))}); per stored event over the "
            "rate's window, and for the bare pipelined insert over the whole call",
            "cpus": os.cpu_count(),
            "worker_log": str(log_path),
        },
    }
    result["summary"] = (
        f"worker {worker:,.0f}/s = {result['worker_vs_bare_ratio']:.2f} of bare insert_many "
        f"(rounds {result['worker_vs_bare_ratio_per_round']}); at {LATENCY_RATE}/s stored p50 "
        f"{result['stored_latency_ms_p50']:.0f} ms p99 {result['stored_latency_ms_p99']:.0f} "
        f"ms, projected p50 {result['projected_latency_ms_p50']:.0f} ms p99 "
        f"{result['projected_latency_ms_p99']:.0f} ms"
    )
    _plot(results_dir / "worker.png", result, latencies)
    (results_dir / "worker.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _plot(path: Path, result: dict[str, Any], latencies: list[_Latencies]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    keys = [
        ("bare insert_many", "bare_insert_many_events_per_s", "grey"),
        ("bare, pipelined", "bare_pipelined_insert_many_events_per_s", "silver"),
        ("worker topic->store", "worker_topic_to_store_events_per_s", "tab:blue"),
    ]
    for position, (label, key, color) in enumerate(keys):
        left.bar(position, result[key], color=color, label=label)
        per_round = [item[key] for item in result["per_round"]]
        left.plot([position] * len(per_round), per_round, "k.", markersize=6)
    left.set_xticks(range(len(keys)), [label for label, _, _ in keys])
    left.set_ylabel("events/s (bars: median, dots: rounds)")
    left.set_title(
        f"Throughput: {result['worker_vs_bare_ratio']:.2f} of bare (goal "
        f"{GOALS['worker_vs_bare_ratio']:.2f}), "
        f"{result['worker_vs_pipelined_bare_ratio']:.2f} of pipelined (goal "
        f"{GOALS['worker_vs_pipelined_bare_ratio']:.2f})"
    )
    stored = [value for item in latencies for value in item.stored_ms]
    projected = [value for item in latencies for value in item.projected_ms]
    bins = 60
    right.hist(stored, bins=bins, color="tab:green", alpha=0.6, label="stored")
    right.hist(projected, bins=bins, color="tab:orange", alpha=0.6, label="projected")
    for kind, color in (("stored", "tab:green"), ("projected", "tab:orange")):
        goal = GOALS[f"{kind}_latency_ms_p99"]
        right.axvline(goal, color=color, linestyle="--", linewidth=1, label=f"{kind} goal p99")
    right.set_xlabel("received_at -> stored / projected (ms), all rounds")
    right.legend()
    right.set_title(
        f"At {LATENCY_RATE}/s: stored p50/p99 {result['stored_latency_ms_p50']:.0f}/"
        f"{result['stored_latency_ms_p99']:.0f} ms, projected "
        f"{result['projected_latency_ms_p50']:.0f}/{result['projected_latency_ms_p99']:.0f} ms"
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
