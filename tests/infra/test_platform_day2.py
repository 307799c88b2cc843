"""ca4-platform on day 2: what an upgrade of a live release must refuse, and what must survive a
restart. The topics Job refuses a live topic whose partition count differs from the values (it
never repartitions); the render refuses a new ``kafka.replicas`` against the live StatefulSet;
Prometheus is bounded by size as well as time; an always-firing Watchdog reaches a heartbeat
receiver of its own; Alertmanager's silences and Grafana's database live on PVCs."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.conftest import (
    REPO,
    VALUE_SETS,
    Manifest,
    Rendered,
    chart_dir,
    pod_spec,
    render_with_lookups,
    run,
    template,
    values_args,
)
from tests.infra.test_links import by_name
from tests.support.alerting import alertmanager_programs

pytestmark = pytest.mark.stand_in(
    "helm upgrade against a live release: no Kubernetes here; ran instead: helm template with the "
    "chart's lookups swapped for the live objects, the topics Job's script against a fake "
    "kafka-topics.sh"
)


def render(helm: str, *args: str) -> list[Manifest]:
    """ca4-platform rendered with ``args``; the render must succeed."""
    code, stdout, stderr = template(helm, "ca4-platform", *args)
    assert code == 0, stderr
    return [d for d in yaml.safe_load_all(stdout) if d]


def refused(helm: str, *args: str) -> str:
    """The error of a render that must fail."""
    code, _, stderr = template(helm, "ca4-platform", *args)
    assert code != 0, f"rendered with {args}"
    return stderr


# --- 1. The topics Job: creates absent topics, refuses a partition count it would not apply ---

# kafka-topics.sh as far as the Job uses it: topics are files in $FAKE_KAFKA/topics holding their
# partition count; --describe prints Kafka 4.1's format; every call is logged to $FAKE_KAFKA/calls.
FAKE_KAFKA_TOPICS = r"""#!/bin/sh
echo "$*" >> "${FAKE_KAFKA}/calls"
if [ -n "${FAKE_KAFKA_DOWN:-}" ]; then
  echo "Timed out waiting for a node assignment. Call: listTopics" >&2
  exit 1
fi
action='' topic='' partitions='' if_exists='' if_not_exists=''
while [ $# -gt 0 ]; do
  case "$1" in
    --describe|--create|--alter|--delete|--list) action="$1" ;;
    --topic) topic="$2"; shift ;;
    --partitions) partitions="$2"; shift ;;
    --if-exists) if_exists=1 ;;
    --if-not-exists) if_not_exists=1 ;;
    --bootstrap-server|--replication-factor) shift ;;
  esac
  shift
done
state="${FAKE_KAFKA}/topics/${topic}"
# The admin client's INFO lines on stdout, as Kafka's tools print them with a log config that
# logs there (the deploy tier's Kafka has one): an answer for an absent topic is not empty.
echo "[2026-12-02 08:17:19,350] INFO Kafka version: 4.1.0 (AppInfoParser)"
case "${action}" in
  --describe)
    # As a real broker may answer right after a create: the topic is not in its metadata yet.
    if [ -f "${state}.fresh" ]; then
      rm "${state}.fresh"
      [ -n "${if_exists}" ] && exit 0
    fi
    if [ ! -f "${state}" ]; then
      [ -n "${if_exists}" ] && exit 0
      echo "Error while executing topic command : Topic '${topic}' does not exist as expected" >&2
      exit 1
    fi
    count="$(cat "${state}")"
    head='Topic: %s\tTopicId: 3q2-7wJ0Tq2bFCKX7rjdHQ\tPartitionCount: %s\tReplicationFactor: 3'
    printf "${head}\tConfigs: min.insync.replicas=2\n" "${topic}" "${count}"
    i=0
    while [ "${i}" -lt "${count}" ]; do
      row='\tTopic: %s\tPartition: %s\tLeader: 1\tReplicas: 1,2,3\tIsr: 1,2,3'
      printf "${row}\tElr: \tLastKnownElr: \n" "${topic}" "${i}"
      i=$((i + 1))
    done
    ;;
  --create)
    if [ -f "${state}" ]; then
      [ -n "${if_not_exists}" ] && exit 0
      echo "Topic '${topic}' already exists." >&2
      exit 1
    fi
    echo "${partitions}" > "${state}"
    : > "${state}.fresh"
    echo "Created topic ${topic}."
    ;;
  *)
    echo "fake kafka-topics.sh: the Job must not run ${action}" >&2
    exit 1
    ;;
