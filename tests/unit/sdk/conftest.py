"""Fixtures for the SDK unit tests."""

from __future__ import annotations

import pytest
from ca4_sdk import reporter as reporter_module

from tests.unit.sdk.reporter_support import FakeAtexit


@pytest.fixture
def fake_atexit(monkeypatch: pytest.MonkeyPatch) -> FakeAtexit:
    """Replace the reporter module's ``atexit`` with a :class:`FakeAtexit`: the test sees what
    the reporter registers, and nothing of it runs when pytest itself exits."""
    fake = FakeAtexit()
    monkeypatch.setattr(reporter_module, "atexit", fake)
    # The reporters whose exit flush is due, this test's only: the exit hook that pytest's own
    # exit may run never flushes them.
    monkeypatch.setattr(reporter_module._registry, "exit_due", {})
    return fake
