"""Alertmanager with the config the ca4-platform chart renders for prod: amtool accepts it, a test
alert POSTed to its API reaches the webhook and Slack receivers (pointed at a local recorder
through the Secret's files), grouped by alert and session, with the worker-down inhibition live.
The deploy tier runs the same check against the pod; this one needs no cluster."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.infra.conftest import template, values_args
from tests.support.alerting import Notification, WebhookReceiver, running_alertmanager

pytestmark = [pytest.mark.slow]

SECRETS_DIR = "/etc/alertmanager/secrets"
RUNBOOK = "https://github.com/ca4-project/ca4/blob/main/observability/runbooks.md#ca4targetdown"
# The prod route waits 30 s (group_wait) before the first notification of a group.
NOTIFY_TIMEOUT_S = 90.0


def prod_config(helm: str) -> str:
    code, stdout, stderr = template(helm, "ca4-platform", *values_args("ca4-platform", "prod"))
    assert code == 0, stderr
    (config_map,) = [
        d
        for d in yaml.safe_load_all(stdout)
        if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == "alertmanager-config"
    ]
    config: str = config_map["data"]["alertmanager.yml"]
    return config


@pytest.fixture
def prod_alertmanager(
    helm: str, alertmanager_bin: Path, webhook: WebhookReceiver, tmp_path: Path
) -> Iterator[str]:
    """The prod config with the Secret's files in a temporary folder; its URL."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "webhook-url").write_text(f"{webhook.url}/webhook")
    (secrets / "slack-api-url").write_text(f"{webhook.url}/slack")
    (secrets / "smtp-password").write_text("not-used-the-smarthost-is-unreachable")
    config = tmp_path / "alertmanager.yml"
    config.write_text(prod_config(helm).replace(SECRETS_DIR, str(secrets)))
    check = subprocess.run(
        [str(alertmanager_bin / "amtool"), "check-config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    with running_alertmanager(alertmanager_bin, config, tmp_path) as url:
        yield url


def alert(name: str, stack: str = "ca4-k3s", **labels: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": name, "stack": stack, "severity": "critical", **labels},
        "annotations": {"summary": f"{name} test", "runbook_url": RUNBOOK},
    }


def firing(path: str, alertname: str) -> Any:
    def matches(got_path: str, notification: Notification) -> bool:
        return (
            got_path == path
            and notification.get("status", "firing") == "firing"
            and alertname in str(notification)
        )

    return matches


def test_a_test_alert_reaches_the_prod_receivers_grouped_and_inhibited(
    prod_alertmanager: str, webhook: WebhookReceiver
) -> None:
    posted = httpx.post(
        f"{prod_alertmanager}/api/v2/alerts",
        json=[
            alert("CA4TargetDown", job="worker", instance="worker-0:8001", service="worker"),
            alert("CA4ConsumerLagHigh", group="ca4-store", partition="0"),
            # Another stack's sessions: the worker-down inhibition is per stack.
            alert("CA4SessionStoppedReporting", "ca4-compose", session_id="session-a"),
            alert("CA4SessionStoppedReporting", "ca4-compose", session_id="session-b"),
        ],
        timeout=5,
    )
    assert posted.status_code == 200, posted.text

    notification = webhook.wait_for(firing("/webhook", "CA4TargetDown"), NOTIFY_TIMEOUT_S)
    assert notification["groupLabels"] == {"alertname": "CA4TargetDown"}
    (sent,) = notification["alerts"]
    assert sent["labels"]["job"] == "worker"
    assert sent["annotations"]["runbook_url"] == RUNBOOK

    for session in ("session-a", "session-b"):  # one notification per session
        notification = webhook.wait_for(firing("/webhook", session), 30)
        assert notification["groupLabels"] == {
            "alertname": "CA4SessionStoppedReporting",
            "session_id": session,
        }
        assert len(notification["alerts"]) == 1

    slack = webhook.wait_for(firing("/slack", "CA4TargetDown"), 30)
    assert slack["channel"] == "#ca4-alerts"
    assert RUNBOOK in slack["attachments"][0]["text"]

    lag = httpx.get(
        f"{prod_alertmanager}/api/v2/alerts",
        params={"filter": 'alertname="CA4ConsumerLagHigh"'},
        timeout=5,
    ).json()
    (lag_alert,) = lag
    assert lag_alert["status"]["state"] == "suppressed"
    assert lag_alert["status"]["inhibitedBy"], "the worker being down explains the lag"


def test_a_tenants_gpu_name_in_a_slack_alert_is_text_not_a_mention_or_a_link(
    prod_alertmanager: str, webhook: WebhookReceiver
) -> None:
    # CA4GpuHeldIdle's summary quotes the GPU's UUID and model name, which a key holder
    # chooses (any printable text, 64 bytes each on /metrics); Slack reads <!channel>,
    # <@user> and <url|label> in a message's text as a mention and a link.
    name = "<!channel> <https://evil.example/login|ca4.example/keys> & co"
    summary = f"GPU GPU-1 ({name}) of session s-1 (tenant tenant-a) has been held idle"
    gpu_alert = alert("CA4GpuHeldIdle", tenant="tenant-a", session_id="s-1", modelName=name)
    gpu_alert["annotations"]["summary"] = summary
    posted = httpx.post(f"{prod_alertmanager}/api/v2/alerts", json=[gpu_alert], timeout=5)
    assert posted.status_code == 200, posted.text

    slack = webhook.wait_for(firing("/slack", "CA4GpuHeldIdle"), NOTIFY_TIMEOUT_S)
    text = slack["attachments"][0]["text"]
    assert "<" not in text, text
    assert "(&lt;!channel&gt; &lt;https://evil.example/login|ca4.example/keys&gt; &amp; co)" in text
