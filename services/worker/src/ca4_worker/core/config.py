"""The worker's settings: every knob from ``CA4_*`` environment variables."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Literal, Self
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ca4_auth import check_key_settings
from ca4_schemas import TOPIC_GPU_METADATA, TOPIC_GPU_METADATA_DLQ
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ca4_worker.application.bounded import WriteLimits

_DOCUMENTDB_HOST = re.compile(r"\.docdb(-elastic)?\.amazonaws\.com(:\d+)?$", re.IGNORECASE)


def without_retryable_writes(mongo_url: str) -> str:
    """``mongo_url`` with ``retryWrites=false`` when it points at Amazon DocumentDB.

    DocumentDB has no retryable writes, and pymongo retries writes by default, so every write
    would fail there. A URL that asks for ``retryWrites=true`` is refused rather than rewritten.
    """
    parts = urlsplit(mongo_url)
    hosts = parts.netloc.rpartition("@")[2].split(",")
    if not any(_DOCUMENTDB_HOST.search(host) for host in hosts):
        return mongo_url
    retry = [v for k, v in parse_qsl(parts.query) if k.lower() == "retrywrites"]
    if retry and retry[-1].lower() != "false":
        raise ValueError("CA4_MONGO_URL: DocumentDB has no retryable writes; use retryWrites=false")
    if retry:
        return mongo_url
    query = f"{parts.query}&retryWrites=false" if parts.query else "retryWrites=false"
    return urlunsplit(parts._replace(path=parts.path or "/", query=query))


def require_ca_file(mongo_url: str) -> str:
    """``mongo_url``, refused when its ``tlsCAFile`` is not a file.

    pymongo would fail on the first connection with a bare ``FileNotFoundError``; a worker whose
    CA bundle is not mounted should say so when it starts.
    """
    ca_files = [v for k, v in parse_qsl(urlsplit(mongo_url).query) if k.lower() == "tlscafile"]
    if ca_files and not Path(ca_files[-1]).is_file():
        raise ValueError(
            f"CA4_MONGO_URL: tlsCAFile={ca_files[-1]} does not exist: mount the database's CA "
            "bundle there (ca4-app chart: config.mongo.caBundle)"
        )
    return mongo_url


class Settings(BaseSettings):
    """Worker configuration; defaults match the local dev stack."""

    # Errors never echo input: CA4_MONGO_URL carries the database password. An empty variable
    # counts as unset, as a chart or compose file that writes every key leaves them.
    model_config = SettingsConfigDict(
        env_prefix="CA4_",
        extra="ignore",
        use_attribute_docstrings=True,
        hide_input_in_errors=True,
        env_ignore_empty=True,
        populate_by_name=True,  # the fields with old variable names as aliases
    )

    environment: Literal["dev", "test", "prod"] = "dev"
    """``prod`` refuses to start without API keys; ``dev`` without keys accepts the dev key."""
    api_key_hashes: str = ""
    """Comma-separated ``key_id:sha256hex[:tenant[:scope+scope]]`` entries, as the processor's;
    the read API wants ``read`` (own tenant) or ``read:all`` (every tenant)."""
    api_keys_file: Path | None = None
    """The keys file the processor mounts too, re-read when it changes."""
    api_keys_reload_interval_s: float = Field(default=5.0, gt=0)
    """How often the keys file is checked, so a revoked key stops reading without a restart."""

    consumers_enabled: bool = True
    """Run the store and projection stages, the archive consumer and the lag monitor in this
    process. Off, it serves the read API alone and reaches only the database (no Kafka, no
    S3): reads then spend another process's CPU and event loop than ingestion does (the
    chart's ``reader``)."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, comma-separated."""
    kafka_topic: str = TOPIC_GPU_METADATA
    """Topic the events arrive on."""
    kafka_dlq_topic: str = TOPIC_GPU_METADATA_DLQ
    """Topic dead letters go to (original bytes, error in headers)."""
    kafka_store_group: str = "ca4-store"
    """Consumer group of the event-store subscriber."""
    kafka_project_group: str = "ca4-project"
    """Consumer group of the projection stage, which follows the store group and never passes
    it, so storing never waits for a projection round."""
    kafka_archive_group: str = "ca4-archive"
    """Consumer group of the S3 archiver, separate so an S3 outage never slows the store."""
    store_max_records: int = Field(default=20_000, ge=1, le=100_000)
    """Most records one store batch holds. A batch is everything that arrived while the last
    one was stored: small and immediate when the worker keeps up, up to this (or
    ``store_max_bytes``, whichever comes first) when behind."""
    store_max_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Most record bytes one store batch holds, whatever its record count, each record
    weighed as what it decodes to (its bytes plus 80 per JSON object and 8 per string, key or
    value: decoded, a record then takes 2 to 9 times its weight whatever fields it leaves out,
    however it is laid out). So
    this, not ``store_max_records``, bounds the worker's memory when events are large (many
    GPUs, many processes each); a heavier record is a batch of its own. The store's decisions
    held for the projection stage are bounded by it too."""
    store_insert_chunk: int = Field(default=2500, ge=1, le=100_000)
    """Records per ``insert_many`` within a store batch: the next chunk is decoded while the
    database stores this one, and the event loop stays responsive between chunks."""
    store_insert_concurrency: int = Field(default=2, ge=1, le=16)
    """Store inserts in flight at once: 2 stored about 25% faster than 1 on FerretDB, 3 or 4
    no faster."""
    store_max_partition_fetch_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Most bytes fetched per partition per request, enough to fill a store batch when behind."""
    store_max_attempts: int = Field(default=5, ge=1, le=100)
    """Tries of a store or projection call that fails neither as an outage nor as known
    poison; past them the batch is split to isolate the events that fail, which are
    dead-lettered. Outages (database or Kafka down) are retried without limit."""
    projection_enabled: bool = True
    """Run the projection stage in this process. Off, this worker stores only, and the
    ``ca4-project`` group's other members (or this one, started again with it on) project from
    where the group left off: a way to scale or pause projections apart from the store."""
    projection_max_records: int = Field(default=5_000, ge=1, le=100_000)
    """Most records one projection round holds. Projection writes cost per session and GPU
    per round, so a round amortises them over everything that arrived during the last one
    (up to this, or ``projection_max_bytes``, whichever comes first)."""
    projection_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Most record bytes one projection round holds, weighed as for ``store_max_bytes``."""
    store_progress_poll_s: float = Field(default=1.0, gt=0)
    """How often a projection round waiting for the store asks Kafka for the store group's
    committed offsets, for partitions another worker stores (its own are known at once)."""
    projection_bulk_chunk: int = Field(default=100, ge=1, le=10_000)
    """Most sessions (or GPUs) one projection call writes: bounds the statements in one bulk,
    so a round finishes well inside the deadline whatever the number of aggregates."""
    projection_concurrency: int = Field(default=2, ge=1, le=16)
    """Projection calls in flight at once (sessions and GPUs share them)."""

    operator_kafka_timeout_s: float = Field(default=15.0, gt=0)
    """How long ``ca4 dlq`` waits on Kafka before saying it is down (each request, each read)."""

    mongo_url: str = "mongodb://127.0.0.1:27017"
    """MongoDB-compatible database (FerretDB locally, DocumentDB in production)."""

    @field_validator("mongo_url")
    @classmethod
    def _documentdb_without_retryable_writes(cls, mongo_url: str) -> str:
        return without_retryable_writes(require_ca_file(mongo_url))

    mongo_db: str = "ca4"
    """Database holding ``events``, ``sessions`` and ``gpus``."""
    mongo_timeout_ms: int = Field(default=5000, ge=100)
    """Server selection timeout: how soon a database outage surfaces as a retryable error."""
    mongo_operation_timeout_ms: int = Field(default=10_000, ge=100)
    """Deadline of each store and projection call. A call past it is split in half and the
    halves tried in turn, never sent again whole on top of the one still running."""
    index_build_timeout_s: float = Field(default=3600.0, gt=0)
    """Deadline of each index build the worker starts (only for an index missing when it
    starts: after an upgrade that adds one). A build on a large collection outlasts the
    client's 30 s socket timeout, and a server may stop a build at its deadline, so this must
    outlast the longest build. Past it the worker lists the indexes and asks again; it waits at
    start-up until every index exists."""
    read_timeout_s: float = Field(default=5.0, gt=0)
    """Deadline of each read the read API makes (a session, a page, a GPU, an event and its
    projection status); past it, or while the database is unreachable, the request answers
    ``503`` with ``Retry-After``."""
    readiness_timeout_s: float = Field(default=1.5, gt=0)
    """Deadline of the database ping ``/readyz`` makes; past it the worker is not ready. Under
    the chart's readiness probe ``timeoutSeconds`` (2), so the probe gets the answer, and its
    reason, instead of giving up on it."""
    read_page_max_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Most stored (BSON) bytes of the documents one page of ``/v1/sessions`` or ``/v1/gpus``
    holds, whatever its ``limit``: past it the page ends early, with ``next_cursor`` (a page
    holds at least one document). A read holds up to about ten times this in memory while it
    is answered (many small processes per GPU), so this and ``read_max_in_flight`` bound what
    reads hold. 500 GPUs without processes fit in one page; with 256 processes each, about 20."""
    read_max_in_flight_per_tenant: int = Field(
        default=4,
        ge=1,
        validation_alias=AliasChoices(
            "CA4_READ_MAX_IN_FLIGHT_PER_TENANT",
            "CA4_READ_MAX_IN_FLIGHT_PER_KEY",
        ),
    )
    """Read API requests of one tenant (the one read; every ``read:all`` key's count as one
    tenant) in flight in this process, whichever of its keys sent them, so one tenant opening
    many connections, with as many keys as it holds, cannot take the process (and its memory)
    from the others. More wait their turn, up to ``read_timeout_s``, then answer ``429`` with
    ``Retry-After: 1``. Replaces ``CA4_READ_MAX_IN_FLIGHT_PER_KEY``, still read when this is
    unset."""
    read_budget_per_tenant: float = Field(default=0.25, ge=0)
    """Seconds of reads per second one tenant (every ``read:all`` key's together count as one)
    may keep this worker's read API busy, on average: each read pays the time it held its
    slot, and a tenant that has spent its budget gets ``429`` with ``Retry-After`` until it
    has refilled. Where the worker serves reads (no reader), they share its event loop with the
    store and projection stages, so one tenant asking again as soon as answered slowed every
    tenant's events; in a reader it keeps one tenant from taking the others' reads. ``0``
    turns it off. A page of ``/v1/sessions`` takes 10-100 ms here, so 0.25 s is several pages
    a second, steadily."""
    read_budget_burst_s: float = Field(default=10.0, gt=0)
    """The most read time a tenant can save up and spend at once (paging through thousands of
    sessions, a long usage report); one read may overdraw it, then the tenant waits it off."""
    read_max_in_flight: int = Field(default=16, ge=1)
    """Read API requests in flight in this process, every tenant's; more wait as above."""
    read_max_waiting_per_tenant: int = Field(
        default=256,
        ge=0,
        validation_alias=AliasChoices(
            "CA4_READ_MAX_WAITING_PER_TENANT",
            "CA4_READ_MAX_WAITING_PER_KEY",
        ),
    )
    """Read API requests of one tenant that may wait for a slot (a client reading many small
    things at once, such as each event's status); past it a read answers ``429`` at once.
    A waiting request holds only its connection. Replaces ``CA4_READ_MAX_WAITING_PER_KEY``,
    still read when this is unset."""
    read_max_waiting: int = Field(default=1024, ge=0)
    """Read API requests of every tenant that may wait for a slot in this process: what many
    tenants can park together (a few MB); past it a read answers ``429`` at once."""

    s3_endpoint_url: str | None = None
    """S3 endpoint (MinIO locally); unset means AWS S3."""
    s3_bucket: str = "ca4-archive"
    """Bucket for the raw archive."""
    s3_region: str = "us-east-1"
    """S3 region."""
    s3_access_key_id: str | None = None
    """Access key id; unset means the default AWS credential chain (IAM role)."""
    s3_secret_access_key: SecretStr | None = None
    """Secret key matching ``s3_access_key_id``."""
    archive_enabled: bool = True
    """Run the archive consumer in this process."""
    archive_prefix: str = "raw"
    """Key prefix of archive objects."""
    archive_max_records: int = Field(default=5000, ge=1, le=1_000_000)
    """Flush a partition's archive object once it holds this many records."""
    archive_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Flush a partition's archive object once its records weigh this much, whatever
    ``archive_max_records`` says: an object holds at most this and one record. Records are
    weighed as for ``store_max_bytes`` (never less than their bytes), one rule for every
    buffer of the worker. The archive holds at most twice this across partitions: polls are
    sized to stay within it, and past it the heaviest buffers are flushed early. Encoding an
    object holds it compressed and a small chunk of text besides its records."""
    archive_max_age_s: float = Field(default=30.0, gt=0)
    """Flush a partition's archive object once its oldest record waited this long."""

    retry_max_backoff_s: float = Field(default=5.0, gt=0)
    """Ceiling of the exponential backoff while the database, Kafka or S3 is unavailable."""
    lag_poll_interval_s: float = Field(default=10.0, gt=0)
    """How often consumer and archive lag gauges are refreshed."""
    gpu_series_ttl_s: float = Field(default=900.0, gt=0)
    """Per-GPU gauge series not updated for this long are removed (stale sessions). A GPU's
    series set also counts against its tenant's ``gpu_series_max_per_tenant`` for this long
    after its creation, whatever became of it."""
    gpu_series_max: int = Field(default=2000, ge=1)
    """Upper bound on per-GPU series sets (one per tenant and GPU) in this worker. At it, a new
    set takes the least recently updated set of the tenant holding the most, and only when the
    reporting tenant holds at least two fewer; otherwise it is refused
    (``ca4_worker_gpu_series_refused``).
    So no tenant loses a series to a tenant that holds as many."""
    gpu_series_max_per_tenant: int = Field(default=500, ge=1)
    """Upper bound on one tenant's per-GPU series sets in this worker, counting each set it had
    until ``gpu_series_ttl_s`` after its creation. At it the tenant's new GPUs, and its GPUs'
    new labels, get no series until its own expire, so one tenant adds at most this many sets
    to Prometheus per ``gpu_series_ttl_s``. The default keeps one churning tenant within the
    chart's Prometheus (docs/gpu-metrics.md); a tenant with more GPUs on one worker than this
    needs more workers (sessions spread over them) or a higher cap and a larger Prometheus."""

    usage_enabled: bool = True
    """Keep the GPU usage projection (held, busy and idle seconds per GPU per day)."""
    usage_busy_above_pct: float = Field(default=10.0, ge=0, le=100)
    """An interval is busy when the report closing it shows utilisation above this."""
    usage_idle_memory_above_mib: float = Field(default=0.0, ge=0)
    """An interval is idle when both its reports show utilisation at or under the busy
    threshold and more memory in use than this (the GPU is allocated but unused)."""
    usage_max_gap_s: float = Field(default=120.0, gt=0)
    """Two reports of a GPU further apart than this are a gap: the time between is not billed."""
    usage_prices: dict[str, float] = Field(default_factory=dict)
    """Price per GPU hour by GPU model name (JSON, e.g. ``{"Tesla T4": 0.35}``); turns held
    hours into cost in ``/v1/usage`` and ``ca4 usage``. Empty: no cost column."""
    usage_currency: str = "USD"
    """Currency of ``usage_prices``."""
    usage_report_timeout_s: float = Field(default=15.0, gt=0)
    """Deadline of a whole usage report (``GET /v1/usage``, and ``ca4 usage`` unless
    ``--timeout``): reading and summing every day record of the range. Past it the request
    answers ``503`` with ``Retry-After``; a range too long for it will not fit on a retry
    either, so ask for fewer days, or, for a report of every tenant's records that misses it,
    one tenant's (``tenant=``, ``--tenant``). Longer than ``read_timeout_s``, which bounds one
    read, because a report reads a tenant's whole range."""
    usage_max_groups: int = Field(default=1000, ge=1)
    """Groups one usage report (``GET /v1/usage``) gives a row of their own: the first met of
    each tenant. In a report of every tenant's records (``read:all``) the cap is shared: once
    full, a group of a tenant with fewer rows than the cap over the tenants met takes the row of
    the last-met group of the tenant with the most. The time of every group past a tenant's rows
    is summed in that tenant's ``(other)`` row (``kind: other``), and the report says
    ``truncated: true``, so the rows still add up to the whole range. Group values come from the
    reports (label values, GPU model names), so this bounds what one report holds; group by a
    label with fewer values, or ask for fewer days, to see every group. ``ca4 usage`` has the
    same cap: its table says when it cut, and ``--csv`` says so on stderr."""
    usage_max_reports_in_flight: int = Field(default=2, ge=1)
    """Usage reports in flight in this process, every tenant's. A report decodes and sums on
    the event loop, which the store and projection stages share. More wait their turn, up to
    half of ``usage_report_timeout_s`` (waiting and reading share that deadline, so a report
    always has half of it at least to run), then answer ``429`` with ``Retry-After: 1``."""
    usage_max_reports_in_flight_per_tenant: int = Field(default=1, ge=1)
    """Usage reports of one tenant (the one whose records are read; every ``read:all`` key's
    reports count as one tenant) in flight in this process, so one tenant's long reports never
    hold every slot of ``usage_max_reports_in_flight``. More wait their turn as above."""
    usage_max_reports_waiting_per_tenant: int = Field(default=3, ge=0)
    """Usage reports of one tenant that may wait for a slot; past it a report answers ``429``
    at once. The defaults let a tenant have all its ``read_max_in_flight_per_tenant`` (4)
    reads be usage reports: one running and three waiting. A waiting report holds one of its
    tenant's read slots, so this and ``usage_max_reports_waiting`` keep waiting reports from
    taking the other reads' ``read_max_in_flight``."""
    usage_max_reports_waiting: int = Field(default=6, ge=0)
    """Usage reports of every tenant that may wait for a slot in this process; past it a
    report answers ``429`` at once."""

    log_level: str = "INFO"
    """Root log level."""
    otel_exporter: Literal["none", "console", "otlp"] = "none"
    """Where spans go."""
    otel_endpoint: str | None = None
    """OTLP/HTTP endpoint when ``otel_exporter`` is ``otlp``."""

    @model_validator(mode="after")
    def _keys_configured_outside_dev(self) -> Self:
        check_key_settings(self.environment, self.api_key_hashes, self.api_keys_file)
        return self

    def projection_limits(self) -> WriteLimits:
        """The bounds of each projection call."""
        return WriteLimits(
            chunk=self.projection_bulk_chunk,
            concurrency=self.projection_concurrency,
            deadline_s=self.mongo_operation_timeout_ms / 1000,
            max_backoff_s=self.retry_max_backoff_s,
        )


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