esac
"""


class FakeKafka:
    """The prod topics Job's rendered script, run by bash against FAKE_KAFKA_TOPICS."""

    def __init__(self, job: Manifest, folder: Path) -> None:
        (self.container,) = pod_spec(job)["containers"]
        self.folder = folder
        (folder / "topics").mkdir(parents=True)
        fake = folder / "kafka-topics.sh"
        fake.write_text(FAKE_KAFKA_TOPICS)
        fake.chmod(0o755)
        env = {e["name"]: e.get("value", "") for e in self.container.get("env", [])}
        self.env = {
            **env,
            "KAFKA_TOPICS": str(fake),
            "FAKE_KAFKA": str(folder),
            "PATH": os.environ["PATH"],
        }

    def has(self, topic: str, partitions: int) -> None:
        (self.folder / "topics" / topic).write_text(f"{partitions}\n")

    def partitions(self, topic: str) -> int | None:
        state = self.folder / "topics" / topic
        return int(state.read_text()) if state.exists() else None

    def calls(self) -> list[str]:
        log = self.folder / "calls"
        return log.read_text().splitlines() if log.exists() else []

    def run_job(self, **env: str) -> subprocess.CompletedProcess[str]:
        command = self.container["command"]
        assert command[:2] == ["/bin/bash", "-ec"], command
        return subprocess.run(
            command,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )


@pytest.fixture
def kafka(rendered: Rendered, tmp_path: Path) -> FakeKafka:
    return FakeKafka(by_name(rendered[("ca4-platform", "prod")], "Job", "kafka-topics"), tmp_path)


def refusal_exit_codes(job: Manifest) -> set[int]:
    """The exit codes on which the Job fails at once (podFailurePolicy FailJob), not retried."""
    rules = job["spec"].get("podFailurePolicy", {}).get("rules", [])
    return {
        code
        for rule in rules
        if rule["action"] == "FailJob" and rule["onExitCodes"]["operator"] == "In"
        for code in rule["onExitCodes"]["values"]
    }


def test_topics_job_creates_the_absent_topics_with_the_configured_partitions(
    kafka: FakeKafka,
) -> None:
    result = kafka.run_job()
    assert result.returncode == 0, result.stdout + result.stderr
    assert kafka.partitions("gpu-metadata") == 12  # values-prod.yaml
    assert kafka.partitions("gpu-metadata.dlq") == 3
    creates = [c for c in kafka.calls() if "--create" in c]
    assert len(creates) == 2, kafka.calls()
    # Not described again after the create: a fresh broker's metadata may not list it yet (the
    # deploy tier's real Kafka did not, and the Job failed on its first install).
    assert "kafka-topics: gpu-metadata: created with 12 partitions" in result.stdout
    assert all("--replication-factor 3" in c for c in creates), creates


def test_topics_job_leaves_topics_with_the_configured_partitions_alone(kafka: FakeKafka) -> None:
    kafka.has("gpu-metadata", 12)
    kafka.has("gpu-metadata.dlq", 3)
    result = kafka.run_job()
    assert result.returncode == 0, result.stdout + result.stderr
    assert [c for c in kafka.calls() if "--describe" not in c] == []
    assert "gpu-metadata: 12 partitions, as configured" in result.stdout


@pytest.mark.parametrize("live", [6, 24])
def test_topics_job_refuses_a_live_partition_count_that_differs_and_changes_nothing(
    kafka: FakeKafka, rendered: Rendered, live: int
) -> None:
    """More partitions in the values (the --if-not-exists create ignored them, with no word) or
    fewer (Kafka cannot remove partitions): the Job fails, saying what to do, and alters nothing;
    the other topics are still created and checked."""
    kafka.has("gpu-metadata", live)
    result = kafka.run_job()
    assert result.returncode != 0, result.stdout
    assert (
        f"kafka-topics: gpu-metadata has {live} partitions in Kafka, kafka.topics sets 12"
        in result.stderr
    )
    assert f"back to {live} and upgrade again" in result.stderr
    assert "never changes a live topic's partitions" in result.stderr
    assert not [c for c in kafka.calls() if "--alter" in c or "--delete" in c]
    assert kafka.partitions("gpu-metadata") == live
    assert kafka.partitions("gpu-metadata.dlq") == 3, "the DLQ is still created"
    job = by_name(rendered[("ca4-platform", "prod")], "Job", "kafka-topics")
    assert result.returncode in refusal_exit_codes(job), "a refusal is not retried 10 times"
    assert pod_spec(job)["restartPolicy"] == "Never", "podFailurePolicy needs Never"


