"""What the deploy tier executes and what it only checks (with why), and its stand-ins.

Tests mark their row as passed; the conftest prints the table at the end of the run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aioboto3
from ca4_worker.domain.archive import decode_archive_object
from pymongo import AsyncMongoClient

from tests.support.services import Endpoints

# The DocumentDB cluster endpoint the prod mongo-url Secret names; /etc/hosts maps it to FerretDB.
DOCUMENTDB_HOST = "ca4.cluster-deploytier.eu-west-1.docdb.amazonaws.com"


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    component: str
    how: str  # "executed" or "checked"
    detail: str


ROWS = [
    Row(
        "kafka (StatefulSet, prod: 3)",
        "executed",
        "chart's start.sh + server.properties; apache/kafka:<tag> = dev-stack jars of that tag; "
        "heap set to 384m with --set (resources only)",
    ),
    Row(
        "kafka + kafka-topics (dev: 1 broker)",
        "executed",
        "the same, under values-dev.yaml: a one-voter quorum and the chart's default topics",
    ),
    Row(
        "kafka-topics (Job, prod)",
        "executed",
        "its rendered bash script; topics checked with the admin client",
    ),
    Row(
        "kafka metrics (JMX exporter javaagent)",
        "executed",
        "each broker's init container runs its rendered script (host curl and sha256sum) against "
        "the mirror below; the broker's JVM runs the agent with the rendered rules; /metrics read "
        "on the annotated port; a tool exec'd beside the broker starts no second agent",
    ),
    Row(
        "Maven Central (kafka.metrics.agent.repositoryUrl)",
        "stand-in",
        "a local HTTP mirror with Maven's layout (the air-gapped knob) serving the jar the dev "
        "stack's pinned download took from Maven Central, checked against versions.py's sha256",
    ),
    Row(
        "kafka tunnel listener",
        "executed",
        "asyncio forwarder stands in for ssh -L + NodePort; NetworkPolicy not enforced here",
    ),
    Row(
        "processor (Deployment, prod)",
        "executed",
        "Dockerfile CMD on the workspace venv; 1 replica (HPA min 3 not reproduced)",
    ),
    Row(
        "worker (Deployment, prod)",
        "executed",
        "Dockerfile CMD on the workspace venv; 1 replica of 3",
    ),
    Row(
        "reader (Deployment, prod)",
        "executed",
        "Dockerfile CMD on the workspace venv, CA4_CONSUMERS_ENABLED=false as rendered; 1 replica "
        "of 2; its Kafka and S3 a closed port (its NetworkPolicy allows the database alone); it "
        "serves the session the worker projected",
    ),
    Row(
        "DocumentDB (prod)",
        "stand-in",
        f"{DOCUMENTDB_HOST} -> the shared dev stack's FerretDB without TLS (TLS with the CA "
        "at the chart's mount path: tests/integration/devstack/test_ferretdb_tls.py)",
    ),
    Row(
        "S3 (prod, AWS)",
        "stand-in",
        "config.s3.endpointUrl -> the dev stack's MinIO, own bucket; AWS_* env stands in for "
        "the instance profile's credentials",
    ),
    Row(
        "prometheus (Deployment)",
        "executed",
        "rendered args, rules and relabels on Debian's 2.42 (chart: v3.5.0); its build lacks "
        "kubernetes_sd, so the tier's pods are file_sd targets with Kubernetes' meta labels; "
        "listens on the pod IP by flag (Go skips the preload library); jobs processor, worker, "
        "reader and kafka up",
    ),
    Row(
        "helm test ca4-app (hook pod)",
        "executed",
        "the rendered hook's shell with the host's curl; its Service URLs (port 80) reach the "
        "pods' 8000 through podnet.c's stand-in for kube-proxy",
    ),
    Row(
        "helm test ca4-platform (kafka hook pod)",
        "executed",
        "the rendered hook's kafka-topics.sh on the dev stack's Kafka jars, against the prod "
        "quorum through the kafka Service",
    ),
    Row(
        "helm test ca4-platform (monitoring hook pod)",
        "executed",
        "the rendered hook's shell with the host's curl, against the running Prometheus and "
        "Alertmanager through their Services",
    ),
    Row(
        "grafana",
        "checked",
        "no binary here: datasource uids vs every dashboard, datasource URLs vs rendered Services",
    ),
    Row(
        "loki / alloy",
        "checked",
        "no binaries (Alloy is not installable here and tails pods through the Kubernetes API): "
        "its config parsed, labels the dashboards filter on, push URL and port vs the rendered "
        "Loki Service",
    ),
    Row(
        "alertmanager (Deployment, prod)",
        "executed",
        "the dev stack's build of the chart's tag, rendered config and receiver Secret; webhook "
        "and Slack receivers point at a local recorder, the email smarthost is unreachable",
    ),
    Row(
        "mongodb (StatefulSet, dev)",
        "checked",
        "no mongod here (dev values only; the tier's database is FerretDB): the URL in its Secret "
        "vs the rendered Service and the app's database name, NetworkPolicies both ways",
    ),
    Row(
        "otel collector",
        "checked",
        "none deployed: prod values turn export off (CA4_OTEL_EXPORTER=none)",
    ),
    Row(
        "K3s (API server, kubelet, NetworkPolicy, Ingress)",
        "checked",
        "no cluster here: manifests schema-valid for K3s' Kubernetes; NetworkPolicies and the "
        "Ingress are not enforced (tests/infra/test_links.py checks them statically)",
    ),
]

RESULTS: dict[str, bool] = {}
TIMINGS: dict[str, float] = {}


def passed(component: str) -> None:
    """Mark a row as proven by a passing test."""
    assert component in {r.component for r in ROWS}, component
    RESULTS[component] = True


def table() -> str:
    """The rows as a plain-text table."""
    lines = [f"{'component':<48} {'how':<10} {'result':<8} detail"]
    for row in ROWS:
        result = "passed" if RESULTS.get(row.component) else "-"
        lines.append(f"{row.component:<48} {row.how:<10} {result:<8} {row.detail}")
    return "\n".join(lines)


def stand_ins() -> dict[str, str]:
    """Names the prod pods resolve to local stand-ins: DocumentDB's endpoint -> FerretDB's host."""
    mongo = urlsplit(os.environ.get("CA4_MONGO_URL", "mongodb://127.0.0.1:27017"))
    return {DOCUMENTDB_HOST: mongo.hostname or "127.0.0.1"}


def operator_objects(api_key: str, mongo_url: str) -> list[dict[str, Any]]:
    """What ``make ca4-deploy-app`` creates outside Helm under prod values: the app Secret (the
    keys file with one real key, the DocumentDB URL) and the RDS CA bundle ConfigMap."""
    port = urlsplit(mongo_url).port or 27017
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    data = {
        "mongo-url": f"mongodb://{DOCUMENTDB_HOST}:{port}/?retryWrites=false",
        "api-key-hashes": f"deploy-tier:{digest}:deploy-tier:write+read\n",
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "ca4-app-secrets", "namespace": "app"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
    bundle = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ca4-db-ca-bundle", "namespace": "app"},
        "data": {"global-bundle.pem": "# stand-in: the local FerretDB serves no TLS\n"},
    }
    return [secret, bundle]


def alertmanager_receivers(docs: list[dict[str, Any]], receiver_url: str) -> list[dict[str, Any]]:
    """The receivers Secret `make ca4-platform-setup` writes before installing ca4-platform (see
    its values.yaml), when the rendered Alertmanager mounts one: the webhook and Slack URLs point at
    ``receiver_url`` (``/webhook``, ``/slack``); the email password is a placeholder."""
    data = {
        "webhook-url": f"{receiver_url}/webhook",
        "slack-api-url": f"{receiver_url}/slack",
        "smtp-password": "unused: the smarthost is unreachable here",
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": volume["secret"]["secretName"],
                "namespace": doc["metadata"]["namespace"],
            },
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }
        for doc in docs
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "alertmanager"
        for volume in doc["spec"]["template"]["spec"].get("volumes", [])
        if "secret" in volume
    ]


def instance_profile_credentials(services: Endpoints) -> dict[str, str]:
    """The AWS_* variables that stand in for the EC2 instance profile (MinIO's keys)."""
    return {
        "AWS_ACCESS_KEY_ID": services.s3_access_key_id,
        "AWS_SECRET_ACCESS_KEY": services.s3_secret_access_key,
    }


def s3_client(services: Endpoints) -> Any:
    """An S3 client of the stand-in (the dev stack's MinIO), for ``async with``."""
    return aioboto3.Session().client(
        "s3",
        endpoint_url=services.s3_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=services.s3_access_key_id,
        aws_secret_access_key=services.s3_secret_access_key,
    )


async def remove_stand_in_data(services: Endpoints, database: str, bucket: str) -> None:
    """Drop the tier's database, and its bucket with every object in it."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(services.mongo_url)
    try:
        await client.drop_database(database)
    finally:
        await client.close()
    async with s3_client(services) as s3:
        listed = await s3.list_objects_v2(Bucket=bucket)
        for item in listed.get("Contents", []):
            await s3.delete_object(Bucket=bucket, Key=item["Key"])
        await s3.delete_bucket(Bucket=bucket)


async def archived_event_ids(services: Endpoints, bucket: str) -> set[str]:
    """Every event id in the archive objects of a bucket (gzipped JSON lines)."""
    ids: set[str] = set()
    async with s3_client(services) as s3:
        listed = await s3.list_objects_v2(Bucket=bucket)
        for item in listed.get("Contents", []):
            body = await (await s3.get_object(Bucket=bucket, Key=item["Key"]))["Body"].read()
            for record in decode_archive_object(body):
                ids.add(json.loads(record.value)["event_id"])
    return ids
