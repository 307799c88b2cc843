"""Where ``ca4 verify`` finds each component: ``CA4_*`` variables, overridable by options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Target = Literal["local", "k3s"]

#: Components that may be absent from a target; absent means "not deployed", never "pass".
OPTIONAL_COMPONENTS: dict[Target, frozenset[str]] = {
    "local": frozenset({"grafana", "loki"}),
    "k3s": frozenset(),
}


class VerifySettings(BaseSettings):
    """Endpoints and limits of one verification run.

    For ``--target k3s`` the URLs are the local ends of ``ca4`` tunnels (or ingress URLs); for
    ``--target local`` the defaults match the dev stack and the services on 8000/8001.
    """

    model_config = SettingsConfigDict(env_prefix="CA4_", extra="ignore", frozen=True)

    EDGE_API_URL: str = "http://127.0.0.1:8000"
    """The processor's base URL (the SDK's ``CA4_EDGE_API_URL``)."""
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
    LOKI_URL: str = "http://127.0.0.1:3100"
    """Loki HTTP API."""
    VERIFY_TIMEOUT_S: float = 45.0
    """How long one step may wait for the pipeline to catch up (scrape intervals, shipping)."""
    VERIFY_POLL_S: float = 1.0
    """Pause between two polls of a waiting step."""
