"""The inhibitions of observability/alertmanager/alertmanager.yml as Alertmanager itself applies
them: the dev stack's pinned build with the shared routing tree and inhibitions (receivers left
without integrations), fed alerts with the labels our rules give them plus Prometheus' ``stack``.
A cause must hold back the symptoms it produces in its own stack, and nothing else."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.support.alerting import alertmanager_programs, running_alertmanager
from tests.unit.observability.promql import OBSERVABILITY

ROUTING = OBSERVABILITY / "alertmanager" / "alertmanager.yml"


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An Alertmanager on a free port with the shared routes and inhibitions; its URL."""
    folder = tmp_path_factory.mktemp("alertmanager")
    config = yaml.safe_load(ROUTING.read_text(encoding="utf-8"))
    config["receivers"] = [{"name": receiver["name"]} for receiver in config["receivers"]]
    path = folder / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with running_alertmanager(alertmanager_programs(), path, folder) as url:
        yield url


def alert(name: str, stack: str, **labels: str) -> dict[str, Any]:
    return {"labels": {"alertname": name, "stack": stack, **labels}, "annotations": {}}


def post(url: str, *alerts: dict[str, Any]) -> None:
    response = httpx.post(f"{url}/api/v2/alerts", json=list(alerts), timeout=5)
    assert response.status_code == 200, response.text


def states(url: str, stack: str) -> dict[str, dict[str, Any]]:
    """The state of each alert of ``stack``, by its labels (``name{label=value,...}``)."""
    found = httpx.get(
        f"{url}/api/v2/alerts", params={"filter": f'stack="{stack}"'}, timeout=5
    ).json()
    return {
        labels["alertname"]
        + "{"
        + ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in {"alertname", "stack"})
        + "}": item["status"]
        for item in found
        for labels in [item["labels"]]
    }


def settled(url: str, stack: str, suppressed: set[str], count: int) -> dict[str, dict[str, Any]]:
    """The states of ``stack``'s ``count`` alerts once those named in ``suppressed`` are (the
    inhibitor learns of sources in the background)."""
    deadline = time.monotonic() + 10
    while True:
        now = states(url, stack)
        done = len(now) == count and all(
            now.get(name, {}).get("state") == "suppressed" for name in suppressed
        )
        if done or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


SESSION_A = {"severity": "info", "tenant": "acme", "session_id": "s-a"}
SESSION_B = {"severity": "info", "tenant": "globex", "session_id": "s-b"}


@pytest.mark.parametrize(
    ("cause", "labels"),
    [
        ("CA4ProjectionBehindStore", {"severity": "warning", "partition": "3"}),
        ("CA4IngestStopped", {"severity": "critical"}),
    ],
)
def test_a_cause_of_silent_sessions_holds_back_every_session_of_its_stack(
    alertmanager: str, cause: str, labels: dict[str, str]
) -> None:
    # The sessions carry no partition label: a projection behind on one partition holds back
    # the alerts of every session, which is what the worker's expired series look like then.
    stack, other = f"{cause}-here", f"{cause}-elsewhere"
    post(
        alertmanager,
        alert(cause, stack, **labels),
        alert("CA4SessionStoppedReporting", stack, **SESSION_A),
        alert("CA4SessionStoppedReporting", stack, **SESSION_B),
        alert("CA4SessionStoppedReporting", other, **SESSION_A),
    )
    sessions = {
        "CA4SessionStoppedReporting{session_id=s-a,severity=info,tenant=acme}",
        "CA4SessionStoppedReporting{session_id=s-b,severity=info,tenant=globex}",
    }
    here = settled(alertmanager, stack, sessions, count=3)
    for session in sessions:
        assert here[session]["state"] == "suppressed", here
        assert here[session]["inhibitedBy"], here
    elsewhere = states(alertmanager, other)
    assert [status["state"] for status in elsewhere.values()] == ["active"], elsewhere


def test_kafka_down_holds_back_ingest_stopped_and_the_stale_lag(alertmanager: str) -> None:
    stack = "kafka-down"
    post(
        alertmanager,
        alert("CA4KafkaDown", stack, severity="critical"),
        alert("CA4IngestStopped", stack, severity="critical"),
        alert("CA4LagMonitorStale", stack, severity="warning", job="worker", instance="w:8001"),
    )
    symptoms = {
        "CA4IngestStopped{severity=critical}",
        "CA4LagMonitorStale{instance=w:8001,job=worker,severity=warning}",
    }
    now = settled(alertmanager, stack, symptoms, count=3)
    assert {name for name, status in now.items() if status["state"] == "suppressed"} == symptoms


def test_unavailable_ingest_holds_back_the_processors_5xx_not_the_workers(
    alertmanager: str,
) -> None:
    stack = "ingest-503"
    post(
        alertmanager,
        alert("CA4IngestUnavailableRatioHigh", stack, severity="critical"),
        alert("CA4HttpServerErrorsHigh", stack, severity="warning", job="processor"),
        alert("CA4HttpServerErrorsHigh", stack, severity="warning", job="worker"),
    )
    processor = "CA4HttpServerErrorsHigh{job=processor,severity=warning}"
    now = settled(alertmanager, stack, {processor}, count=3)
    assert now[processor]["state"] == "suppressed", now
    assert now["CA4HttpServerErrorsHigh{job=worker,severity=warning}"]["state"] == "active"


def test_one_broker_down_holds_back_nothing(alertmanager: str) -> None:
    # Replication keeps a quorum of three writing with one broker down: a real ingest stop
    # then must still page.
    stack = "one-broker-down"
    post(
        alertmanager,
        alert("CA4TargetDown", stack, severity="critical", job="kafka", instance="kafka-2:9404"),
        alert("CA4IngestStopped", stack, severity="critical"),
    )
    symptom = "CA4IngestStopped{severity=critical}"
    now = settled(alertmanager, stack, {symptom}, count=2)
    assert now[symptom]["state"] == "active", now
