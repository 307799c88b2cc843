"""ASGI entry point: ``uvicorn ca4_worker.main:app``.

One process serves the read API and runs the Kafka consumers; the FastAPI lifespan starts and
stops them together (store stage, projection stage, archive consumer, lag monitor). With
``CA4_CONSUMERS_ENABLED=false`` it serves the read API alone (the chart's reader).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from ca4_auth import ApiKeyRing, RelativeRedirects
from ca4_schemas import LEGACY_TENANT
from ca4_telemetry import configure_logging, configure_tracing
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from prometheus_fastapi_instrumentator import Instrumentator

from ca4_worker.api.deps import WorkerRuntime
from ca4_worker.api.read_budget import ReadBudget
from ca4_worker.api.read_slots import ReadSlots
from ca4_worker.api.routes import DATABASE_RETRY_AFTER_S, events, gpus, health, sessions, usage
from ca4_worker.application.archiver import Archiver
from ca4_worker.application.ports import TimedOutError, UnavailableError
from ca4_worker.application.projector import ProjectionService, StoreHandoff
from ca4_worker.application.retry import until_available
from ca4_worker.bootstrap import AdapterFactory, WorkerAdapters, bootstrap, store_stage
from ca4_worker.core import metrics
from ca4_worker.core.config import Settings, get_settings
from ca4_worker.core.version import WORKER_VERSION
from ca4_worker.messaging.archive_consumer import ArchiveConsumer
from ca4_worker.messaging.lag import LagMonitor
from ca4_worker.messaging.stages import projection_consumer, store_consumer
from ca4_worker.messaging.store_progress import StoreWatermark

SERVICE_NAME = "ca4-worker"


async def _sweep_gpu_gauges(gauges: metrics.GpuGauges, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        gauges.sweep()


def _in_background(stack: AsyncExitStack, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` until ``stack`` closes, then cancel it."""
    task = asyncio.create_task(work)

    async def _cancel() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(_cancel)


