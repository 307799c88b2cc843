"""Every route dependency of both services runs on the event loop.

FastAPI runs a plain ``def`` dependency in its thread pool: each one a hand-off to a thread and
back, on every request before any check (the worker's accessors did, which made a refused read
cost far more than the refusal; docs/architecture.md, "Tenancy"), and under a flood of requests
they queue for the pool's threads.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import ca4_processor.api
import ca4_worker.api
import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute


def _routes(package: ModuleType) -> Iterator[APIRoute]:
    """The routes of every router the package's modules define (what ``create_app``
    includes)."""
    for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        for value in vars(importlib.import_module(module.name)).values():
            if isinstance(value, APIRouter):
                yield from (route for route in value.routes if isinstance(route, APIRoute))


def _calls(dependant: Any) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)


def _runs_on_the_loop(call: Any) -> bool:
    target = call if inspect.isroutine(call) else type(call).__call__
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


@pytest.mark.parametrize(
    "package", [ca4_worker.api, ca4_processor.api], ids=["worker", "processor"]
)
def test_no_route_resolves_a_dependency_in_the_thread_pool(package: ModuleType) -> None:
    routes = list(_routes(package))
    assert len(routes) >= 4
    in_threads = {
        f"{route.path}: {getattr(call, '__qualname__', call)}"
        for route in routes
        for call in _calls(route.dependant)
        if not _runs_on_the_loop(call)
    }
    assert in_threads == set()
