"""The prod ca4-app's processor, worker and reader, started from the rendered Deployments."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from ca4_auth.http import INVALID_KEY
from ca4_auth.keys import DEV_API_KEY
from pymongo import AsyncMongoClient

from tests.deploy import tier
from tests.deploy.cluster import find
from tests.deploy.conftest import App
from tests.support.reports import make_report
from tests.support.services import Endpoints

pytestmark = [pytest.mark.deploy, pytest.mark.slow]


async def eventually(check: Callable[[], Awaitable[Any]], within_s: float, what: str) -> Any:
    """Poll until ``check`` returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        found = await check()
        if found:
            return found
        assert loop.time() < deadline, f"not {what} within {within_s}s"
        await asyncio.sleep(0.5)


async def test_processor_worker_and_reader_become_ready(app: App) -> None:
    """Every readinessProbe (as rendered) passes, and every pod runs as prod. The reader checks
    the database alone: its consumers never started."""
    checks = {}
    async with httpx.AsyncClient(timeout=5) as http:
        for pod in (app.processor, app.worker, app.reader):
            probe = pod.container["readinessProbe"]["httpGet"]["path"]
            response = await http.get(app.url(pod, probe))
            assert response.status_code == 200, response.text
            checks[pod.name] = response.json().get("checks", {})
    assert "store_consumer" in checks[app.worker.name]
    assert checks[app.reader.name] == {"database": True}
    for pod in (app.processor, app.worker, app.reader):
        env = app.cluster.env(pod, await app.cluster.images.resolve(pod.container["image"]))
        assert env["CA4_ENVIRONMENT"] == "prod"
        assert env["CA4_API_KEYS_FILE"] == "/etc/ca4/keys/api-keys"
    tier.passed("processor (Deployment, prod)")


async def test_helm_test_asks_every_app_service_for_readyz(app: App) -> None:
    """``helm test ca4-app``: the rendered hook pod's own script, through the Services' names and
    port 80, as the operator's guide runs it after an install."""
    hook = find(app.cluster.docs, "Pod", "ca4-app-test-readyz")
    pod = await app.cluster.run_pod(hook, within_s=90)
    answered = [line for line in pod.log.read_text().splitlines() if " <- " in line]
    assert [line.split(" <- ")[1] for line in answered] == [
        f"http://ca4-app-{component}:80/readyz" for component in ("processor", "worker", "reader")
    ]
    assert all(line.startswith('{"status":"ready"') for line in answered), answered
    tier.passed("helm test ca4-app (hook pod)")


async def test_dev_key_is_refused_under_prod_values(app: App) -> None:
    """The public dev key gets 401, the real one 202."""
    async with httpx.AsyncClient(timeout=10) as http:
        refused = await http.post(
            app.url(app.processor, "/v1/metadata"),
            json=make_report(session_id="deploy-tier-dev-key"),
            headers={"Authorization": f"Bearer {DEV_API_KEY}"},
        )
    assert refused.status_code == 401
    assert refused.json() == {"detail": INVALID_KEY}


async def test_report_with_a_real_key_is_stored_projected_and_archived(
    app: App, services: Endpoints
) -> None:
    """POST through the processor pod; the worker pod stores, projects and archives it; the
    reader pod, where the edge sends prod's reads, serves it back."""
    report = make_report(session_id=f"deploy-tier-{app.database[-8:]}")
    bearer = {"Authorization": f"Bearer {app.api_key}"}
    async with httpx.AsyncClient(timeout=10) as http:
        accepted = await http.post(
            app.url(app.processor, "/v1/metadata"), json=report, headers=bearer
        )
        assert accepted.status_code == 202, accepted.text

        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(services.mongo_url)
        try:
            events = mongo[app.database]["events"]

            async def stored() -> Any:
                return await events.find_one({"_id": report["event_id"]})

            event = await eventually(stored, 60, "stored")
            assert event["session_id"] == report["session_id"]
        finally:
            await mongo.close()

        async def projected() -> Any:
            response = await http.get(app.url(app.reader, "/v1/sessions"), headers=bearer)
            assert response.status_code == 200, response.text
            return [s for s in response.json()["items"] if s["session_id"] == report["session_id"]]

        (session,) = await eventually(projected, 60, "projected")
        assert session["sample_count"] == 1

    async def archived() -> bool:
        return report["event_id"] in await tier.archived_event_ids(services, app.bucket)

    await eventually(archived, 90, "archived")  # the archive flushes every 30 s (prod default)
    tier.passed("worker (Deployment, prod)")
    tier.passed("reader (Deployment, prod)")
    tier.passed("DocumentDB (prod)")
    tier.passed("S3 (prod, AWS)")
