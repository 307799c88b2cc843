"""The worker's composition seam: every adapter (database, Kafka dead letters, S3) is built
here, for the service (:mod:`ca4_worker.main`), the operator commands (:mod:`ca4_worker.cli`)
and the bench alike; tests build the same container from the in-memory fakes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import pymongo
import structlog
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from ca4_worker.application.ingest import IngestService
from ca4_worker.application.ports import (
    DeadLetterSink,
    EventStore,
    ObjectStore,
    Projections,
    SessionClaims,
)
from ca4_worker.application.retry import until_available
from ca4_worker.application.usage import ProjectionsWithUsage, UsageProjection
from ca4_worker.core.config import Settings
from ca4_worker.core.version import WORKER_VERSION
from ca4_worker.domain.usage import UsageRules
from ca4_worker.messaging.dead_letters import KafkaDeadLetterSink, kafka_producer
from ca4_worker.persistence.claims import claim_pre_tenancy_sessions, claim_sessions
from ca4_worker.persistence.database import connect, init_database
from ca4_worker.persistence.documents import Doc
from ca4_worker.persistence.events import MongoEventStore
from ca4_worker.persistence.memory import (
    InMemoryDeadLetters,
    InMemoryEventStore,
    InMemoryObjectStore,
    InMemoryProjections,
)
from ca4_worker.persistence.projections import MongoProjections
from ca4_worker.persistence.redrives import MongoRedriveLog
from ca4_worker.persistence.s3 import S3ObjectStore
from ca4_worker.persistence.usage_memory import InMemoryUsageRecords
from ca4_worker.persistence.usage_mongo import with_usage

ResultT = TypeVar("ResultT")
log = structlog.get_logger(__name__)


@dataclass
class WorkerAdapters:
    """What the worker talks to, behind the application's ports."""

    store: EventStore
    projections: Projections
    database_ok: Callable[[], Awaitable[bool]]
    """Whether the database answers (readiness)."""
    dead_letters: DeadLetterSink | None = None
    """Built only when asked for (the service; not the read-only commands)."""
    objects: ObjectStore | None = None
    """The archive bucket, when asked for."""
    database: AsyncDatabase[Doc] | None = None
    """The real database, for what only it has (re-drive records, the bench's baselines)."""
    usage: UsageProjection | None = None
    """GPU usage accounting (inside ``projections`` too), or ``None`` when it is off."""
    session_claims: SessionClaims | None = None
    """Claims stored sessions for their owners in the processor's session claims (the service
    and ``ca4 replay --store-events``: see :mod:`ca4_worker.persistence.claims`)."""

    @property
    def redrives(self) -> MongoRedriveLog:
        """The re-drive records (the database's ``dead_letter_redrives``)."""
        if self.database is None:
            raise RuntimeError("re-drive records need the real database")
        return MongoRedriveLog(self.database)


AdapterFactory = Callable[[Settings], AbstractAsyncContextManager[WorkerAdapters]]
"""How the service gets its adapters: :func:`bootstrap`, or a test's fakes."""


@asynccontextmanager
async def bootstrap(
    settings: Settings,
    *,
    dead_letters: bool | None = None,
    archive: bool | None = None,
    claims: bool | None = None,
    patient: bool = True,
) -> AsyncIterator[WorkerAdapters]:
    """The real adapters for ``settings``, closed on exit.

    ``dead_letters`` (the Kafka producer) defaults to ``settings.consumers_enabled``,
    ``claims`` (the session claims the store stage writes) to ``dead_letters``, and ``archive``
    (the bucket) to ``settings.archive_enabled`` as well: the read API alone reaches the
    database only (the chart's reader may reach nothing else). ``patient`` (the service) waits
    out an unavailable database; the operator commands fail at once with the cause instead.
    """
    if dead_letters is None:
        dead_letters = settings.consumers_enabled
    if claims is None:
        claims = dead_letters
    if archive is None:
        archive = settings.archive_enabled and settings.consumers_enabled
    async with AsyncExitStack() as stack:

        async def ready(operation: Callable[[], Awaitable[ResultT]], what: str) -> ResultT:
            if not patient:
                return await operation()
            return await until_available(
                operation, what=what, max_backoff_s=settings.retry_max_backoff_s
            )

        client = connect(settings.mongo_url, timeout_ms=settings.mongo_timeout_ms)
        stack.push_async_callback(client.close)
        database = client[settings.mongo_db]
        await ready(
            lambda: init_database(database, build_deadline_s=settings.index_build_timeout_s),
            "initialise database",
        )

        async def database_ok() -> bool:
            try:
                with pymongo.timeout(settings.readiness_timeout_s):
                    await database.command("ping")
            except PyMongoError:
                return False
            return True

        projections, usage = await with_usage(
            MongoProjections(
                database,
                limits=settings.projection_limits(),
                read_deadline_s=settings.read_timeout_s,
            ),
            database,
            settings,
        )
        adapters = WorkerAdapters(
            store=MongoEventStore(
                database,
                topic=settings.kafka_topic,
                deadline_s=settings.mongo_operation_timeout_ms / 1000,
                read_deadline_s=settings.read_timeout_s,
            ),
            projections=projections,
            database_ok=database_ok,
            database=database,
            usage=usage,
        )
        if claims:
            claimed = await ready(
                lambda: claim_pre_tenancy_sessions(
                    database, deadline_s=settings.mongo_operation_timeout_ms / 1000
                ),
                "claim pre-tenancy sessions",
            )
            if claimed is not None:
                log.info("pre-tenancy sessions claimed", sessions=claimed)
            adapters.session_claims = partial(
                claim_sessions,
                database,
                deadline_s=settings.mongo_operation_timeout_ms / 1000,
            )
        if dead_letters:
            producer = kafka_producer(settings.kafka_bootstrap_servers)
            await producer.start()
            stack.push_async_callback(producer.stop)
            adapters.dead_letters = KafkaDeadLetterSink(
                producer, topic=settings.kafka_dlq_topic, worker_version=WORKER_VERSION
            )
        if archive:
            objects = await stack.enter_async_context(S3ObjectStore.from_settings(settings))
            adapters.objects = objects
        yield adapters


def store_stage(
    settings: Settings,
    adapters: WorkerAdapters,
    *,
    dead_letters: DeadLetterSink,
    known_tenants: Callable[[], Collection[str]] = frozenset,
    consumer_group: str | None = None,
) -> IngestService:
    """The store stage over ``adapters``: the service's, and ``ca4 replay --store-events``'s."""
    return IngestService(
        store=adapters.store,
        projections=adapters.projections,
        dead_letters=dead_letters,
        session_claims=adapters.session_claims,
        max_backoff_s=settings.retry_max_backoff_s,
        consumer_group=consumer_group,
        insert_chunk=settings.store_insert_chunk,
        insert_concurrency=settings.store_insert_concurrency,
        max_attempts=settings.store_max_attempts,
        known_tenants=known_tenants,
    )


def in_memory_adapters(usage: UsageRules | None = None) -> WorkerAdapters:
    """The same container from the in-memory fakes (unit tests); with usage accounting under
    the ``usage`` rules when given."""
    projections = InMemoryProjections()
    accounting = UsageProjection(InMemoryUsageRecords(), rules=usage) if usage else None

    async def database_ok() -> bool:
        return not projections.outage.down

    return WorkerAdapters(
        store=InMemoryEventStore(),
        projections=ProjectionsWithUsage(projections, accounting) if accounting else projections,
        database_ok=database_ok,
        dead_letters=InMemoryDeadLetters(),
        objects=InMemoryObjectStore(),
        usage=accounting,
    )
