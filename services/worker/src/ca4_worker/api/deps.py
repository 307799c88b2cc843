"""FastAPI dependencies: the worker's runtime objects, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

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
