"""The processor's settings: one pydantic-settings class, every knob from ``CA4_*`` variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from ca4_auth import accepts_dev_key, check_key_settings
from ca4_schemas.api import DEFAULT_MAX_BATCH_SIZE
from ca4_schemas.constants import TOPIC_GPU_METADATA
from ca4_schemas.v1 import MAX_GPUS_PER_REPORT
from pydantic import AliasChoices, Field, PositiveFloat, PositiveInt, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the processor can be told; defaults suit the local dev stack."""

    # An empty variable counts as unset, as a chart or compose file that writes every key
    # leaves them.
    model_config = SettingsConfigDict(
        env_prefix="CA4_",
        env_file=".env",
        extra="ignore",
        use_attribute_docstrings=True,
        env_ignore_empty=True,
        populate_by_name=True,  # the fields with old variable names as aliases
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
    """Comma-separated ``key_id:sha256hex[:tenant[:scope+scope]]`` entries: the SHA-256 of each
    key (never the key), its owner and scopes (``write``, ``read``, ``read:all``); ``id:hash``
    alone means tenant = id, scopes ``write+read``."""
    API_KEYS_FILE: Path | None = None
    """A mounted secret with one ``key_id:sha256hex[:tenant[:scopes]]`` per line, re-read when it
    changes (the worker mounts the same file)."""
    API_KEYS_RELOAD_INTERVAL_S: PositiveFloat = 5.0
    """How often the keys file is checked, so a revoked key stops working without a restart."""

    MONGO_URL: str = "mongodb://127.0.0.1:27017"
    """The MongoDB-compatible database holding ``session_owners`` (the worker's database)."""
    MONGO_DB: str = "ca4"
    """Database name (the same as the worker's)."""
    SESSION_OWNER_TIMEOUT_S: PositiveFloat = 2.0
    """Deadline of a session-ownership check; past it the request answers ``503``."""
    SESSION_OWNER_CACHE_SIZE: PositiveInt = 100_000
    """Session owners remembered in process (claims never change), so a known session costs
    no database round trip; about 200 bytes each."""

    RATE_LIMIT_PER_SECOND: float = Field(default=1000.0, ge=0.0)
    """Tokens per second per API key (token bucket refill; a tenant's keys together get
    ``RATE_LIMIT_TENANT_KEYS`` times this): a request costs one token per report, per
    ``RATE_LIMIT_TOKEN_WEIGHT`` of its body's weight or per ``RATE_LIMIT_GPUS_PER_TOKEN`` of
    its reports' GPUs, whichever is most; ``0`` disables rate limiting."""
    RATE_LIMIT_BURST: PositiveInt = 2000
    """Token bucket size: how many tokens a key may spend at once after being idle; a request
    costing more than this is refused with ``413`` (split it)."""
    RATE_LIMIT_TOKEN_WEIGHT: PositiveInt = 16 * 1024
    """Body weight (see ``MAX_BODY_WEIGHT``) one token pays for. Validating costs CPU in
    proportion to the weight, and this share is taken before the body is validated, so a body
    that fails validation pays for refusing it too. SDK reports of up to 6 GPUs weigh less
    (one token each); a 64-GPU one about nine."""
    RATE_LIMIT_GPUS_PER_TOKEN: PositiveInt = 4
    """GPUs one token pays for, counted over a request's valid reports. The worker's cost
    follows the GPUs (a GPU document and series each), which the weight alone undercounts: a
    report of 64 GPUs with only the required fields weighs two tokens. Up to 4 GPUs per report
    cost nothing more than the report itself; a 64-GPU report costs 16."""
    RATE_LIMIT_TENANT_KEYS: float = Field(default=2.0, ge=1.0, le=10_000.0, allow_inf_nan=False)
    """How many keys' rate limits one tenant's keys share (its bucket refills at this many
    times ``RATE_LIMIT_PER_SECOND`` and holds this many times ``RATE_LIMIT_BURST``): a tenant
    with one key never meets it, and one handed a key per notebook or team does not multiply
    its share of the processors and the worker by the number of its keys. A request is paid
    from both buckets, or refused by the one that is short."""
    RATE_LIMIT_NEW_SESSIONS_PER_SECOND: float = Field(default=20.0, ge=0.0)
    """Sessions one tenant may start per second here (their first report; a bucket per tenant,
    beside the token buckets): more answer ``429`` with ``Retry-After``, nothing accepted. A
    new session costs the worker several documents to create (its claim, session, usage
    record and GPU documents) where a known one costs updates, so a tenant sending every
    report as a new session within its token rate outran the store and delayed every tenant's
    projections. The SDK starts one session per runtime. ``0`` turns this limit off, as
    ``RATE_LIMIT_PER_SECOND`` ``0`` turns off every rate limit."""
    RATE_LIMIT_NEW_SESSIONS_BURST: PositiveInt = 1000
    """New sessions one tenant may start at once after a quiet spell (a fleet of notebooks
    starting together)."""
    MAX_REQUESTS_IN_FLIGHT_PER_TENANT: PositiveInt = Field(
        default=16,
        validation_alias=AliasChoices(
            "CA4_MAX_REQUESTS_IN_FLIGHT_PER_TENANT", "CA4_MAX_REQUESTS_IN_FLIGHT_PER_KEY"
        ),
    )
    """Requests of one tenant, whichever of its keys sent them, whose bodies this process is
    reading or validating at once; more get ``429``. Bounds what one tenant's uploads hold (up
    to ``MAX_BODY_BYTES`` each) and its share of the event loop. Waiting for the ownership
    check and Kafka's acknowledgement takes no slot (``MAX_WAITING_WEIGHT_PER_TENANT`` bounds
    it), so a tenant with many notebooks seldom has more than one or two requests here
    (docs/architecture.md, "Tenancy"). Replaces ``CA4_MAX_REQUESTS_IN_FLIGHT_PER_KEY``, still
    read when this is unset."""
    MAX_WAITING_WEIGHT_PER_TENANT: PositiveInt = Field(
        default=16 * 1024 * 1024,
        validation_alias=AliasChoices(
            "CA4_MAX_WAITING_WEIGHT_PER_TENANT", "CA4_MAX_WAITING_WEIGHT_PER_KEY"
        ),
    )
    """Weight (see ``MAX_BODY_WEIGHT``) of one tenant's validated reports, whichever of its keys
    sent them, this process may hold while they wait for the ownership check and Kafka's
    acknowledgement; a request that would take the tenant over it gets ``429`` with ``Retry-After``.
    A slow Kafka or database fills it, and so does a burst of heavy batches from one tenant on busy
    cores (their answers wait for the event loop); without it, the rate limit and those deadlines
    were the only bound on what a tenant parks here. A request always fits when its tenant has
    nothing waiting, so no valid body is refused for good; as large as ``MAX_BODY_WEIGHT`` by
    default, so the heaviest batch also fits beside the little a healthy Kafka keeps waiting
    (docs/architecture.md, "Reports waiting on Kafka"). Replaces
    ``CA4_MAX_WAITING_WEIGHT_PER_KEY``, still read when this is unset."""
    MAX_WAITING_WEIGHT: PositiveInt = 32 * 1024 * 1024
    """The same, for every tenant together: past it a request gets ``503``. What waits decodes
    to a few times its weight, so this keeps the process inside its memory limit however many
    tenants send while Kafka is slow."""
    BODY_READ_TIMEOUT_S: PositiveFloat = 60.0
    """Deadline for receiving a request's body; past it the request gets ``408`` (a client
    that stalls mid-upload holds its buffer until then)."""

    MAX_BODY_BYTES: PositiveInt = 5 * 1024 * 1024
    """Largest request body on the wire (compressed or not)."""
    MAX_DECOMPRESSED_BYTES: PositiveInt = 5 * 1024 * 1024
    """Largest body after gzip decompression: a zip bomb is cut off one byte past it, and a gzip
    body pays its decompressed bytes to the rate limit as it is decompressed."""
    MAX_BODY_WEIGHT: PositiveInt = 16 * 1024 * 1024
    """Largest weight of a body (decompressed): its bytes plus 80 per JSON object, 64 per
    array, 32 per comma and 8 per string (``ca4_processor.body.body_weight``). It bounds what a
    valid body decodes to and, with ``ca4_processor.copy_cost``, what one that fails validation
    holds (docs/architecture.md, "A body is refused by its weight too"). The largest batch
    of SDK reports the byte caps take weighs 16.2 MB (3.1 times its bytes); process-heavy
    batches weigh more, and those get ``413`` when over it, saying how many bytes of such JSON
    fit and into how many batches to split (the SDK halves a batch on ``413``). A report the
    topic takes (1 MiB) fits on its own unless its text is mostly commas or quotes."""
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
        check_key_settings(self.ENVIRONMENT, self.API_KEY_HASHES, self.API_KEYS_FILE)
        return self

    @property
    def burst_short_of(self) -> int | None:
        """Tokens one report of the most GPUs costs, when ``RATE_LIMIT_BURST`` cannot pay them
        (such a report is ``413`` for good, and the SDK drops it); else ``None``."""
        needed = -(-MAX_GPUS_PER_REPORT // self.RATE_LIMIT_GPUS_PER_TOKEN)
        if self.RATE_LIMIT_PER_SECOND > 0 and needed > self.RATE_LIMIT_BURST:
            return needed
        return None

    @property
    def uses_dev_key(self) -> bool:
        """True when no key is configured and the dev key is accepted instead."""
        return accepts_dev_key(self.ENVIRONMENT, self.API_KEY_HASHES, self.API_KEYS_FILE)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
