"""ASGI entry point: ``uvicorn ca4_processor.main:app``.

Behind ngrok or an ingress, run uvicorn with ``--proxy-headers --forwarded-allow-ips=<proxy>``
or set ``CA4_FORWARDED_ALLOW_IPS``: the app then honours ``X-Forwarded-For``/``-Proto`` from
those proxies only, so client addresses in logs and redirects are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog
from ca4_auth import ApiKeyRing, InFlight, RelativeRedirects
from ca4_schemas import GpuMetadataReport
from ca4_schemas.api import BatchRequest
from ca4_telemetry import configure_logging, configure_tracing
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic.json_schema import models_json_schema
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

import ca4_processor
from ca4_processor.api.routes import health, metadata, reads, sdk
from ca4_processor.asyncapi import asyncapi_router
from ca4_processor.core.config import Settings, get_settings
from ca4_processor.examples import COLAB_T4_REPORT, CPU_RUNTIME_REPORT, with_fresh_example_ids
from ca4_processor.metrics import IngestMetrics
from ca4_processor.ownership import MongoSessionClaims, SessionOwners
from ca4_processor.publishing import EventPublisher, KafkaEventPublisher
from ca4_processor.security import RateLimits

log = structlog.get_logger(__name__)
SERVICE_NAME = "ca4-processor"
_UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_tracing_configured = False


def _configure_observability(settings: Settings) -> None:
    global _tracing_configured  # noqa: PLW0603 - OpenTelemetry allows one provider per process
    configure_logging(SERVICE_NAME, settings.LOG_LEVEL)
    if not _tracing_configured:
        configure_tracing(SERVICE_NAME, settings.OTEL_EXPORTER, settings.OTEL_ENDPOINT)
        _tracing_configured = True


def create_app(settings: Settings | None = None) -> FastAPI:
    """The processor: the HTTP API publishing on its own Kafka producer.

    The producer is connected in the app's lifespan, before the first request is served:
    start-up fails while Kafka is unreachable, so an orchestrator restarts the pod instead of
    keeping a replica that can never publish. Shutdown flushes what is still in flight.
    """
    settings = settings or get_settings()
    metrics = IngestMetrics.create()
    publisher = KafkaEventPublisher(settings, latency=metrics.publish_latency)
    session_owners = SessionOwners(
        MongoSessionClaims(
            settings.MONGO_URL,
            database=settings.MONGO_DB,
            timeout_s=settings.SESSION_OWNER_TIMEOUT_S,
        ),
        timeout_s=settings.SESSION_OWNER_TIMEOUT_S,
        cache_size=settings.SESSION_OWNER_CACHE_SIZE,
    )
    return create_api(
        settings,
        publisher=publisher,
        session_owners=session_owners,
        metrics=metrics,
        connect=publisher.connected,
    )


def create_api(
    settings: Settings,
    *,
    publisher: EventPublisher,
    session_owners: SessionOwners,
    metrics: IngestMetrics | None = None,
    connect: Callable[[], contextlib.AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """The HTTP API over any :class:`EventPublisher` and session claims (unit tests pass fakes).

    ``connect`` opens what the publisher needs (the Kafka clients) for the app's lifetime.
    """
    _configure_observability(settings)
    key_ring = ApiKeyRing.configured(
        environment=settings.ENVIRONMENT,
        inline_hashes=settings.API_KEY_HASHES,
        keys_file=settings.API_KEYS_FILE,
    )
    metrics = metrics or IngestMetrics.create()
    if (needed := settings.burst_short_of) is not None:
        log.warning(
            "rate limit burst cannot pay for the largest report: reports of that many GPUs "
            "will be 413",
            burst=settings.RATE_LIMIT_BURST,
            largest_report_tokens=needed,
            fix="raise CA4_RATE_LIMIT_BURST or CA4_RATE_LIMIT_GPUS_PER_TOKEN",
        )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(session_owners.close)
            if connect is not None:
                await stack.enter_async_context(connect())
            reloader = asyncio.create_task(
                key_ring.reload_forever(settings.API_KEYS_RELOAD_INTERVAL_S)
            )
            try:
                yield
            finally:
                reloader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reloader

    app = FastAPI(
        title="CA4 processor",
        version=ca4_processor.__version__,
        description="Edge API: authenticates, validates and publishes GPU metadata reports to "
        "Kafka. Send `Authorization: Bearer <key>`; bodies may be gzip-compressed. A report is "
        "accepted (`202`) only once Kafka has acknowledged it.",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry: a server span per request, continuing the caller's
        # traceparent. Per-dependency spans and OTel metrics are off: Prometheus has the
        # metrics, and the hot path stays cheap.
        telemetry={
            "operation_spans": False,
            "metrics": False,
            "exclude": lambda scope: scope.get("path") in _UNTRACED_PATHS,
        },
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.key_ring = key_ring
    app.state.publisher = publisher
    app.state.session_owners = session_owners
    app.state.rate_limits = RateLimits.create(
        rate=settings.RATE_LIMIT_PER_SECOND,
        burst=settings.RATE_LIMIT_BURST,
        tenant_keys=settings.RATE_LIMIT_TENANT_KEYS,
        new_sessions_rate=settings.RATE_LIMIT_NEW_SESSIONS_PER_SECOND,
        new_sessions_burst=settings.RATE_LIMIT_NEW_SESSIONS_BURST,
    )
    app.state.in_flight = InFlight()
    app.state.waiting = InFlight()
    app.include_router(health.router)
    app.include_router(metadata.router)
    app.include_router(metadata.legacy_router)
    app.include_router(asyncapi_router(settings))
    app.include_router(sdk.router)
    app.include_router(reads.router)
    Instrumentator(
        registry=metrics.registry,
        excluded_handlers=["/metrics", "/healthz", "/readyz"],
    ).instrument(app, metric_namespace="ca4").expose(app, include_in_schema=False)
    app.add_middleware(RelativeRedirects)
    if settings.FORWARDED_ALLOW_IPS:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.FORWARDED_ALLOW_IPS)
    openapi_json = functools.cache(lambda: json.dumps(_openapi_with_request_bodies(app)))
    app.openapi = lambda: json.loads(  # type: ignore[method-assign]
        with_fresh_example_ids(openapi_json())
    )
    return app


def _openapi_with_request_bodies(app: FastAPI) -> dict[str, Any]:
    """OpenAPI with the request bodies the routes read themselves (to cap and stream them)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    _, definitions = models_json_schema(
        [(GpuMetadataReport, "validation"), (BatchRequest, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    schema.setdefault("components", {}).setdefault("schemas", {}).update(
        definitions.get("$defs", {})
    )
    single_report_examples = {
        "colab_t4": {"summary": "Colab T4 session", "value": COLAB_T4_REPORT},
        "cpu_runtime": {"summary": "CPU-only runtime", "value": CPU_RUNTIME_REPORT},
    }
    bodies = {
        ("/v1/metadata", GpuMetadataReport.__name__): single_report_examples,
        ("/metadata", GpuMetadataReport.__name__): single_report_examples,
        ("/v1/metadata/batch", BatchRequest.__name__): {
            "two_reports": {
                "summary": "Two reports",
                "value": {"reports": [COLAB_T4_REPORT, CPU_RUNTIME_REPORT]},
            }
        },
    }
    for (path, model_name), examples in bodies.items():
        schema["paths"][path]["post"]["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{model_name}"},
                    "examples": examples,
                }
            },
        }
    app.openapi_schema = schema
    return schema


app = create_app()
