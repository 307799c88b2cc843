"""FastAPI dependencies: the worker's runtime objects, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from ca4_auth import ApiKey, ApiKeyRing, Scope
from ca4_auth.http import BearerCredentials, authorize
from fastapi import Depends, Request

from ca4_worker.application.ports import EventStore, Projections
from ca4_worker.core.config import Settings


@dataclass
class WorkerRuntime:
    """What the lifespan built and the routes read."""

    settings: Settings
    store: EventStore
    projections: Projections
    readiness: Callable[[], Awaitable[dict[str, bool]]]


def get_runtime(request: Request) -> WorkerRuntime:
    """The runtime the lifespan stored on the app."""
    runtime: WorkerRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[WorkerRuntime, Depends(get_runtime)]


def get_store(runtime: RuntimeDep) -> EventStore:
    """The event store."""
    return runtime.store


def get_projections(runtime: RuntimeDep) -> Projections:
    """The projections."""
    return runtime.projections


StoreDep = Annotated[EventStore, Depends(get_store)]
ProjectionsDep = Annotated[Projections, Depends(get_projections)]


async def authenticate_reader(request: Request, credentials: BearerCredentials) -> ApiKey:
    """The caller's key: ``401`` without a valid one, ``403`` without ``read`` or ``read:all``.

    The same key ring (file, reloads, constant-time compare) and the same ``401`` bodies as
    the processor's.
    """
    key_ring: ApiKeyRing = request.app.state.key_ring
    return authorize(key_ring, credentials, Scope.READ)


async def get_read_tenant(key: Annotated[ApiKey, Depends(authenticate_reader)]) -> str | None:
    """The tenant every read is confined to; ``None`` for a ``read:all`` key."""
    return key.read_tenant


ReadTenantDep = Annotated[str | None, Depends(get_read_tenant)]
"""The tenant a read is confined to (``None``: every tenant). Every read route takes it, and
every query the routes make passes it to the database."""
