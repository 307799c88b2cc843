"""The processor's settings: one pydantic-settings class, every knob from ``CA4_*`` variables."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from ca4_schemas.api import DEFAULT_MAX_BATCH_SIZE
from ca4_schemas.constants import TOPIC_GPU_METADATA
from pydantic import Field, PositiveFloat, PositiveInt, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_API_KEY = "ca4-dev-key"
"""The well-known development key, accepted only in ``dev`` when no key is configured."""
DEV_API_KEY_ID = "dev"
"""The key id logged for :data:`DEV_API_KEY`."""

#: Values people leave in templates; a key hash equal to the hash of one of them is refused.
PLACEHOLDER_KEYS = frozenset(
    {"changethis", "changeme", "change-me", "secret", "password", "xxx", "todo", DEV_API_KEY}
)
_KEY_HASH_ENTRY = re.compile(
    r"^(?P<key_id>[A-Za-z0-9][A-Za-z0-9._\-]{0,63}):(?P<digest>[0-9a-f]{64})$"
)


class ApiKeyConfigError(ValueError):
    """A ``key_id:sha256hex`` entry is malformed or hashes a placeholder key."""


def parse_key_hashes(text: str, *, source: str) -> dict[str, str]:
    """Parse ``key_id:sha256hex`` entries (comma- or newline-separated) into ``{digest: key_id}``.

    Lines starting with ``#`` are comments, so a mounted secret file can explain itself.
    """
    placeholder_digests = {hashlib.sha256(key.encode()).hexdigest() for key in PLACEHOLDER_KEYS}
    digests: dict[str, str] = {}
    for raw_entry in re.split(r"[,\n]", text):
        entry = raw_entry.strip()
        if not entry or entry.startswith("#"):
            continue
        match = _KEY_HASH_ENTRY.match(_lower_digest(entry))
        if match is None:
            raise ApiKeyConfigError(
                f"{source}: entry {entry.split(':', 1)[0]!r}... is not 'key_id:<64 hex sha256>'"
            )
        if match["digest"] in placeholder_digests:
            raise ApiKeyConfigError(
                f"{source}: key {match['key_id']!r} is a placeholder or the public dev key; "
                "generate a real one (python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        digests[match["digest"]] = match["key_id"]
    return digests


def _lower_digest(entry: str) -> str:
    key_id, _, digest = entry.partition(":")
    return f"{key_id}:{digest.lower()}"


class Settings(BaseSettings):
    """Everything the processor can be told; defaults suit the local dev stack."""

    model_config = SettingsConfigDict(
        env_prefix="CA4_", env_file=".env", extra="ignore", use_attribute_docstrings=True
    )

    ENVIRONMENT: Literal["dev", "test", "prod"] = "dev"
    """``prod`` refuses to start without a configured API key; ``dev`` falls back to the dev key."""

    KAFKA_BOOTSTRAP_SERVERS: str = "127.0.0.1:9092"
    """Comma-separated ``host:port`` list of Kafka brokers."""
    KAFKA_TOPIC: str = TOPIC_GPU_METADATA
    """Topic the events are published to."""
    KAFKA_CLIENT_ID: str = "ca4-processor"
    """Client id shown in broker logs and quotas."""
    KAFKA_LINGER_MS: int = Field(default=2, ge=0, le=1000)
    """How long the producer waits to fill a batch: a few ms of latency for much throughput."""
    KAFKA_COMPRESSION: Literal["gzip", "lz4", "zstd", "snappy"] | None = None
    """Producer compression (JSON compresses well; off by default to save the CPU)."""
    KAFKA_REQUEST_TIMEOUT_MS: PositiveInt = 10_000
    """aiokafka's request timeout; the publish timeout below is what the client waits."""
    KAFKA_MAX_REQUEST_SIZE: PositiveInt = 1024 * 1024
    """The producer's ``max_request_size``: no message is ever larger than this."""
    KAFKA_MAX_MESSAGE_BYTES: PositiveInt | None = None
    """Largest message the topic takes; unset reads the topic's ``max.message.bytes`` at start
    (falling back to ``KAFKA_MAX_REQUEST_SIZE`` when the broker won't say). A report whose
    event is larger gets ``413``."""
    PUBLISH_TIMEOUT_S: PositiveFloat = 5.0
    """Longest wait for Kafka's acknowledgement before answering ``503``."""
    RETRY_AFTER_S: PositiveInt = 5
    """``Retry-After`` seconds sent with ``503`` while Kafka is unavailable."""
    READINESS_TIMEOUT_S: PositiveFloat = 2.0
    """How long ``/readyz`` waits for the broker to answer."""

    API_KEY_HASHES: str = ""
    """Comma-separated ``key_id:sha256hex`` entries: the SHA-256 of each key, never the key."""
    API_KEYS_FILE: Path | None = None
    """A mounted secret with one ``key_id:sha256hex`` per line, re-read when it changes."""
    API_KEYS_RELOAD_INTERVAL_S: PositiveFloat = 5.0
    """How often the keys file is checked, so a revoked key stops working without a restart."""

    RATE_LIMIT_PER_SECOND: float = Field(default=1000.0, ge=0.0)
    """Reports per second per API key (token bucket refill; a batch of N reports costs N
    tokens); ``0`` disables rate limiting."""
    RATE_LIMIT_BURST: PositiveInt = 2000
    """Token bucket size: how many reports a key may send at once after being idle; a batch
    with more reports than this is refused with ``413`` (split it)."""

    MAX_BODY_BYTES: PositiveInt = 5 * 1024 * 1024
    """Largest request body on the wire (compressed or not)."""
    MAX_DECOMPRESSED_BYTES: PositiveInt = 5 * 1024 * 1024
    """Largest body after gzip decompression, so a zip bomb costs us nothing."""
    MAX_BATCH_SIZE: PositiveInt = DEFAULT_MAX_BATCH_SIZE
    """Most reports in one batch request."""

    FORWARDED_ALLOW_IPS: str = ""
    """Proxies (comma-separated IPs/CIDRs, or ``*``) whose ``X-Forwarded-*`` headers the app
    honours itself; empty leaves it to ``uvicorn --proxy-headers --forwarded-allow-ips``."""

    SDK_WHEEL_DIR: Path = Path("dist/sdk")
    """Where the SDK wheel this edge serves at ``/sdk/`` lies (relative to the working
    directory; the image and ``make dev`` build it there)."""

    LOG_LEVEL: str = "INFO"
    """Minimum log level."""
    OTEL_EXPORTER: Literal["none", "console", "otlp"] = "none"
    """Where spans go; ``none`` still creates them so trace ids reach logs and Kafka headers."""
    OTEL_ENDPOINT: str | None = None
    """OTLP/HTTP traces endpoint when ``OTEL_EXPORTER=otlp``."""

    @model_validator(mode="after")
    def _keys_configured_outside_dev(self) -> Self:
        inline_keys = parse_key_hashes(self.API_KEY_HASHES, source="CA4_API_KEY_HASHES")
        if self.ENVIRONMENT == "prod" and not inline_keys and not self.API_KEYS_FILE:
            raise ValueError(
                "CA4_ENVIRONMENT=prod needs API keys: set CA4_API_KEY_HASHES='id:<sha256 hex>' "
                "or mount CA4_API_KEYS_FILE; the public dev key is never accepted in prod"
            )
        return self

    @property
    def uses_dev_key(self) -> bool:
        """True when no key is configured and the dev key is accepted instead."""
        return (
            self.ENVIRONMENT != "prod"
            and not self.API_KEY_HASHES.strip()
            and not self.API_KEYS_FILE
        )


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