def test_topics_job_retries_when_kafka_does_not_answer(
    kafka: FakeKafka, rendered: Rendered
) -> None:
    """An unreachable Kafka is not a refusal: the Job fails that try and is retried."""
    result = kafka.run_job(FAKE_KAFKA_DOWN="1")
    job = by_name(rendered[("ca4-platform", "prod")], "Job", "kafka-topics")
    assert result.returncode != 0
    assert result.returncode not in refusal_exit_codes(job)
    assert not [c for c in kafka.calls() if "--create" in c]


# --- 2. kafka.replicas against the live StatefulSet (the static KRaft voter list) -----------

LIVE_KAFKA_LOOKUP = 'lookup "apps/v1" "StatefulSet" .Release.Namespace "kafka"'


def render_against_live_kafka(
    helm: str, tmp_path: Path, live_replicas: int, *args: str
) -> subprocess.CompletedProcess[str]:
    """ca4-platform rendered as if the release's StatefulSet ``kafka`` ran ``live_replicas``."""
    live = f'(dict "spec" (dict "replicas" {live_replicas}))'
    return render_with_lookups(helm, "ca4-platform", tmp_path, {LIVE_KAFKA_LOOKUP: live}, *args)


def test_an_upgrade_that_changes_kafka_replicas_is_refused(helm: str, tmp_path: Path) -> None:
    result = render_against_live_kafka(helm, tmp_path, 1, *values_args("ca4-platform", "prod"))
    assert result.returncode != 0
    assert (
        "kafka.replicas (3) differs from the 1 replica(s) of the live StatefulSet platform/kafka"
        in result.stderr
    )
    assert "kafka.allowVoterChange=true" in result.stderr


def test_an_upgrade_with_the_live_replicas_renders(helm: str, tmp_path: Path) -> None:
    result = render_against_live_kafka(helm, tmp_path, 3, *values_args("ca4-platform", "prod"))
    assert result.returncode == 0, result.stderr


def test_a_planned_voter_change_renders_with_the_override(helm: str, tmp_path: Path) -> None:
    result = render_against_live_kafka(
        helm,
        tmp_path,
        1,
        *values_args("ca4-platform", "prod"),
        *("--set", "kafka.allowVoterChange=true"),
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert by_name(docs, "StatefulSet", "kafka")["spec"]["replicas"] == 3


# --- 3. Disk guard and dead man's switch ----------------------------------------------------

UNITS = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}  # Prometheus': powers of 2
PVC_UNITS = {"Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def size_bytes(size: str, units: dict[str, int]) -> int:
    match = re.fullmatch(r"(\d+)([A-Za-z]+)", size)
    assert match, size
    return int(match[1]) * units[match[2]]


def prometheus_flags(docs: list[Manifest]) -> dict[str, str]:
    args = pod_spec(by_name(docs, "Deployment", "prometheus"))["containers"][0]["args"]
    return dict(arg.split("=", 1) for arg in args if "=" in arg)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_prometheus_retention_is_bounded_below_its_volume(
    rendered: Rendered, value_set: str
) -> None:
    """local-path does not enforce a PVC's size and Kafka shares the data disk: Prometheus
    deletes its oldest blocks at 80% of its claim, whatever the time retention says."""
    docs = rendered[("ca4-platform", value_set)]
    retention = prometheus_flags(docs)["--storage.tsdb.retention.size"]
    claim = by_name(docs, "PersistentVolumeClaim", "prometheus-data")
    pvc = claim["spec"]["resources"]["requests"]["storage"]
    assert size_bytes(retention, UNITS) == size_bytes(pvc, PVC_UNITS) * 8 // 10, (retention, pvc)


def test_an_explicit_prometheus_retention_size_is_used(helm: str) -> None:
    docs = render(helm, "--set", "prometheus.retentionSize=6GB")
    assert prometheus_flags(docs)["--storage.tsdb.retention.size"] == "6GB"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "prometheus.retentionSize=10GB"],
            "prometheus.retentionSize (10GB) must be smaller than prometheus.persistence.size "
            "(10Gi)",
        ),
        (
            ["--set", "prometheus.retentionSize=1TB", "--set", "prometheus.persistence.size=500Gi"],
            "must be smaller than prometheus.persistence.size (500Gi)",
        ),
        (["--set", "prometheus.retentionSize=8Gi"], "prometheus/retentionSize"),
    ],
)
def test_a_prometheus_retention_size_that_fills_its_volume_is_refused(
    helm: str, args: list[str], message: str
) -> None:
    assert message in refused(helm, *args)


