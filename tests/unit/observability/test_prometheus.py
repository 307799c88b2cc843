"""Prometheus configuration and alert rules pass promtool, and every alert has a unit test."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import yaml
from ca4_worker.core.config import Settings as WorkerSettings

from tests.unit.observability.promql import OBSERVABILITY, RULES, promtool

PROMETHEUS_DIR = OBSERVABILITY / "prometheus"
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
RUNBOOKS = OBSERVABILITY / "runbooks.md"
REQUIRED_ALERT_TOPICS = {
    "ingest error ratio": "ca4_ingest_events_total",
    "publish latency": "ca4_publish_latency_seconds",
    "consumer lag": "ca4_worker_consumer_lag",
    "DLQ growth": "ca4_worker_dead_letters_total",
    "archive lag": "ca4_worker_archive_lag",
    "no reports from a live session": "ca4_gpu_utilization_pct",
    "target down": "up{",
    "ingest stopped (no request arrives)": 'outcome="accepted"',
    "HTTP 5xx by service": 'ca4_http_requests_total{status="5xx"}',
    "stale lag gauges": "ca4_worker_lag_refreshed_timestamp_seconds",
    "Kafka under-replicated partitions": "kafka_server_replicamanager_underreplicatedpartitions",
    "Kafka offline partitions": "kafka_controller_kafkacontroller_offlinepartitionscount",
    "Kafka active controllers": "kafka_controller_kafkacontroller_activecontrollercount",
}


def alert_rules() -> list[dict[str, object]]:
    rules: list[dict[str, object]] = []
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


def test_compose_prometheus_config_is_valid() -> None:
    result = promtool("check", "config", PROMETHEUS_DIR / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_k8s_prometheus_config_is_valid_apart_from_kubernetes_discovery(tmp_path: Path) -> None:
    # Debian's promtool is built without Kubernetes discovery, so swap it for file discovery
    # and check everything else (relabelling, globals, rule files) for real.
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus-k8s.yml").read_text(encoding="utf-8"))
    pods = next(job for job in config["scrape_configs"] if "kubernetes_sd_configs" in job)
    assert pods["kubernetes_sd_configs"] == [{"role": "pod"}]
    pods["file_sd_configs"] = [{"files": [str(tmp_path / "targets.json")]}]
    del pods["kubernetes_sd_configs"]
    config["rule_files"] = [str(RULES / "*.yml")]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = promtool("check", "config", checked)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_are_valid() -> None:
    result = promtool("check", "rules", *sorted(RULES.glob("*.yml")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass() -> None:
    assert RULE_TESTS, "no promtool rule tests found"
    result = promtool("test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_for_severity_summary_and_runbook() -> None:
    runbook_text = RUNBOOKS.read_text(encoding="utf-8").lower()
    for rule in alert_rules():
        name = str(rule["alert"])
        assert rule.get("for"), f"{name} has no for: clause"
        labels = rule["labels"]
        annotations = rule["annotations"]
        assert isinstance(labels, dict)
        assert isinstance(annotations, dict)
        assert labels["severity"] in {"critical", "warning", "info"}, name
        assert annotations.get("summary"), f"{name} has no summary"
        runbook = str(annotations["runbook_url"])
        assert runbook == "{{ $externalLabels.runbook_base_url }}#" + name.lower(), name
        assert f"## {name.lower()}" in runbook_text, f"{name} has no runbook section"


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {str(rule["alert"]) for rule in alert_rules()}
    assert names - fired == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"


@pytest.mark.parametrize(("topic", "needle"), REQUIRED_ALERT_TOPICS.items())
def test_required_alert_topics_are_covered(topic: str, needle: str) -> None:
    assert any(needle in str(rule["expr"]) for rule in alert_rules()), f"no alert for {topic}"


def test_compose_scrape_jobs_match_the_names_rules_select_on() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"processor", "worker", "kafka"} <= jobs


def jmx_exporter_names() -> set[str]:
    """The metric names observability/kafka/jmx-exporter.yml gives the broker's MBeans: each
    rule's ``name`` with its ``$N`` taken from the pattern's alternatives, lower-cased as the
    exporter is told to."""
    config = yaml.safe_load((OBSERVABILITY / "kafka" / "jmx-exporter.yml").read_text())
    names: set[str] = set()
    for rule in config["rules"]:
        if "name" not in rule:
            continue
        groups = re.findall(r"\(([^()]*)\)", rule["pattern"])
        used = sorted(set(map(int, re.findall(r"\$(\d+)", rule["name"]))))
        options = [groups[n - 1].split("|") for n in used]
        for chosen in itertools.product(*options):
            name = rule["name"]
            for n, value in zip(used, chosen, strict=True):
                name = name.replace(f"${n}", value)
            names.add(name.lower() if config.get("lowercaseOutputName") else name)
    return names


def test_kafka_alerts_read_the_names_the_jmx_exporter_exports() -> None:
    exported = jmx_exporter_names()
    assert "kafka_controller_kafkacontroller_activecontrollercount" in exported
    read = {
        metric
        for rule in alert_rules()
        for metric in re.findall(r"\b(kafka_\w+)", str(rule["expr"]))
    }
    assert read, "no alert on the broker's metrics"
    assert read <= exported, f"not exported by the JMX exporter: {read - exported}"


def test_consumer_groups_in_rules_and_their_tests_are_the_workers() -> None:
    # A rule (or a test fixture) on a group the worker never reports is silently blind.
    settings = WorkerSettings()
    groups = {
        settings.kafka_store_group,
        settings.kafka_project_group,
        settings.kafka_archive_group,
    }
    texts = [path.read_text(encoding="utf-8") for path in sorted(RULES.glob("*.yml"))]
    texts += [path.read_text(encoding="utf-8") for path in RULE_TESTS]
    named = {group for text in texts for group in re.findall(r'\bgroup="([^"]+)"', text)}
    assert named, "no rule or test names a consumer group"
    assert named <= groups, f"groups the worker never reports: {named - groups}"
