"""Dev stack settings, rendered configs and service-name resolution."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import pytest
import yaml
from ca4_provision.devstack import configs
from ca4_provision.devstack.settings import RUNBOOK_BASE_URL, DevstackSettings, find_repo_root
from ca4_provision.devstack.stack import DevstackError, resolve_names
from ca4_provision.devstack.tools import MissingToolError, require


@pytest.fixture(autouse=True)
def _no_devstack_knobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from the defaults, whatever the shell running pytest exports."""
    for name in list(os.environ):
        if name.startswith("CA4_DEVSTACK_"):
            monkeypatch.delenv(name)


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> DevstackSettings:
    monkeypatch.setenv("CA4_DEVSTACK_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("CA4_DEVSTACK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CA4_DEVSTACK_KAFKA_PORT", "19092")
    monkeypatch.setenv("CA4_DEVSTACK_PROCESSOR_PORT", "18000")
    return DevstackSettings.from_env()


def test_env_knobs_move_folders_and_ports(settings: DevstackSettings, tmp_path: Path) -> None:
    assert settings.home == tmp_path / "state"
    assert settings.cache == tmp_path / "cache"
    assert settings.ports.kafka == 19092
    assert settings.ports.mongo == 27017
    assert settings.client_env()["CA4_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:19092"


def test_defaults_put_state_in_the_repo_and_cache_in_home(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for knob in ("CA4_DEVSTACK_HOME", "CA4_DEVSTACK_CACHE"):
        monkeypatch.delenv(knob, raising=False)
    settings = DevstackSettings.from_env()
    assert settings.home == settings.repo_root / ".devstack"
    assert settings.cache == Path.home().resolve() / ".cache" / "ca4" / "devstack"
    assert find_repo_root() == settings.repo_root


def test_bad_port_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CA4_DEVSTACK_S3_PORT", "nine thousand")
    with pytest.raises(ValueError, match="CA4_DEVSTACK_S3_PORT"):
        DevstackSettings.from_env()


def test_kafka_listens_on_loopback_only(settings: DevstackSettings, tmp_path: Path) -> None:
    rendered = configs.kafka_server_properties(settings, tmp_path / "data")
    props = dict(line.split("=", 1) for line in rendered.splitlines() if "=" in line)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:9093"
    assert props["num.partitions"] == "3"
    assert props["auto.create.topics.enable"] == "true"


def test_prometheus_scrapes_our_jobs_and_loads_rules(settings: DevstackSettings) -> None:
    rendered = configs.prometheus_config(settings)
    config = json.loads(rendered.split("\n", 1)[1])  # JSON after the comment line is valid YAML
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert targets["processor"] == ["127.0.0.1:18000"]
    assert targets["worker"] == ["127.0.0.1:8001"]
    assert config["global"]["scrape_interval"] == "5s"
    assert config["rule_files"] == [
        str(settings.repo_root / "observability" / "prometheus" / "rules" / "*.yml")
    ]


def test_prometheus_sends_alerts_to_the_dev_alertmanager_with_absolute_runbook_links(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CA4_RUNBOOK_BASE_URL", raising=False)
    config = json.loads(configs.prometheus_config(DevstackSettings.from_env()).split("\n", 1)[1])
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"] == [{"targets": ["127.0.0.1:9094"]}]
    assert config["global"]["external_labels"]["runbook_base_url"] == RUNBOOK_BASE_URL
    monkeypatch.setenv("CA4_RUNBOOK_BASE_URL", "https://docs.example.test/runbooks")
    config = json.loads(configs.prometheus_config(DevstackSettings.from_env()).split("\n", 1)[1])
    labels = config["global"]["external_labels"]
    assert labels["runbook_base_url"] == "https://docs.example.test/runbooks"


def test_alertmanager_keeps_the_shared_routing_and_posts_to_the_dev_webhook(
    settings: DevstackSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = yaml.safe_load((settings.repo_root / configs.ALERTMANAGER_ROUTING).read_text())
    config = json.loads(configs.alertmanager_config(settings).split("\n", 1)[1])
    assert (
        config["route"]["group_by"]
        == shared["route"]["group_by"]
        == [
            "alertname",
            "tenant",
            "session_id",
        ]
    )
    assert config["inhibit_rules"] == shared["inhibit_rules"]
    assert config["route"]["routes"] == shared["route"]["routes"]  # Watchdog's own receiver
    # No webhook: alerts stay in it; the always-firing Watchdog goes to a receiver of its own.
    assert config["receivers"] == [{"name": "ca4-default"}, {"name": "ca4-heartbeat"}]
    monkeypatch.setenv("CA4_DEVSTACK_ALERT_WEBHOOK_URL", "http://127.0.0.1:5001/hook")
    config = json.loads(configs.alertmanager_config(DevstackSettings.from_env()).split("\n", 1)[1])
    assert config["receivers"] == [
        {
            "name": "ca4-default",
            "webhook_configs": [{"url": "http://127.0.0.1:5001/hook", "send_resolved": True}],
        },
        {"name": "ca4-heartbeat"},  # never the dev webhook
    ]


def test_kafka_cluster_id_format() -> None:
    allowed = set(string.ascii_letters + string.digits + "-_")
    for _ in range(50):
        cluster_id = configs.kafka_cluster_id()
        assert len(cluster_id) == 22
        assert set(cluster_id) <= allowed
        assert not cluster_id.startswith("-")


def test_aliases_resolve_and_unknown_names_fail() -> None:
    assert resolve_names(["s3", "Mongo", "kafka"]) == ["minio", "ferretdb", "kafka"]
    with pytest.raises(DevstackError, match="unknown service"):
        resolve_names(["cassandra"])


def test_missing_tool_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingToolError, match="apt-get install -y maven"):
        require("mvn")


def test_tls_is_off_by_default_and_env_then_exports_nothing_new(settings: DevstackSettings) -> None:
    assert not settings.tls
    assert not any("TLS" in name for name in settings.client_env())


def test_tls_knob_exports_the_tls_url_and_ca_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CA4_DEVSTACK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CA4_DEVSTACK_MONGO_TLS_PORT", "28018")
    monkeypatch.setenv("CA4_DEVSTACK_TLS", "1")
    env = DevstackSettings.from_env().client_env()
    ca = tmp_path / "home" / "tls" / "ca.pem"
    assert env["CA4_DEVSTACK_MONGO_TLS_CA_FILE"] == str(ca)
    assert (
        env["CA4_DEVSTACK_MONGO_TLS_URL"] == f"mongodb://127.0.0.1:28018/?tls=true&tlsCAFile={ca}"
    )
    # `up --tls` leaves a marker, so later commands of this state dir keep TLS on.
    monkeypatch.delenv("CA4_DEVSTACK_TLS")
    assert not DevstackSettings.from_env().tls
    (tmp_path / "home" / "tls").mkdir(parents=True)
    (tmp_path / "home" / "tls" / "enabled").touch()
    assert DevstackSettings.from_env().tls