def test_the_retention_size_is_documented_in_the_units_the_schema_takes() -> None:
    """values.yaml once offered "powers of 2 like Mi and Gi", which the schema refuses."""
    schema = json.loads((chart_dir("ca4-platform") / "values.schema.json").read_text())
    pattern = schema["properties"]["prometheus"]["properties"]["retentionSize"]["pattern"]
    units = re.search(r"\(([A-Z|]+)\)\$$", pattern)
    assert units, pattern
    accepted = set(units.group(1).split("|"))
    assert accepted == set(UNITS)
    values = (chart_dir("ca4-platform") / "values.yaml").read_text()
    (doc,) = re.findall(r"^ *## @param prometheus\.retentionSize (.*)$", values, re.M)
    named = re.search(r"units ((?:[A-Z]+, )*[A-Z]+ or [A-Z]+)", doc)
    assert named, doc
    assert set(re.findall(r"[A-Z]+", named.group(1))) == accepted
    assert "like Mi and Gi" not in doc
    assert "1GB = 1GiB" in doc


def watchdog_rule() -> dict[str, Any]:
    for path in (REPO / "observability/prometheus/rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == "Watchdog":
                    found: dict[str, Any] = rule
                    return found
    raise AssertionError("no Watchdog alert in observability/prometheus/rules")


def test_watchdog_always_fires_and_is_packaged(rendered: Rendered) -> None:
    rule = watchdog_rule()
    assert rule["expr"].strip() == "vector(1)"
    rules = by_name(rendered[("ca4-platform", "prod")], "ConfigMap", "prometheus-rules")["data"]
    assert any("alert: Watchdog" in text for text in rules.values())
    tests = (REPO / "observability/prometheus/tests").glob("*.yml")
    assert any("alertname: Watchdog" in path.read_text() for path in tests), "no promtool test"


def alertmanager_config(helm: str, *args: str) -> dict[str, Any]:
    docs = render(helm, *args)
    config: dict[str, Any] = yaml.safe_load(
        by_name(docs, "ConfigMap", "alertmanager-config")["data"]["alertmanager.yml"]
    )
    return config


def routed_to(config: dict[str, Any], tmp_path: Path, *labels: str) -> list[str]:
    """The receivers Alertmanager's own routing (amtool) gives an alert with ``labels``."""
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    amtool = str(alertmanager_programs() / "amtool")
    check = run([amtool, "check-config", str(path)])
    assert check.returncode == 0, check.stdout + check.stderr
    result = run([amtool, "config", "routes", "test", f"--config.file={path}", *labels])
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.split()


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_watchdog_goes_to_the_heartbeat_receiver_only(
    helm: str, tmp_path: Path, value_set: str
) -> None:
    """By default the heartbeat receiver has no integration (a null receiver): Watchdog never
    reaches the on-call receivers, and nothing else reaches the heartbeat."""
    config = alertmanager_config(helm, *values_args("ca4-platform", value_set))
    heartbeat = next(r for r in config["receivers"] if r["name"] == "ca4-heartbeat")
    assert set(heartbeat) == {"name"}
    assert routed_to(config, tmp_path, "alertname=Watchdog", "severity=info") == ["ca4-heartbeat"]
    assert routed_to(config, tmp_path, "alertname=CA4TargetDown", "job=worker") == ["ca4-default"]


def test_the_heartbeat_receiver_posts_to_the_secrets_url(helm: str, tmp_path: Path) -> None:
    config = alertmanager_config(
        helm,
        *values_args("ca4-platform", "prod"),
        *("--set", "alertmanager.heartbeat.enabled=true"),
        *("--set", "alertmanager.heartbeat.repeatInterval=2m"),
    )
    heartbeat = next(r for r in config["receivers"] if r["name"] == "ca4-heartbeat")
    assert heartbeat["webhook_configs"] == [
        {"url_file": "/etc/alertmanager/secrets/heartbeat-url", "send_resolved": False}
    ]
    (watchdog,) = [r for r in config["route"]["routes"] if r["receiver"] == "ca4-heartbeat"]
    assert watchdog["repeat_interval"] == "2m"
    assert routed_to(config, tmp_path, "alertname=Watchdog") == ["ca4-heartbeat"]


def test_the_heartbeat_needs_the_receivers_secret(helm: str) -> None:
    stderr = refused(helm, "--set", "alertmanager.heartbeat.enabled=true")
    assert "alertmanager.existingSecret is empty" in stderr


# --- 4. Alertmanager's silences and Grafana's database survive a restart -------------------

# Deployment (and values key) -> the mount path of its data volume
PERSISTED = {"alertmanager": "/alertmanager", "grafana": "/var/lib/grafana"}


@pytest.mark.parametrize("value_set", VALUE_SETS)
@pytest.mark.parametrize("name", PERSISTED)
def test_alertmanager_and_grafana_keep_their_data_on_a_pvc(
    rendered: Rendered, value_set: str, name: str
) -> None:
    docs = rendered[("ca4-platform", value_set)]
    deployment = by_name(docs, "Deployment", name)
    spec = pod_spec(deployment)
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "one writer per RWO volume"
    (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "data"]
    assert mount["mountPath"] == PERSISTED[name]
    volume = next(v for v in spec["volumes"] if v["name"] == "data")
    claim = by_name(docs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    values = yaml.safe_load((chart_dir("ca4-platform") / "values.yaml").read_text())
    if value_set != "default":
        extra = (chart_dir("ca4-platform") / f"values-{value_set}.yaml").read_text()
        values[name].update(yaml.safe_load(extra).get(name, {}))
    size = values[name]["persistence"]["size"]
    assert claim["spec"]["resources"]["requests"]["storage"] == size
    # The non-root user may write the volume: its group owns it (fsGroup).
    context = spec["securityContext"]
    assert context["fsGroup"] == context["runAsGroup"]
    assert context["runAsUser"] != 0
    if name == "alertmanager":
        assert f"--storage.path={PERSISTED[name]}" in spec["containers"][0]["args"]


def test_persistence_off_falls_back_to_an_empty_dir(helm: str) -> None:
    docs = render(
        helm,
        *("--set", "alertmanager.persistence.enabled=false"),
        *("--set", "grafana.persistence.enabled=false"),
    )
    for name in PERSISTED:
        volume = next(
            v for v in pod_spec(by_name(docs, "Deployment", name))["volumes"] if v["name"] == "data"
        )
        assert "emptyDir" in volume, name
    assert not [
        d
        for d in docs
        if d["kind"] == "PersistentVolumeClaim"
        and d["metadata"]["name"] in {"alertmanager-data", "grafana-data"}
    ]


def test_persistence_storage_class_and_size_come_from_values(helm: str) -> None:
    docs = render(
        helm,
        *("--set", "alertmanager.persistence.storageClassName=gp3"),
        *("--set", "grafana.persistence.size=3Gi"),
    )
    assert (
        by_name(docs, "PersistentVolumeClaim", "alertmanager-data")["spec"]["storageClassName"]
        == "gp3"
    )
    grafana = by_name(docs, "PersistentVolumeClaim", "grafana-data")["spec"]
    assert grafana["resources"]["requests"]["storage"] == "3Gi"
    assert "storageClassName" not in grafana, "empty: the cluster's default class"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "alertmanager.persistence.size=1GB"], "alertmanager/persistence/size"),
        (["--set", "grafana.persistence.size=big"], "grafana/persistence/size"),
        (["--set", "grafana.persistence.storageClassName=Fast_SSD"], "storageClassName"),
        (["--set", "alertmanager.persistence.enabled=yes"], "alertmanager/persistence/enabled"),
        (["--set", "grafana.persistence.accessMode=RWX"], "accessMode"),
    ],
)
def test_the_schema_refuses_bad_persistence_values(
    helm: str, args: list[str], message: str
) -> None:
    assert message in refused(helm, *args)


