"""ca4-platform's Alertmanager Deployment under prod values, run as a pod: its rendered config and
receiver Secret (written as the operator creates it) deliver a test alert to the receivers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.deploy import tier
from tests.deploy.cluster import find
from tests.deploy.conftest import Platform
from tests.support.alerting import Notification, WebhookReceiver

pytestmark = [pytest.mark.deploy, pytest.mark.slow]

RUNBOOK = "https://github.com/ca4-project/ca4/blob/main/observability/runbooks.md#ca4targetdown"
# The prod route waits 30 s (group_wait) before a group's first notification.
NOTIFY_TIMEOUT_S = 90.0


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A local recorder standing in for the webhook and Slack endpoints."""
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


async def test_a_test_alert_reaches_the_prod_receivers(
    platform: Platform, webhook: WebhookReceiver
) -> None:
    cluster = platform.cluster
    deployment = find(platform.docs, "Deployment", "alertmanager")
    cluster.add(tier.alertmanager_receivers(platform.docs, webhook.url))
    (pod,) = cluster.plan(deployment)
    try:
        await cluster.start(pod)
        await cluster.wait_ready(pod, within_s=60)
        base = f"http://{pod.address}:{pod.port('http')}"
        alert = {
            "labels": {
                "alertname": "CA4TargetDown",
                "job": "worker",
                "severity": "critical",
                "stack": "deploy-tier",
            },
            "annotations": {"summary": "deploy tier test alert", "runbook_url": RUNBOOK},
        }
        async with httpx.AsyncClient(timeout=5) as http:
            posted = await http.post(f"{base}/api/v2/alerts", json=[alert])
        assert posted.status_code == 200, posted.text

        def firing(path: str) -> Callable[[str, Notification], bool]:
            def matches(got: str, notification: Notification) -> bool:
                return got == path and "CA4TargetDown" in str(notification)

            return matches

        notification = await asyncio.to_thread(
            webhook.wait_for, firing("/webhook"), NOTIFY_TIMEOUT_S
        )
        (sent,) = notification["alerts"]
        assert sent["labels"]["job"] == "worker"
        assert sent["annotations"]["runbook_url"] == RUNBOOK
        slack = await asyncio.to_thread(webhook.wait_for, firing("/slack"), 30)
        assert RUNBOOK in str(slack)
    finally:
        await cluster.stop(pod)
    tier.passed("alertmanager (Deployment, prod)")
