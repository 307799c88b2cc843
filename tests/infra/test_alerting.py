"""Alerting config across the dev stack, compose and the charts: amtool accepts every rendered
Alertmanager config, Prometheus sends to it everywhere, receiver secrets only come from files,
inhibitions name real alerts, runbook links share one base, and the Operator objects render
schema-valid when switched on."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from ca4_provision.devstack import configs
from ca4_provision.devstack.settings import RUNBOOK_BASE_URL, DevstackSettings

from tests.infra.conftest import (
    KUBE_VERSION,
    REPO,
    VALUE_SETS,
    Rendered,
    run,
    template,
    values_args,
)
from tests.support.alerting import alertmanager_programs

OBSERVABILITY = REPO / "observability"
SCHEMA_VERSION = ".".join(KUBE_VERSION.split(".")[:2]) + ".0"
RECEIVERS_ON = [
    "--set",
    "alertmanager.existingSecret=receivers",
    "--set",
    "alertmanager.receivers.webhook.enabled=true",
    "--set",
    "alertmanager.receivers.slack.enabled=true",
    "--set",
    "alertmanager.receivers.email.enabled=true",
    "--set",
    "alertmanager.receivers.email.to=oncall@ca4-ci.test",
    "--set",
    "alertmanager.receivers.email.from=am@ca4-ci.test",
    "--set",
    "alertmanager.receivers.email.smarthost=smtp.ca4-ci.test:587",
    "--set",
    "alertmanager.heartbeat.enabled=true",
]
OPERATOR_ON = [
    "--set",
    "operator.prometheusRule.enabled=true",
    "--set",
    "metrics.serviceMonitor.enabled=true",
]
SECRET_FIELDS = {"url", "api_url", "auth_password", "auth_secret", "http_config"}


@pytest.fixture(scope="module")
def amtool() -> Path:
    return alertmanager_programs() / "amtool"


def alert_names() -> set[str]:
    names: set[str] = set()
    for path in (OBSERVABILITY / "prometheus/rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            names |= {rule["alert"] for rule in group["rules"] if "alert" in rule}
    return names


def helm_alertmanager_config(helm: str, *args: str) -> dict[str, Any]:
    code, stdout, stderr = template(helm, "ca4-platform", *args)
    assert code == 0, stderr
    (config_map,) = [
        d
        for d in yaml.safe_load_all(stdout)
        if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == "alertmanager-config"
    ]
    config: dict[str, Any] = yaml.safe_load(config_map["data"]["alertmanager.yml"])
    return config


def value_args(value_set: str) -> list[str]:
    return values_args("ca4-platform", value_set)


def rendered_configs(helm: str, tmp_path: Path) -> dict[str, Path]:
    """Every Alertmanager config we ship, written to files amtool can read."""
    configs_by_name = {"compose": OBSERVABILITY / "alertmanager/alertmanager.yml"}
    dev = tmp_path / "devstack.yml"
    dev.write_text(
        configs.alertmanager_config(DevstackSettings.from_env()), encoding="utf-8"
    )  # no webhook: a receiver without integrations
    configs_by_name["devstack"] = dev
    for value_set in VALUE_SETS:
        for label, extra in (("", []), ("+all-receivers", RECEIVERS_ON)):
            config = helm_alertmanager_config(helm, *value_args(value_set), *extra)
            path = tmp_path / f"helm-{value_set}{label}.yml"
            path.write_text(yaml.safe_dump(config), encoding="utf-8")
            configs_by_name[f"helm-{value_set}{label}"] = path
    return configs_by_name


def test_amtool_accepts_every_rendered_config(helm: str, amtool: Path, tmp_path: Path) -> None:
    checked = rendered_configs(helm, tmp_path)
    assert len(checked) == 2 + 2 * len(VALUE_SETS)
    for name, path in checked.items():
        result = subprocess.run(
            [str(amtool), "check-config", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert "SUCCESS" in result.stdout, name


def test_watchdog_reaches_only_its_heartbeat_receiver_in_every_config(
    helm: str, amtool: Path, tmp_path: Path
) -> None:
    """The always-firing alert must never page a person or post to the dev or compose webhook
    (it did, hourly, in the dev stack and every 4 h in compose, before the shared route)."""
    for name, path in rendered_configs(helm, tmp_path).items():
        for labels, receivers in (
            (["alertname=Watchdog", "severity=info"], ["ca4-heartbeat"]),
            (["alertname=CA4TargetDown", "job=worker", "severity=critical"], ["ca4-default"]),
        ):
            routed = subprocess.run(
                [str(amtool), "config", "routes", "test", f"--config.file={path}", *labels],
                capture_output=True,
                text=True,
                check=False,
            )
            assert routed.returncode == 0, f"{name}: {routed.stdout}{routed.stderr}"
            assert routed.stdout.split() == receivers, f"{name} {labels}: {routed.stdout}"


def test_every_config_groups_by_alert_and_session_and_shares_the_inhibitions(
    helm: str, tmp_path: Path
) -> None:
    shared = yaml.safe_load((OBSERVABILITY / "alertmanager/alertmanager.yml").read_text())
    for name, path in rendered_configs(helm, tmp_path).items():
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert config["route"]["group_by"] == ["alertname", "tenant", "session_id"], name
        assert config["inhibit_rules"] == shared["inhibit_rules"], name


def test_receiver_secrets_come_from_files_never_from_values(helm: str) -> None:
    config = helm_alertmanager_config(
        helm, *value_args("prod"), "--set", "alertmanager.heartbeat.enabled=true"
    )
    receivers = {r["name"]: r for r in config["receivers"]}
    assert set(receivers) == {config["route"]["receiver"], "ca4-heartbeat"}
    receiver = receivers[config["route"]["receiver"]]
    kinds = {key for key in receiver if key.endswith("_configs")}
    assert kinds == {"webhook_configs", "slack_configs", "email_configs"}, "prod: all three"
    for name, each in receivers.items():
        for kind in (key for key in each if key.endswith("_configs")):
            for integration in each[kind]:
                where = f"{name} {kind}"
                assert not SECRET_FIELDS & set(integration), f"{where} holds a secret inline"
                files = [value for key, value in integration.items() if key.endswith("_file")]
                assert files, where
                assert all(f.startswith("/etc/alertmanager/secrets/") for f in files), where
                # The heartbeat pings while Watchdog fires; a resolved Watchdog is no news.
                assert integration["send_resolved"] is (name != "ca4-heartbeat"), where
    code, stdout, _ = template(helm, "ca4-platform", *value_args("prod"))
    assert code == 0
    (deployment,) = [
        d
        for d in yaml.safe_load_all(stdout)
        if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "alertmanager"
    ]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["receiver-secrets"]["secret"]["secretName"] == "ca4-alertmanager-receivers"


def test_an_smtp_relay_without_a_user_gets_no_auth(helm: str) -> None:
    """Without a user Alertmanager sends no AUTH and ignored the password it was given, so a
    relay that needs one got nothing, with nothing said; without a user there is now no
    password either, and with one both go."""
    without = helm_alertmanager_config(
        helm, *value_args("prod"), "--set-string", "alertmanager.receivers.email.authUsername="
    )
    (email,) = without["receivers"][0]["email_configs"]
    assert not {"auth_username", "auth_password_file"} & set(email)
    (email,) = helm_alertmanager_config(helm, *value_args("prod"))["receivers"][0]["email_configs"]
    assert email["auth_username"] == "alertmanager@ca4-ci.test"
    assert email["auth_password_file"] == "/etc/alertmanager/secrets/smtp-password"


def test_an_enabled_receiver_without_a_secret_fails_the_render(helm: str) -> None:
    code, _, stderr = template(
        helm, "ca4-platform", "--set", "alertmanager.receivers.webhook.enabled=true"
    )
    assert code != 0
    assert "alertmanager.existingSecret is empty" in stderr


def test_inhibitions_name_alerts_that_exist() -> None:
    shared = yaml.safe_load((OBSERVABILITY / "alertmanager/alertmanager.yml").read_text())
    names = alert_names()
    for rule in shared["inhibit_rules"]:
        for matcher in [*rule["source_matchers"], *rule["target_matchers"]]:
            match = re.fullmatch(r'alertname(=~|=)"([^"]+)"', matcher)
            if match:
                named = set(match.group(2).split("|"))
                assert named <= names, f"{matcher}: no such alert {named - names}"


def test_target_down_of_the_worker_inhibits_the_lag_alerts() -> None:
    shared = yaml.safe_load((OBSERVABILITY / "alertmanager/alertmanager.yml").read_text())
    worker_down = next(r for r in shared["inhibit_rules"] if 'job="worker"' in r["source_matchers"])
    assert 'alertname=~"CA4TargetDown|CA4TargetMissing"' in worker_down["source_matchers"]
    (targets,) = worker_down["target_matchers"]
    assert {"CA4ConsumerLagHigh", "CA4StorePartitionStalling"} <= set(
        targets.split('"')[1].split("|")
    )


def test_prometheus_sends_to_alertmanager_everywhere(rendered: Rendered) -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    port = compose["services"]["alertmanager"]["ports"][0].rsplit(":", 1)[1]
    for name in ("prometheus.yml", "prometheus-k8s.yml"):
        config = yaml.safe_load((OBSERVABILITY / "prometheus" / name).read_text())
        (manager,) = config["alerting"]["alertmanagers"]
        assert manager["static_configs"] == [{"targets": [f"alertmanager:{port}"]}], name
    for value_set in VALUE_SETS:
        docs = rendered[("ca4-platform", value_set)]
        (service,) = [
            d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "alertmanager"
        ]
        prometheus_ns = next(
            d["metadata"]["namespace"]
            for d in docs
            if d["kind"] == "Deployment" and d["metadata"]["name"] == "prometheus"
        )
        assert service["metadata"]["namespace"] == prometheus_ns, "alertmanager:9093 resolves"
        assert service["spec"]["ports"][0]["port"] == int(port)
        (policy,) = [
            d
            for d in docs
            if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "alertmanager"
        ]
        sources = [
            peer["podSelector"]["matchLabels"] for peer in policy["spec"]["ingress"][0]["from"]
        ]
        assert {"app.kubernetes.io/name": "prometheus"} in sources


def test_runbook_links_share_one_base_that_defaults_to_the_repository_docs(
    rendered: Rendered,
) -> None:
    assert RUNBOOK_BASE_URL.endswith("/observability/runbooks.md")
    for name in ("prometheus.yml", "prometheus-k8s.yml"):
        config = yaml.safe_load((OBSERVABILITY / "prometheus" / name).read_text())
        labels = config["global"]["external_labels"]
        assert labels["runbook_base_url"] == "${CA4_RUNBOOK_BASE_URL}", name
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    compose_default = compose["services"]["prometheus"]["environment"]["CA4_RUNBOOK_BASE_URL"]
    assert compose_default == f"${{CA4_RUNBOOK_BASE_URL:-{RUNBOOK_BASE_URL}}}"
    for value_set in VALUE_SETS:
        (deployment,) = [
            d
            for d in rendered[("ca4-platform", value_set)]
            if d["kind"] == "Deployment" and d["metadata"]["name"] == "prometheus"
        ]
        env = {
            e["name"]: e["value"]
            for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["CA4_RUNBOOK_BASE_URL"] == RUNBOOK_BASE_URL, value_set


# --- Prometheus Operator objects: off by default, schema-valid when on ----------------------

# The fields of the monitoring.coreos.com/v1 CRDs (prometheus-operator) that the charts use, as
# structural schemas: unknown fields fail, as the API server's pruning would drop them.
STRING = {"type": "string"}
STRING_MAP = {"type": "object", "additionalProperties": STRING}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": STRING,
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": STRING},
                },
            },
        },
    },
}
CRD_SPECS: dict[str, dict[str, Any]] = {
    "PrometheusRule": {
        "type": "object",
        "additionalProperties": False,
        "required": ["groups"],
        "properties": {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "rules"],
                    "properties": {
                        "name": STRING,
                        "interval": STRING,
                        "rules": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["expr"],
                                "properties": {
                                    "alert": STRING,
                                    "record": STRING,
                                    "expr": STRING,
                                    "for": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h|d)$"},
                                    "labels": STRING_MAP,
                                    "annotations": STRING_MAP,
                                },
                            },
                        },
                    },
                },
            }
        },
    },
    "ServiceMonitor": {
        "type": "object",
        "additionalProperties": False,
        "required": ["selector", "endpoints"],
        "properties": {
            "jobLabel": STRING,
            "selector": LABEL_SELECTOR,
            "namespaceSelector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "any": {"type": "boolean"},
                    "matchNames": {"type": "array", "items": STRING},
                },
            },
            "endpoints": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "port": STRING,
                        "path": STRING,
                        "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "relabelings": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "sourceLabels": {"type": "array", "items": STRING},
                                    "targetLabel": STRING,
                                    "regex": STRING,
                                    "replacement": STRING,
                                    "action": STRING,
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def operator_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["apiVersion"] == "monitoring.coreos.com/v1"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_operator_objects_are_off_by_default(rendered: Rendered, value_set: str) -> None:
    for chart in ("ca4-app", "ca4-platform"):
        assert not operator_objects(rendered[(chart, value_set)]), chart


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_operator_objects_render_schema_valid_when_on(helm: str, value_set: str) -> None:
    kinds: dict[str, dict[str, Any]] = {}
    for chart in ("ca4-app", "ca4-platform"):
        flags = OPERATOR_ON[:2] if chart == "ca4-platform" else OPERATOR_ON[2:]
        code, stdout, stderr = template(helm, chart, *values_args(chart, value_set), *flags)
        assert code == 0, stderr
        docs = [d for d in yaml.safe_load_all(stdout) if d]
        for doc in docs:
            if doc["apiVersion"] == "monitoring.coreos.com/v1":
                jsonschema.validate(doc["spec"], CRD_SPECS[doc["kind"]])
                kinds[doc["kind"]] = doc
            else:
                kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)
    assert set(kinds) == {"PrometheusRule", "ServiceMonitor"}
    rules = [r for g in kinds["PrometheusRule"]["spec"]["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules if "alert" in r} == alert_names()
    monitor = kinds["ServiceMonitor"]["spec"]
    assert monitor["jobLabel"] == "app.kubernetes.io/name", "job stays processor|worker"


def test_helm_test_hooks_check_what_the_release_serves(rendered: Rendered) -> None:
    hooks: dict[str, str] = {}
    for (chart, _), docs in rendered.items():
        for doc in docs:
            if (
                doc["kind"] == "Pod"
                and doc["metadata"]["annotations"].get("helm.sh/hook") == "test"
            ):
                script = json.dumps(doc["spec"]["containers"][0]["command"])
                hooks[f"{chart} {doc['metadata']['name']}"] = script
    scripts = " ".join(hooks.values())
    assert "/readyz" in scripts
    assert "kafka-topics.sh" in scripts
    assert "--list" in scripts
    assert "/api/v1/query" in scripts
    assert any(name.startswith("ca4-app ") for name in hooks)
    assert any(name.startswith("ca4-platform ") for name in hooks)


def test_helm_lint_passes_with_every_switch_on(helm: str) -> None:
    for chart, flags in (
        ("ca4-platform", [*RECEIVERS_ON, *OPERATOR_ON[:2]]),
        ("ca4-app", OPERATOR_ON[2:]),
    ):
        result = run(
            [
                helm,
                "lint",
                str(REPO / "infra/helm" / chart),
                "--strict",
                "--kube-version",
                KUBE_VERSION,
                "--namespace",
                "platform" if chart == "ca4-platform" else "app",
                *flags,
            ]
        )
        assert result.returncode == 0, result.stdout + result.stderr