# --- 5. A StatefulSet's claim size stays the live one (its volume templates cannot change) --------

LIVE_CLAIM_LOOKUP = 'lookup "apps/v1" "StatefulSet" .namespace .name'


def render_with_live_claims(
    helm: str, tmp_path: Path, live_size: str | None, *args: str
) -> list[Manifest]:
    """ca4-platform rendered as if each StatefulSet of the release ran with ``data`` claims of
    ``live_size`` (None: a first install)."""
    answers = {}
    if live_size is not None:
        requests = f'(dict "requests" (dict "storage" "{live_size}"))'
        claim = f'(dict "metadata" (dict "name" "data") "spec" (dict "resources" {requests}))'
        answers[LIVE_CLAIM_LOOKUP] = f'(dict "spec" (dict "volumeClaimTemplates" (list {claim})))'
    result = render_with_lookups(helm, "ca4-platform", tmp_path, answers, *args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def claim_sizes(docs: list[Manifest]) -> dict[str, str]:
    return {
        d["metadata"]["name"]: d["spec"]["volumeClaimTemplates"][0]["spec"]["resources"][
            "requests"
        ]["storage"]
        for d in docs
        if d["kind"] == "StatefulSet"
    }


def test_a_larger_persistence_size_keeps_the_live_claims_and_feeds_the_checks(
    helm: str, tmp_path: Path
) -> None:
    """The guide's capacity step raises kafka.persistence.size with the data disk. Kubernetes
    refuses any change to a StatefulSet's volumeClaimTemplates, so rendering the new size into
    them made `helm upgrade` fail; the live claims' size is kept (local-path does not enforce it
    anyway), and the new value is what the capacity check counts on."""
    bigger = ("--set", "kafka.persistence.size=120Gi", "--set", "loki.persistence.size=80Gi")
    prod = values_args("ca4-platform", "prod")

    upgraded = claim_sizes(render_with_live_claims(helm, tmp_path / "up", "50Gi", *prod, *bigger))
    installed = claim_sizes(render_with_live_claims(helm, tmp_path / "new", None, *prod, *bigger))

    assert upgraded == {"kafka": "50Gi", "loki": "50Gi"}
    assert installed == {"kafka": "120Gi", "loki": "80Gi"}


LIVE_PVC_LOOKUP = 'lookup "v1" "PersistentVolumeClaim" .namespace .name'
LIVE_CLASS_LOOKUP = (
    'lookup "storage.k8s.io/v1" "StorageClass" "" (dig "spec" "storageClassName" "" $live)'
)


@pytest.mark.parametrize(("expandable", "expected"), [(False, "10Gi"), (True, "20Gi")])
def test_a_claim_grows_only_where_its_storage_class_can_expand_it(
    helm: str, tmp_path: Path, expandable: bool, expected: str
) -> None:
    """Resizing a bound claim of K3s's local-path class is refused, so a larger
    prometheus.persistence.size made helm upgrade fail; a class that expands volumes takes it."""
    live_claim = (
        '(dict "spec" (dict "storageClassName" "local-path" "resources" '
        '(dict "requests" (dict "storage" "10Gi"))))'
    )
    live_class = f'(dict "allowVolumeExpansion" {str(expandable).lower()})'
    result = render_with_lookups(
        helm,
        "ca4-platform",
        tmp_path,
        {LIVE_PVC_LOOKUP: live_claim, LIVE_CLASS_LOOKUP: live_class},
        *values_args("ca4-platform", "dev"),
        *("--set", "prometheus.persistence.size=20Gi"),
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    claim = by_name(docs, "PersistentVolumeClaim", "prometheus-data")
    assert claim["spec"]["resources"]["requests"]["storage"] == expected
    flags = prometheus_flags(docs)
    assert flags["--storage.tsdb.retention.size"] == "16384MB"  # 80% of the value: the disk
