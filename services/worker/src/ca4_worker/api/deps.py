"""FastAPI dependencies: the worker's runtime objects, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from ca4_auth import ApiKey, ApiKeyRing, Scope
from ca4_auth.http import BearerCredentials, authorize, retry_after_header
from fastapi import Depends, HTTPException, Request, status

from ca4_worker.api.read_budget import ReadBudget
from ca4_worker.api.read_slots import ReadRefusedError, ReadSlots, owner_name, slot_owner
from ca4_worker.application.ports import (
    EventStore,
    Projections,
    TimedOutError,
    UnavailableError,
)
from ca4_worker.core.config import Settings


@dataclass
class WorkerRuntime:
    """What the lifespan built and the routes read."""

    settings: Settings
    store: EventStore
    projections: Projections
    readiness: Callable[[], Awaitable[dict[str, bool]]]


async def get_runtime(request: Request) -> WorkerRuntime:
    """The runtime the lifespan stored on the app."""
    runtime: WorkerRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[WorkerRuntime, Depends(get_runtime)]


async def get_store(runtime: RuntimeDep) -> EventStore:
    """The event store."""
    return runtime.store


async def get_projections(runtime: RuntimeDep) -> Projections:
    """The projections."""
    return runtime.projections


StoreDep = Annotated[EventStore, Depends(get_store)]
ProjectionsDep = Annotated[Projections, Depends(get_projections)]


async def get_settings(runtime: RuntimeDep) -> Settings:
    """The settings the app was built with."""
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def authenticate_reader(
    request: Request, credentials: BearerCredentials
) -> AsyncIterator[ApiKey]:
    """The caller's key: ``401`` without a valid one, ``403`` without ``read`` or ``read:all``;
    a read over ``read_max_in_flight_per_tenant`` of the tenant it reads or
    ``read_max_in_flight`` of the process waits its turn (up to ``read_timeout_s``), and
    ``429`` when it got none, the tenant already has ``read_max_waiting_per_tenant`` reads
    waiting, or it has spent its read time (:class:`~ca4_worker.api.read_budget.ReadBudget`).

    The same key ring (file, reloads, constant-time compare) and the same ``401`` bodies as
    the processor's. A read holds its slot until its response is sent, so what it holds in
    memory (its page, its JSON) is counted while it is alive. Slots are the tenant's, not the
    key's: a tenant's many keys share them (:func:`~ca4_worker.api.read_slots.slot_owner`).
    """
    key_ring: ApiKeyRing = request.app.state.key_ring
    slots: ReadSlots = request.app.state.read_slots
    budget: ReadBudget = request.app.state.read_budget
    key = authorize(key_ring, credentials, Scope.READ)
    owner = slot_owner(key.read_tenant)
    if (wait_s := budget.wait_for(owner)) > 0:
        raise _budget_spent(budget, owner, wait_s)
    try:
        await slots.enter(owner)
    except ReadRefusedError as error:
        raise too_many_in_flight(str(error)) from error
    if (wait_s := budget.wait_for(owner)) > 0:  # spent by reads let in while this one waited
        await slots.leave(owner)
        raise _budget_spent(budget, owner, wait_s)
    started = budget.now()
    charged = True
    try:
        yield key
    except UnavailableError as error:
        # The database was down: nobody's read. A read past its deadline (TimedOutError) is
        # paid: a scan that runs to the deadline is what the budget is for.
        charged = isinstance(error, TimedOutError)
        raise
    finally:
        if charged:
            waited_s: float = getattr(request.state, READ_WAITED_S, 0.0)
            budget.charge(owner, max(0.0, budget.now() - started - waited_s))
        await slots.leave(owner)


READ_WAITED_S = "read_waited_s"
"""``request.state`` attribute where a route notes seconds its read waited for other tenants
(a usage report's turn for a usage slot), which its tenant's read budget does not pay."""


def _budget_spent(budget: ReadBudget, owner: str, wait_s: float) -> HTTPException:
    budget.refuse(owner)
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        f"{owner_name(owner)} has spent its read time in this worker "
        f"(CA4_READ_BUDGET_PER_TENANT: {budget.rate:g} s of reads per second, "
        f"{budget.burst:g} s at once); retry after the Retry-After seconds",
        headers={"Retry-After": retry_after_header(wait_s)},
    )


def too_many_in_flight(what: str) -> HTTPException:
    """``429`` for a cap on what is in flight: ``what`` names the cap; retry in a second."""
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        f"{what}; retry after the Retry-After seconds",
        headers={"Retry-After": "1"},
    )


async def get_read_tenant(key: Annotated[ApiKey, Depends(authenticate_reader)]) -> str | None:
    """The tenant every read is confined to; ``None`` for a ``read:all`` key."""
    return key.read_tenant


ReadTenantDep = Annotated[str | None, Depends(get_read_tenant)]
"""The tenant a read is confined to (``None``: every tenant). Every read route takes it, and
every query the routes make passes it to the database."""
