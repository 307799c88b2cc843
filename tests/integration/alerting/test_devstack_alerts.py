"""End to end in the dev stack's own tools: a worker target goes down, CA4TargetDown fires in
Prometheus, the dev stack's Alertmanager (its installer, config and launch) posts it to a webhook
with its absolute runbook URL and labels; the target comes back and the resolved notice follows.

Everything runs on free ports in a temporary home: the shared dev stack's worker is never
stopped. The rule is the repository's CA4TargetDown with a 3 s ``for:`` instead of 2 m.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from ca4_provision.devstack import configs, installers, services
from ca4_provision.devstack.process import LaunchSpec, ServiceProcess
from ca4_provision.devstack.settings import HOST, DevstackSettings

from tests.support.alerting import MetricsTarget, Notification, WebhookReceiver
from tests.support.ports import free_port

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
RUNBOOKS = "https://runbooks.example.test/ca4/runbooks.md"
NOTIFY_TIMEOUT_S = 90.0


@dataclass
class AlertingStack:
    """The pieces the test drives."""

    settings: DevstackSettings
    worker: MetricsTarget
    webhook: WebhookReceiver


def target_down_rule(rules_dir: Path) -> Path:
    """The repository's CA4TargetDown rule, with ``for: 3s``, alone in a rule file."""
    source = yaml.safe_load((REPO / "observability/prometheus/rules/ca4-alerts.yml").read_text())
    (rule,) = [
        rule for group in source["groups"] for rule in group["rules"]
        if rule.get("alert") == "CA4TargetDown"
    ]  # fmt: skip
    rule["for"] = "3s"
    path = rules_dir / "target-down.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "test", "rules": [rule]}]}))
    return path


async def wait_ready(url: str, process: ServiceProcess, timeout_s: float = 60.0) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(int(timeout_s * 4)):
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.25)
    log = process.log_file.read_text(errors="replace")[-3000:]
    raise AssertionError(f"{url} not ready within {timeout_s} s:\n{log}")


@pytest.fixture
async def alerting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: WebhookReceiver
) -> AsyncIterator[AlertingStack]:
    worker, processor = MetricsTarget(), MetricsTarget()
    worker.start()
    processor.start()
    for knob, value in {
        "CA4_DEVSTACK_HOME": str(tmp_path / "devstack"),
        "CA4_DEVSTACK_ALERTMANAGER_PORT": str(free_port()),
        "CA4_DEVSTACK_PROMETHEUS_PORT": str(free_port()),
        "CA4_DEVSTACK_WORKER_PORT": str(worker.port),
        "CA4_DEVSTACK_PROCESSOR_PORT": str(processor.port),
        "CA4_DEVSTACK_ALERT_WEBHOOK_URL": f"{webhook.url}/devstack",
        "CA4_RUNBOOK_BASE_URL": RUNBOOKS,
    }.items():
        monkeypatch.setenv(knob, value)
    settings = DevstackSettings.from_env()

    alertmanager = services.Alertmanager(settings)
    alertmanager_spec = await alertmanager.prepare()
    alertmanager_proc = alertmanager.process.spawn(alertmanager_spec)

    prometheus = services.Prometheus(settings)
    binary = await installers.install_prometheus(settings.cache)
    prometheus.dir.mkdir(parents=True, exist_ok=True)
    prometheus.config_file.write_text(
        configs.prometheus_config(settings, rule_files=target_down_rule(tmp_path))
    )
    prometheus_spec = LaunchSpec(
        argv=[
            str(binary),
            f"--config.file={prometheus.config_file}",
            f"--storage.tsdb.path={prometheus.dir / 'data'}",
            f"--web.listen-address={HOST}:{prometheus.port}",
        ],
        markers=prometheus.markers,
        cwd=prometheus.dir,
    )
    prometheus_proc = prometheus.process.spawn(prometheus_spec)
    try:
        await wait_ready(f"{alertmanager.address}/-/ready", alertmanager.process)
        await wait_ready(f"{prometheus.address}/-/ready", prometheus.process)
        yield AlertingStack(settings, worker, webhook)
    finally:
        await prometheus.process.stop(prometheus.markers, timeout_s=10)
        await alertmanager.process.stop(alertmanager.markers, timeout_s=10)
        for proc in (prometheus_proc, alertmanager_proc):
            await asyncio.to_thread(proc.wait, 10)
        worker.stop()
        processor.stop()


def about_the_worker(status: str) -> Any:
    def matches(path: str, notification: Notification) -> bool:
        return (
            path == "/devstack"
            and notification["status"] == status
            and notification["commonLabels"].get("alertname") == "CA4TargetDown"
            and notification["commonLabels"].get("job") == "worker"
        )

    return matches


async def test_a_stopped_worker_pages_with_its_runbook_and_resolves_when_it_returns(
    alerting: AlertingStack,
) -> None:
    alerting.worker.stop()

    firing = await asyncio.to_thread(
        alerting.webhook.wait_for, about_the_worker("firing"), NOTIFY_TIMEOUT_S
    )
    (alert,) = firing["alerts"]
    assert alert["status"] == "firing"
    assert alert["annotations"]["runbook_url"] == f"{RUNBOOKS}#ca4targetdown"
    assert alert["annotations"]["summary"] == (
        f"worker target {HOST}:{alerting.settings.ports.worker} is down"
    )
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["service"] == "worker"
    assert alert["labels"]["instance"] == f"{HOST}:{alerting.settings.ports.worker}"
    assert firing["groupLabels"] == {"alertname": "CA4TargetDown"}

    alerting.worker.start()

    resolved = await asyncio.to_thread(
        alerting.webhook.wait_for, about_the_worker("resolved"), NOTIFY_TIMEOUT_S
    )
    (alert,) = resolved["alerts"]
    assert alert["status"] == "resolved"
    assert alert["annotations"]["runbook_url"] == f"{RUNBOOKS}#ca4targetdown"