async def _start_consumers(
    stack: AsyncExitStack, settings: Settings, adapters: WorkerAdapters, key_ring: ApiKeyRing
) -> Callable[[], dict[str, bool]]:
    """Start the store and projection stages, the archive consumer and the lag monitor until
    ``stack`` closes; what they report to readiness."""

    def known_tenants() -> frozenset[str]:
        # The keys' tenants (re-read with the keys file) and pre-tenancy events' owner.
        return key_ring.tenants | {LEGACY_TENANT}

    if adapters.dead_letters is None:
        raise RuntimeError("the store and projection stages need a dead-letter sink")
    gauges = metrics.GpuGauges(
        ttl_s=settings.gpu_series_ttl_s,
        max_series=settings.gpu_series_max,
        max_series_per_tenant=settings.gpu_series_max_per_tenant,
    )
    watermark = StoreWatermark(
        store_group=settings.kafka_store_group,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        poll_s=settings.store_progress_poll_s,
    )
    await watermark.start()
    stack.push_async_callback(watermark.stop)
    ingest = store_stage(
        settings,
        adapters,
        dead_letters=adapters.dead_letters,
        known_tenants=known_tenants,
        consumer_group=settings.kafka_store_group,
    )
    if not settings.projection_enabled:
        stages = [store_consumer(settings, ingest, watermark)]
    else:
        # Room for one store batch and a projection round's worth before it: the projection
        # stage takes decisions as soon as the store has handled them.
        handoff = StoreHandoff(
            max_bytes=settings.store_max_bytes,
            max_positions=settings.store_max_records + settings.projection_max_records,
        )
        projector = ProjectionService(
            store=adapters.store,
            projections=adapters.projections,
            dead_letters=adapters.dead_letters,
            progress=watermark,
            handoff=handoff,
            gpu_gauges=gauges,
            max_backoff_s=settings.retry_max_backoff_s,
            max_attempts=settings.store_max_attempts,
            known_tenants=known_tenants,
        )
        projection = projection_consumer(settings, projector, watermark)
        handoff.projected = projection.assigned_partitions
        stages = [store_consumer(settings, ingest, watermark, handoff), projection]
    # Stopped in reverse: the projection stage first, since it waits on the store's progress.
    for stage in stages:
        await stage.start()
        stack.push_async_callback(stage.stop)

    archive: ArchiveConsumer | None = None
    objects = adapters.objects
    if objects is not None:
        archive = ArchiveConsumer(
            Archiver(
                objects,
                prefix=settings.archive_prefix,
                max_records=settings.archive_max_records,
                max_bytes=settings.archive_max_bytes,
                max_age_s=settings.archive_max_age_s,
                max_backoff_s=settings.retry_max_backoff_s,
            ),
            bootstrap_servers=settings.kafka_bootstrap_servers,
            topic=settings.kafka_topic,
            group_id=settings.kafka_archive_group,
            before_start=lambda: until_available(
                objects.ensure_bucket,
                what="ensure archive bucket",
                max_backoff_s=settings.retry_max_backoff_s,
            ),
        )
        await archive.start()
        stack.push_async_callback(archive.stop)

    lag = LagMonitor(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=settings.kafka_topic,
        store_group=settings.kafka_store_group,
        project_group=settings.kafka_project_group,
        archive_group=settings.kafka_archive_group if archive is not None else None,
        interval_s=settings.lag_poll_interval_s,
    )
    await lag.start()
    stack.push_async_callback(lag.stop)
    _in_background(stack, _sweep_gpu_gauges(gauges, settings.lag_poll_interval_s))

    def running() -> dict[str, bool]:
        checks = {f"{stage.name}_consumer": stage.running for stage in stages}
        if archive is not None:
            checks["archive_consumer"] = archive.running
        return checks

    return running


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Build the adapters, start the consumers, stop them on shutdown."""
    settings: Settings = app.state.settings
    configure_logging(SERVICE_NAME, settings.log_level)
    configure_tracing(SERVICE_NAME, settings.otel_exporter, settings.otel_endpoint)
    factory: AdapterFactory = app.state.adapters
    async with AsyncExitStack() as stack:
        adapters = await stack.enter_async_context(factory(settings))
        consumers: Callable[[], dict[str, bool]] = dict
        key_ring: ApiKeyRing = app.state.key_ring
        if settings.consumers_enabled:
            consumers = await _start_consumers(stack, settings, adapters, key_ring)
        _in_background(stack, key_ring.reload_forever(settings.api_keys_reload_interval_s))

        async def readiness() -> dict[str, bool]:
            return {"database": await adapters.database_ok(), **consumers()}

        app.state.usage = adapters.usage
        app.state.runtime = WorkerRuntime(
            settings=settings,
            store=adapters.store,
            projections=adapters.projections,
            readiness=readiness,
        )
        yield


def create_app(
    settings: Settings | None = None,
    *,
    adapters: AdapterFactory = bootstrap,
    kafka_consumers: bool | None = None,
) -> FastAPI:
    """The worker app for ``settings`` (tests pass their own topic, database and bucket).

    ``adapters`` builds what the app talks to (tests pass the in-memory fakes);
    ``kafka_consumers=False`` serves the read API alone (default: ``consumers_enabled``, which
    it sets, so the adapters built for the app follow it too).
    """
    settings = settings or get_settings()
    if kafka_consumers is not None:
        settings = settings.model_copy(update={"consumers_enabled": kafka_consumers})
    app = FastAPI(
        title="CA4 worker",
        summary="Event store, projections, dead letters, S3 archive and read API.",
        description="Read API: send `Authorization: Bearer <key>` with the keys the processor "
        "accepts. A `read` key sees its own tenant's sessions, GPUs and events, a `read:all` "
        "key every tenant's; another tenant's resource answers exactly like a missing one.",
        version=WORKER_VERSION,
        lifespan=lifespan,
    )
    app.add_middleware(RelativeRedirects)
    app.state.settings = settings
    app.state.adapters = adapters
    # Built here, not in the lifespan, so a key problem fails at start-up and tests that
    # drive the routes without the lifespan still authenticate.
    app.state.key_ring = ApiKeyRing.configured(
        environment=settings.environment,
        inline_hashes=settings.api_key_hashes,
        keys_file=settings.api_keys_file,
    )
    app.state.read_slots = ReadSlots(
        per_tenant=settings.read_max_in_flight_per_tenant,
        total=settings.read_max_in_flight,
        max_waiting=settings.read_max_waiting_per_tenant,
        max_waiting_total=settings.read_max_waiting,
        wait_s=settings.read_timeout_s,
    )
    app.state.read_budget = ReadBudget(
        rate=settings.read_budget_per_tenant, burst=settings.read_budget_burst_s
    )
    app.state.usage_slots = ReadSlots(
        per_tenant=settings.usage_max_reports_in_flight_per_tenant,
        total=settings.usage_max_reports_in_flight,
        max_waiting=settings.usage_max_reports_waiting_per_tenant,
        max_waiting_total=settings.usage_max_reports_waiting,
        # At most half the deadline waiting, so a report that got its turn has the other half
        # at least to run.
        wait_s=settings.usage_report_timeout_s / 2,
        what="usage reports",
    )
    for router in (health.router, sessions.router, gpus.router, events.router, usage.router):
        app.include_router(router)
    app.add_exception_handler(UnavailableError, _database_unavailable)
    app.add_exception_handler(TimedOutError, _database_unavailable)
    # Request counts and latencies of the read API (ca4_http_*), in a registry per app (the
    # instrumentator skips metrics already in a registry, so tests building several apps would
    # otherwise count nothing); /metrics exposes it next to the process-wide one.
    app.state.http_registry = CollectorRegistry()
    Instrumentator(
        registry=app.state.http_registry, excluded_handlers=["/metrics", "/healthz", "/readyz"]
    ).instrument(app, metric_namespace="ca4")
    return app


async def _database_unavailable(request: Request, error: Exception) -> JSONResponse:
    """A read the database did not answer in time, or at all: ``503``, try again soon."""
    settings: Settings = request.app.state.settings
    reason = (
        f"did not answer within {settings.read_timeout_s:g} s"
        if isinstance(error, TimedOutError)
        else "is unreachable"
    )
    return JSONResponse(
        {"detail": f"the database {reason}; retry after the Retry-After seconds"},
        status_code=503,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


app = create_app()
