"""Where the dev stack keeps things and which ports it binds, all overridable by env vars.

Knobs (defaults in brackets):

- ``CA4_DEVSTACK_CACHE`` [``~/.cache/ca4/devstack``]: installed jars and binaries, shared by
  every clone on the machine.
- ``CA4_DEVSTACK_HOME`` [``<repo>/.devstack``]: runtime state (data dirs, logs, PID files).
- ``CA4_DEVSTACK_VENDOR`` [``<repo>/../shared/vendor``]: the pinned source archives DocumentDB
  is built from (checked against their sha256).
- ``CA4_DEVSTACK_KAFKA_PORT`` [9092], ``CA4_DEVSTACK_KAFKA_CONTROLLER_PORT`` [9093],
  ``CA4_DEVSTACK_MONGO_PORT`` [27017], ``CA4_DEVSTACK_MONGO_TLS_PORT`` [27018],
  ``CA4_DEVSTACK_FERRETDB_DEBUG_PORT`` [8088],
  ``CA4_DEVSTACK_POSTGRES_PORT`` [5433],
  ``CA4_DEVSTACK_S3_PORT`` [9000], ``CA4_DEVSTACK_S3_CONSOLE_PORT`` [9001],
  ``CA4_DEVSTACK_PROMETHEUS_PORT`` [9090], ``CA4_DEVSTACK_ALERTMANAGER_PORT`` [9094],
  ``CA4_DEVSTACK_PROCESSOR_PORT`` [8000], ``CA4_DEVSTACK_WORKER_PORT`` [8001],
  ``CA4_DEVSTACK_EDGE_PORT`` [8002] (the dev edge: one URL for the processor and the worker).
- ``CA4_DEVSTACK_ALERT_WEBHOOK_URL`` [none]: where Alertmanager posts notifications; without
  it alerts stay in Alertmanager (its API and ``amtool alert query`` show them).
- ``CA4_RUNBOOK_BASE_URL`` [:data:`RUNBOOK_BASE_URL`]: the runbooks page alert links point into.
- ``CA4_DEVSTACK_KAFKA_HEAP`` [``512m``]: the broker's maximum Java heap.
- ``CA4_DEVSTACK_HEALTH_TIMEOUT`` [120]: seconds ``up`` waits for a service to turn healthy.
- ``CA4_DEVSTACK_TLS`` [off]: FerretDB also serves TLS on the TLS port, with a certificate of a
  local CA (``ca4 devstack up --tls`` turns it on and keeps it on for this state dir).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
S3_ACCESS_KEY_ID = "ca4dev"  # dev-only credentials for the local S3 server
S3_SECRET_ACCESS_KEY = "ca4dev-secret"  # noqa: S105 - local dev stack only, bound to 127.0.0.1
S3_BUCKET = "ca4-archive"
KAFKA_TOPICS = ("gpu-metadata", "gpu-metadata.dlq")
KAFKA_TOPIC_PARTITIONS = 3
#: Under the state dir: the local CA and FerretDB's certificate, and the file that keeps TLS on.
TLS_DIR = "tls"
TLS_MARKER = f"{TLS_DIR}/enabled"
POSTGRES_SUPERUSER = "postgres"  # the role initdb creates; local trust auth on 127.0.0.1 only
#: The page alert rules link into (``<base>#<alertname>``): Prometheus's external label
#: ``runbook_base_url`` everywhere, defaulting to this in compose and the Helm chart too
#: (tests/infra/test_links.py compares them).
RUNBOOK_BASE_URL = "https://github.com/ca4-project/ca4/blob/main/observability/runbooks.md"


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a port number") from exc
    if not 0 < port < 65536:
        raise ValueError(f"{name}={port} is outside 1-65535")
    return port


def find_repo_root(start: Path | None = None) -> Path | None:
    """The nearest folder above ``start`` holding the uv workspace root ``pyproject.toml``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and "[tool.uv.workspace]" in pyproject.read_text(encoding="utf-8"):
            return folder
    return None


@dataclass(frozen=True)
class Ports:
    """TCP ports on 127.0.0.1, one per listener."""

    kafka: int
    kafka_controller: int
    mongo: int
    mongo_tls: int
    ferretdb_debug: int
    postgres: int
    s3: int
    s3_console: int
    prometheus: int
    alertmanager: int
    processor: int
    worker: int
    edge: int
    """The dev edge, routing to the processor and the worker as the ingress does."""


