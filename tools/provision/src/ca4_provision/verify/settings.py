"""Where ``ca4 verify`` finds each component: ``CA4_*`` variables, overridable by options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Target = Literal["local", "k3s"]

#: Components that may be absent from a target; absent means "not deployed", never "pass".
OPTIONAL_COMPONENTS: dict[Target, frozenset[str]] = {
    "local": frozenset({"grafana", "loki", "archive"}),
    "k3s": frozenset(),
}


class VerifySettings(BaseSettings):
    """Endpoints and limits of one verification run.

    For ``--target k3s`` the run opens its own kubectl port-forwards and replaces the URLs with
    them (loopback URLs given to it are refused); for ``--target local`` the defaults match the
    dev stack and compose: the edge on 8002, the worker on 8001.
    """

    model_config = SettingsConfigDict(
        env_prefix="CA4_",
        extra="ignore",
        frozen=True,
        use_attribute_docstrings=True,
        env_ignore_empty=True,
    )

    EDGE_API_URL: str = "http://127.0.0.1:8002"
    """The edge the SDK reports to (the SDK's ``CA4_EDGE_API_URL``): locally the dev edge or
    compose's, which route ``/v1/metadata`` to the processor."""
    API_KEY: str = Field(default="ca4-dev-key", repr=False)
    """API key sent as ``Authorization: Bearer`` to the processor and to the worker's read API
    (scopes ``write+read``); the dev stack accepts ``ca4-dev-key``."""
    WORKER_URL: str = "http://127.0.0.1:8001"
    """The worker's read API."""
    KAFKA_BOOTSTRAP_SERVERS: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, to read the published record back by partition and offset."""
    MONGO_URL: str = Field(default="mongodb://127.0.0.1:27017", repr=False)
    """MongoDB-compatible database holding the event store."""
    MONGO_DB: str = "ca4"
    """Database name of the event store."""
    PROMETHEUS_URL: str = "http://127.0.0.1:9090"
    """Prometheus HTTP API."""
    GRAFANA_URL: str = "http://127.0.0.1:3000"
    """Grafana HTTP API."""
    GRAFANA_USER: str | None = None
    """Grafana user for the search API (anonymous access when unset)."""
    GRAFANA_PASSWORD: str | None = Field(default=None, repr=False)
    """Password of ``GRAFANA_USER``."""
    GRAFANA_TOKEN: str | None = Field(default=None, repr=False)
    """Token of a Grafana service account with the Viewer role (required by ``--target k3s``)."""
    S3_BUCKET: str | None = None
    """The archive bucket (``make ca4-verify-e2e`` passes the Terraform output); unset: no check."""
    S3_REGION: str = "eu-west-1"
    """Region of the archive bucket."""
    S3_ENDPOINT_URL: str | None = None
    """S3 endpoint (MinIO locally); unset means AWS, with the operator's AWS credentials."""
    S3_ACCESS_KEY_ID: str | None = Field(default=None, repr=False)
    """Access key for a non-AWS endpoint (AWS uses its own credential chain)."""
    S3_SECRET_ACCESS_KEY: str | None = Field(default=None, repr=False)
    """Secret key for a non-AWS endpoint."""
    ARCHIVE_PREFIX: str = "raw"
    """Key prefix of the archive objects (the worker's ``CA4_ARCHIVE_PREFIX``)."""
    APP_RELEASE: str = "ca4-app"
    """Helm release of the app chart (its Services are ``<release>-processor``/``-worker``)."""
    APP_NAMESPACE: str = "app"
    """Namespace of the processor and worker on K3s."""
    PLATFORM_NAMESPACE: str = "platform"
    """Namespace of Kafka on K3s."""
    MONITORING_NAMESPACE: str = "monitoring"
    """Namespace of Prometheus, Grafana and Loki on K3s."""
    LOKI_URL: str = "http://127.0.0.1:3100"
    """Loki HTTP API."""
    VERIFY_TIMEOUT_S: float = 45.0
    """How long one step may wait for the pipeline to catch up (scrape intervals, shipping)."""
    VERIFY_POLL_S: float = 1.0
    """Pause between two polls of a waiting step."""
