"""The worker's readiness against a database that stops answering mid-call (a proxy in front of
the dev stack's that freezes)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from ca4_worker.bootstrap import bootstrap
from ca4_worker.core.config import Settings

from tests.support.proxy import proxy_to
from tests.support.services import Endpoints

pytestmark = [pytest.mark.mongo]

VALUES = Path(__file__).resolve().parents[3] / "infra/helm/ca4-app/values.yaml"


async def test_readiness_answers_not_ready_before_the_probe_gives_up_on_a_frozen_database(
    services: Endpoints, database_name: str
) -> None:
    """The ping had no deadline of its own: it waited until pymongo's monitor gave the server
    up (5.5 s, its connect timeout), so ``/readyz`` answered after the kubelet had given up."""
    probe_s = yaml.safe_load(VALUES.read_text())["worker"]["readinessProbe"]["timeoutSeconds"]
    async with proxy_to(services.mongo_url) as proxy:
        settings = Settings(
            mongo_url=f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true",
            mongo_db=database_name,
            consumers_enabled=False,
        )
        async with bootstrap(settings, dead_letters=False, archive=False) as adapters:
            assert await adapters.database_ok()
            proxy.freeze()
            started = time.monotonic()
            ready = await adapters.database_ok()
            took = time.monotonic() - started
            await proxy.cut()  # the client's close does not wait on the frozen connections

    assert not ready
    assert took < probe_s, f"answered after {took:.1f}s; the probe gives up after {probe_s}s"
