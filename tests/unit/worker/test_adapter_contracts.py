"""The in-memory adapters pass the same contracts as the MongoDB ones."""

from __future__ import annotations

import pytest
from ca4_worker.persistence.memory import InMemoryEventStore, InMemoryProjections

from tests.unit.worker.contracts import EventStoreContract, ProjectionsContract


class TestInMemoryEventStore(EventStoreContract):
    @pytest.fixture
    def store(self) -> InMemoryEventStore:
        return InMemoryEventStore()


class TestInMemoryProjections(ProjectionsContract):
    @pytest.fixture
    def projections(self) -> InMemoryProjections:
        return InMemoryProjections()
