"""What the deploy tier executes and what it only checks (with why), and its stand-ins.

Tests mark their row as passed; the conftest prints the table at the end of the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

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
        "heap set to 256m with --set (resources only)",
    ),
    Row(
        "kafka-topics (Job, prod)",
        "executed",
        "its rendered bash script; topics checked with the admin client",
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
        "DocumentDB (prod)",
        "stand-in",
        f"{DOCUMENTDB_HOST} -> the shared dev stack's FerretDB, no TLS (FerretDB TLS not landed)",
    ),
    Row(
        "S3 (prod, AWS)",
        "stand-in",
        "CA4_S3_ENDPOINT_URL -> the dev stack's MinIO, AWS_* keys stand in for instance-profile "
        "credentials",
    ),
    Row(
        "prometheus (Deployment)",
        "checked",
        "promtool check config/rules on the rendered files (kubernetes_sd needs an API server)",
    ),
    Row(
        "grafana",
        "checked",
        "datasource uids of the rendered provisioning vs every dashboard (no Grafana binary here)",
    ),
    Row(
        "loki / promtail",
        "checked",
        "rendered configs parse; promtail pushes to the rendered Loki service:port (no binaries)",
    ),
    Row(
        "otel collector",
        "checked",
        "none deployed: prod values turn export off (CA4_OTEL_EXPORTER=none)",
    ),
    Row(
        "K3s (API server, kubelet, NetworkPolicy, Ingress)",
        "checked",
        "schema-validated manifests in tests/infra (no cluster can run here)",
    ),
]

RESULTS: dict[str, bool] = {}


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
