"""Session-wide fixtures: real service endpoints and per-test isolated names."""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.devstack import DevstackControl
from tests.support.services import Endpoints, endpoints

pytest_plugins = ["tests.support.stand_ins"]


@pytest.fixture(autouse=True)
def collector_unfrozen() -> Iterator[None]:
    """Unfreeze what a test's worker code froze (``ca4_worker.core.gc_pause``), so one test's
    garbage cycles are not kept out of collection for the rest of the run."""
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def services() -> Endpoints:
    """The real Kafka, MongoDB-compatible database and S3 endpoints (fails loudly if absent)."""
    return endpoints()


@pytest.fixture
def unique_suffix() -> str:
    """A short random suffix so each test gets its own topic, database and bucket names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def topic_name(unique_suffix: str) -> str:
    """A Kafka topic name no other test uses."""
    return f"test-gpu-metadata-{unique_suffix}"


@pytest.fixture
def database_name(unique_suffix: str) -> str:
    """A database name no other test uses."""
    return f"test_ca4_{unique_suffix}"


@pytest.fixture
def bucket_name(unique_suffix: str) -> str:
    """An S3 bucket name no other test uses."""
    return f"test-ca4-{unique_suffix}"


@pytest.fixture
async def devstack(services: Endpoints) -> AsyncIterator[DevstackControl]:
    """Stop and start dev stack services (mark the test ``disruptive``); always restarts them."""
    control = DevstackControl()
    try:
        yield control
    finally:
        await control.restore()