@dataclass(frozen=True)
class DevstackSettings:
    """Resolved locations, ports and tunables for one dev stack."""

    repo_root: Path
    home: Path
    cache: Path
    vendor: Path
    ports: Ports
    kafka_heap: str
    health_timeout_s: float
    alert_webhook_url: str | None
    runbook_base_url: str
    tls: bool = False
    """FerretDB also serves TLS (``CA4_DEVSTACK_TLS``, or ``up --tls`` once for this state dir)."""

    @classmethod
    def from_env(cls) -> DevstackSettings:
        """Read the ``CA4_DEVSTACK_*`` knobs, falling back to the documented defaults."""
        env = os.environ
        repo_root = (
            find_repo_root() or find_repo_root(Path(__file__).parent) or Path.cwd().resolve()
        )
        home = Path(env.get("CA4_DEVSTACK_HOME") or repo_root / ".devstack").expanduser()
        cache = Path(
            env.get("CA4_DEVSTACK_CACHE") or Path.home() / ".cache" / "ca4" / "devstack"
        ).expanduser()
        vendor = Path(
            env.get("CA4_DEVSTACK_VENDOR") or repo_root.parent / "shared" / "vendor"
        ).expanduser()
        ports = Ports(
            kafka=_port("CA4_DEVSTACK_KAFKA_PORT", 9092),
            kafka_controller=_port("CA4_DEVSTACK_KAFKA_CONTROLLER_PORT", 9093),
            mongo=_port("CA4_DEVSTACK_MONGO_PORT", 27017),
            mongo_tls=_port("CA4_DEVSTACK_MONGO_TLS_PORT", 27018),
            ferretdb_debug=_port("CA4_DEVSTACK_FERRETDB_DEBUG_PORT", 8088),
            # Not 5432: a distribution's own PostgreSQL cluster usually listens there.
            postgres=_port("CA4_DEVSTACK_POSTGRES_PORT", 5433),
            s3=_port("CA4_DEVSTACK_S3_PORT", 9000),
            s3_console=_port("CA4_DEVSTACK_S3_CONSOLE_PORT", 9001),
            prometheus=_port("CA4_DEVSTACK_PROMETHEUS_PORT", 9090),
            # Not 9093, Alertmanager's usual port: the Kafka controller listens there.
            alertmanager=_port("CA4_DEVSTACK_ALERTMANAGER_PORT", 9094),
            processor=_port("CA4_DEVSTACK_PROCESSOR_PORT", 8000),
            worker=_port("CA4_DEVSTACK_WORKER_PORT", 8001),
            edge=_port("CA4_DEVSTACK_EDGE_PORT", 8002),
        )
        tls_asked = env.get("CA4_DEVSTACK_TLS", "").lower() in {"1", "true", "yes", "on"}
        return cls(
            repo_root=repo_root,
            tls=tls_asked or (home.resolve() / TLS_MARKER).is_file(),
            home=home.resolve(),
            cache=cache.resolve(),
            vendor=vendor.resolve(),
            ports=ports,
            kafka_heap=env.get("CA4_DEVSTACK_KAFKA_HEAP", "512m"),
            health_timeout_s=float(env.get("CA4_DEVSTACK_HEALTH_TIMEOUT", "120")),
            alert_webhook_url=env.get("CA4_DEVSTACK_ALERT_WEBHOOK_URL") or None,
            runbook_base_url=env.get("CA4_RUNBOOK_BASE_URL") or RUNBOOK_BASE_URL,
        )

    @property
    def kafka_bootstrap(self) -> str:
        """``host:port`` of the Kafka broker listener."""
        return f"{HOST}:{self.ports.kafka}"

    @property
    def mongo_url(self) -> str:
        """MongoDB connection string of FerretDB."""
        return f"mongodb://{HOST}:{self.ports.mongo}"

    @property
    def tls_dir(self) -> Path:
        """The local CA and FerretDB's server certificate."""
        return self.home / TLS_DIR

    @property
    def mongo_tls_url(self) -> str:
        """FerretDB's TLS listener, trusting the local CA, as a DocumentDB URL trusts the RDS CA."""
        ca = self.tls_dir / "ca.pem"
        return f"mongodb://{HOST}:{self.ports.mongo_tls}/?tls=true&tlsCAFile={ca}"

    @property
    def postgres_url(self) -> str:
        """libpq URL of the PostgreSQL that FerretDB stores into (superuser, trust auth)."""
        return (
            f"postgres://{POSTGRES_SUPERUSER}@{HOST}:{self.ports.postgres}/postgres?sslmode=disable"
        )

    @property
    def s3_endpoint_url(self) -> str:
        """HTTP endpoint of the S3 server."""
        return f"http://{HOST}:{self.ports.s3}"

    @property
    def prometheus_url(self) -> str:
        """HTTP endpoint of Prometheus."""
        return f"http://{HOST}:{self.ports.prometheus}"

    @property
    def edge_url(self) -> str:
        """The dev edge: the one URL notebooks, the SDK and ``ca4 send`` report to."""
        return f"http://{HOST}:{self.ports.edge}"

    @property
    def alertmanager_url(self) -> str:
        """HTTP endpoint of Alertmanager."""
        return f"http://{HOST}:{self.ports.alertmanager}"

    def client_env(self) -> dict[str, str]:
        """The ``CA4_*`` variables that point services and tests at this stack."""
        tls = {
            "CA4_DEVSTACK_MONGO_TLS_URL": self.mongo_tls_url,
            "CA4_DEVSTACK_MONGO_TLS_CA_FILE": str(self.tls_dir / "ca.pem"),
        }
        return (tls if self.tls else {}) | {
            "CA4_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "CA4_MONGO_URL": self.mongo_url,
            "CA4_S3_ENDPOINT_URL": self.s3_endpoint_url,
            "CA4_S3_ACCESS_KEY_ID": S3_ACCESS_KEY_ID,
            "CA4_S3_SECRET_ACCESS_KEY": S3_SECRET_ACCESS_KEY,
            "CA4_S3_BUCKET": S3_BUCKET,
            "CA4_PROMETHEUS_URL": self.prometheus_url,
        }
