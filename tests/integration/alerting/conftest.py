"""Alertmanager built from the dev stack's pin, a local webhook receiver, and nothing shared:
these tests start their own processes on free ports and never touch the shared dev stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.conftest import helm  # noqa: F401 - the session fixture, for rendered configs
from tests.support.alerting import WebhookReceiver, alertmanager_programs


@pytest.fixture(scope="session")
def alertmanager_bin() -> Path:
    """``bin`` with ``alertmanager`` and ``amtool`` (built into the dev stack cache once)."""
    return alertmanager_programs()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A local receiver recording every notification."""
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()
