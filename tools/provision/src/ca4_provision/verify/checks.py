"""The nine checks. Each takes the shared :class:`VerifyContext` and returns a detail line,
or raises :class:`StepFailedError` / :class:`NotDeployedError`.

Checks that wait on the pipeline (worker, database, Prometheus scrapes, log shipping) poll with
tenacity until ``VERIFY_TIMEOUT_S`` instead of sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pymongo
from aiokafka import AIOKafkaConsumer, TopicPartition
from ca4_schemas import GpuMetadataReport
from ca4_schemas.api import Receipt
from ca4_schemas.constants import HEADER_EVENT_ID
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from ca4_provision.verify import cluster
from ca4_provision.verify.settings import VerifySettings

T = TypeVar("T")

VERIFY_LABELS = {"purpose": "ca4-verify"}
DASHBOARD_UIDS = frozenset({"ca4-pipeline", "ca4-gpus"})
#: The Loki stream selector of step 8: every log pipeline (compose and Helm) sets ``service``.
LOKI_SERVICE_SELECTOR = '{service=~".+"}'
INGEST_ACCEPTED = 'sum(ca4_ingest_events_total{outcome="accepted"})'
WORKER_STORED = 'sum(ca4_worker_events_total{result="stored"})'


class StepFailedError(Exception):
    """The step ran and the deployment did not do what it should."""


class NotDeployedError(Exception):
    """Nothing answers where an optional component would be."""


class _NotYetError(Exception):
    """The pipeline has not caught up yet; poll again."""


@dataclass
class Counters:
    """The Prometheus counters step 6 compares."""

    ingest_accepted: float
    worker_stored: float


@dataclass
class VerifyContext:
    """State shared by the steps of one run."""

    settings: VerifySettings
    http: httpx.AsyncClient
    in_cluster: bool = False
    """True for ``--target k3s``: Kafka and the database are read with kubectl exec."""
    started_at: float = field(default_factory=time.time)
    session_id: str = field(default_factory=lambda: f"ca4-verify-{uuid.uuid4().hex[:12]}")
    report: dict[str, Any] | None = None
    response: httpx.Response | None = None
    receipt: Receipt | None = None
    counters_before: Counters | None = None

    @property
    def event_id(self) -> str | None:
        """The id of the test event, once the SDK built it."""
        return str(self.report["event_id"]) if self.report else None

    def require_receipt(self) -> Receipt:
        """The processor's receipt; later steps cannot run without it."""
        if self.receipt is None:
            raise StepFailedError("not run: the processor did not accept the test event")
        return self.receipt


async def poll(attempt: Callable[[], Awaitable[T]], settings: VerifySettings) -> T:
    """Run ``attempt`` until it stops raising ``_NotYetError`` or the step's time is up."""
    try:
        async for retry in AsyncRetrying(
            stop=stop_after_delay(settings.VERIFY_TIMEOUT_S),
            wait=wait_fixed(settings.VERIFY_POLL_S),
            retry=retry_if_exception_type(_NotYetError),
            reraise=True,
        ):
            with retry:
                return await attempt()
    except _NotYetError as still_waiting:
        raise StepFailedError(f"{still_waiting} after {settings.VERIFY_TIMEOUT_S:.0f}s") from None
    raise AssertionError("unreachable")  # pragma: no cover - tenacity always returns or raises


# --- 1. SDK ---------------------------------------------------------------------------------


def build_test_report(settings: VerifySettings, session_id: str) -> dict[str, Any]:
    """One report built by the real SDK on this host (blocking: runs the GPU collector)."""
    from ca4_sdk import Reporter

    with tempfile.TemporaryDirectory(prefix="ca4-verify-") as spool:
        reporter = Reporter(
            url=settings.EDGE_API_URL,
            api_key=settings.API_KEY,
            labels=VERIFY_LABELS,
            session_id=session_id,
            spool_dir=spool,
        )
        try:
            return reporter.collect()
        finally:
            reporter.close()


async def sdk_sends_test_payload(ctx: VerifyContext) -> str:
    """The SDK builds a report that honours the contract, and it reaches the edge API."""
    report = await asyncio.to_thread(build_test_report, ctx.settings, ctx.session_id)
    body = json.dumps(report)
    GpuMetadataReport.model_validate_json(body)
    ctx.report = report
    try:
        ctx.response = await ctx.http.post(
            f"{ctx.settings.EDGE_API_URL}/v1/metadata",
            content=body,
            headers={
                "Authorization": f"Bearer {ctx.settings.API_KEY}",
                "Content-Type": "application/json",
            },
        )
    except httpx.TransportError as error:
        raise StepFailedError(f"nothing answers on {ctx.settings.EDGE_API_URL}: {error}") from error
    gpus = len(report["payload"]["gpus"])
    return f"event {ctx.event_id} ({gpus} GPU sample(s)) sent, HTTP {ctx.response.status_code}"


# --- 2. processor ---------------------------------------------------------------------------


async def processor_accepted(ctx: VerifyContext) -> str:
    """HTTP 202 with a receipt naming our event, its partition and its offset."""
    response = ctx.response
    if response is None:
        raise StepFailedError("not run: the SDK did not send the test event")
    if response.status_code != httpx.codes.ACCEPTED:
        raise StepFailedError(f"HTTP {response.status_code}: {response.text[:300]}")
    receipt = Receipt.model_validate_json(response.content)
    if str(receipt.event_id) != ctx.event_id:
        raise StepFailedError(f"receipt is for event {receipt.event_id}, not {ctx.event_id}")
    ctx.receipt = receipt
    return f"202, {receipt.topic} partition {receipt.partition} offset {receipt.offset}"


# --- 3. Kafka -------------------------------------------------------------------------------


KAFKA_CONSOLE_CONSUMER = "/opt/kafka/bin/kafka-console-consumer.sh"


async def kafka_holds_event_in_cluster(ctx: VerifyContext, receipt: Receipt) -> str:
    """The broker's own console consumer, in the kafka-0 pod, reads the receipt's offset."""
    output = await cluster.kubectl_exec(
        ctx.settings.PLATFORM_NAMESPACE,
        "pod/kafka-0",
        KAFKA_CONSOLE_CONSUMER,
        "--bootstrap-server=localhost:9092",
        f"--topic={receipt.topic}",
        f"--partition={receipt.partition}",
        f"--offset={receipt.offset}",
        "--max-messages=1",
        "--timeout-ms=20000",
        "--property=print.offset=true",
        seconds=ctx.settings.VERIFY_TIMEOUT_S,
    )
    if f"Offset:{receipt.offset}" not in output or str(ctx.event_id) not in output:
        raise StepFailedError(
            f"{receipt.topic}/{receipt.partition}@{receipt.offset} does not hold event "
            f"{ctx.event_id}: {output.strip()[:200]!r}"
        )
    return f"record at offset {receipt.offset} (read in pod kafka-0)"


async def kafka_holds_event(ctx: VerifyContext) -> str:
    """Read the record back at the receipt's partition and offset and match its event id."""
    receipt = ctx.require_receipt()
    if ctx.in_cluster:
        return await kafka_holds_event_in_cluster(ctx, receipt)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=ctx.settings.KAFKA_BOOTSTRAP_SERVERS,
        enable_auto_commit=False,
        request_timeout_ms=10_000,
    )
    try:
        await asyncio.wait_for(consumer.start(), ctx.settings.VERIFY_TIMEOUT_S)
        partition = TopicPartition(receipt.topic, receipt.partition)
        consumer.assign([partition])
        consumer.seek(partition, receipt.offset)
        record = await asyncio.wait_for(consumer.getone(), ctx.settings.VERIFY_TIMEOUT_S)
    except (TimeoutError, OSError) as error:
        raise StepFailedError(
            f"could not read {receipt.topic}/{receipt.partition}@{receipt.offset} from "
            f"{ctx.settings.KAFKA_BOOTSTRAP_SERVERS}: {error!r}"
        ) from error
    finally:
        await consumer.stop()
    headers = dict(record.headers or ())
    header_id = (headers.get(HEADER_EVENT_ID) or b"").decode()
    body_id = json.loads(record.value)["event_id"] if record.value else None
    if ctx.event_id not in (header_id, body_id):
        raise StepFailedError(f"offset {record.offset} holds event {body_id or header_id}")
    traced = "with" if "traceparent" in headers else "without"
    return f"record at offset {record.offset}, key {record.key!r}, {traced} traceparent"


# --- 4. worker ------------------------------------------------------------------------------


async def worker_processed(ctx: VerifyContext) -> str:
    """The worker's read API says the event is stored (it answers ``stored: false`` until then)."""
    event_id = str(ctx.require_receipt().event_id)
    url = f"{ctx.settings.WORKER_URL}/v1/events/{event_id}"

    async def fetch() -> dict[str, Any]:
        try:
            # The same key reads its own event back: it needs the write and read scopes.
            response = await ctx.http.get(
                url, headers={"Authorization": f"Bearer {ctx.settings.API_KEY}"}
            )
        except httpx.TransportError as error:
            raise _NotYetError(f"nothing answers on {ctx.settings.WORKER_URL}: {error}") from error
        if response.status_code == httpx.codes.NOT_FOUND:
            raise _NotYetError(f"GET {url} still 404")
        if response.status_code == httpx.codes.TOO_MANY_REQUESTS:  # the key's tenant reads a lot
            raise _NotYetError(f"GET {url}: 429 {response.text[:200]}")
        if response.status_code != httpx.codes.OK:
            raise StepFailedError(f"GET {url}: HTTP {response.status_code} {response.text[:200]}")
        status: dict[str, Any] = response.json()
        if not status.get("stored"):
            raise _NotYetError(f"GET {url} still says stored: false")
        return status

    status = await poll(fetch, ctx.settings)
    if status.get("event_id") != event_id:
        raise StepFailedError(f"GET {url} answered for event {status.get('event_id')}")
    projected = "projected" if status.get("projected") else "not projected yet"
    return f"stored ({projected}) {time.time() - ctx.started_at:.1f}s after the run began"


# --- 5. database ----------------------------------------------------------------------------


#: Run by the worker's own Python in its pod: its URL, CA bundle and network path.
FIND_EVENT_IN_WORKER = (
    "import json, os, sys\n"
    "from pymongo import MongoClient\n"
    "client = MongoClient(os.environ['CA4_MONGO_URL'], serverSelectionTimeoutMS=10000)\n"
    "events = client[os.environ.get('CA4_MONGO_DB', 'ca4')]['events']\n"
    "print(json.dumps(events.find_one({'_id': sys.argv[1]}, {'partition': 1, 'offset': 1})))\n"
)


async def find_event_in_cluster(ctx: VerifyContext) -> dict[str, Any]:
    """The events document, read from inside the worker's pod (DocumentDB is VPC-only)."""

    async def find() -> dict[str, Any]:
        output = await cluster.kubectl_exec(
            ctx.settings.APP_NAMESPACE,
            f"deploy/{ctx.settings.APP_RELEASE}-worker",
            "python",
            "-c",
            FIND_EVENT_IN_WORKER,
            str(ctx.event_id),
            seconds=ctx.settings.VERIFY_TIMEOUT_S,
        )
        document: dict[str, Any] | None = json.loads(output.strip() or "null")
        if document is None:
            raise _NotYetError(f"no events document with _id {ctx.event_id}")
        return document

    return await poll(find, ctx.settings)


async def database_holds_record(ctx: VerifyContext) -> str:
    """The ``events`` collection holds the event, at the receipt's Kafka position."""
    receipt = ctx.require_receipt()
    if ctx.in_cluster:
        document = await find_event_in_cluster(ctx)
        return _at_receipt_position(ctx, receipt, document)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        ctx.settings.MONGO_URL, serverSelectionTimeoutMS=5000
    )
    events = client[ctx.settings.MONGO_DB]["events"]

    limit_s = ctx.settings.VERIFY_TIMEOUT_S

    async def find() -> dict[str, Any]:
        # The step's limit bounds each call too (the poll checks it only between attempts, so
        # a find_one on a connection that stopped answering mid-call waited on). Per call, not
        # for the whole poll: a poll's last try may start past the limit, and a shared budget
        # would then call an event the worker never stored a database that did not answer.
        with pymongo.timeout(limit_s):
            document = await events.find_one({"_id": ctx.event_id})
        if document is None:
            raise _NotYetError(f"no events document with _id {ctx.event_id}")
        return document

    try:
        document = await poll(find, ctx.settings)
    except PyMongoError as error:
        if not error.timeout:
            raise
        raise StepFailedError(
            f"the database did not answer a query within {limit_s:.0f}s: {error}"
        ) from None
    finally:
        await client.close()
    return _at_receipt_position(ctx, receipt, document)


def _at_receipt_position(ctx: VerifyContext, receipt: Receipt, document: dict[str, Any]) -> str:
    position = (document.get("partition"), document.get("offset"))
    if position != (receipt.partition, receipt.offset):
        raise StepFailedError(
            f"stored at {position}, receipt says {receipt.partition, receipt.offset}"
        )
    return (
        f"{ctx.settings.MONGO_DB}.events holds it at partition {position[0]} offset {position[1]}"
    )


# --- 6. Prometheus --------------------------------------------------------------------------


async def query_scalar(ctx: VerifyContext, promql: str) -> float:
    """One instant query; an empty result counts as 0 (a counter not created yet)."""
    response = await ctx.http.get(
        f"{ctx.settings.PROMETHEUS_URL}/api/v1/query", params={"query": promql}
    )
    response.raise_for_status()
    result = response.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


async def read_counters(ctx: VerifyContext) -> Counters:
    """The counters step 6 compares, read now."""
    return Counters(
        ingest_accepted=await query_scalar(ctx, INGEST_ACCEPTED),
        worker_stored=await query_scalar(ctx, WORKER_STORED),
    )


async def snapshot_counters(ctx: VerifyContext) -> None:
    """Remember the counters before the test event (left unset when Prometheus is down)."""
    try:
        ctx.counters_before = await read_counters(ctx)
    except (httpx.HTTPError, KeyError, ValueError):
        ctx.counters_before = None


async def prometheus_counters_moved(ctx: VerifyContext) -> str:
    """Both services' counters, scraped by Prometheus, moved past their values before the run."""
    ctx.require_receipt()
    before = ctx.counters_before
    if before is None:
        raise StepFailedError(f"Prometheus did not answer on {ctx.settings.PROMETHEUS_URL}")

    async def moved() -> Counters:
        try:
            now = await read_counters(ctx)
        except httpx.HTTPError as error:
            raise _NotYetError(f"Prometheus query failed: {error}") from error
        if now.ingest_accepted <= before.ingest_accepted:
            raise _NotYetError(f"{INGEST_ACCEPTED} still {now.ingest_accepted:g}")
        if now.worker_stored <= before.worker_stored:
            raise _NotYetError(f"{WORKER_STORED} still {now.worker_stored:g}")
        return now

    now = await poll(moved, ctx.settings)
    return (
        f"ingest accepted {before.ingest_accepted:g}→{now.ingest_accepted:g}, "
        f"worker stored {before.worker_stored:g}→{now.worker_stored:g}"
    )


# --- 7. Grafana -----------------------------------------------------------------------------


async def _answers(ctx: VerifyContext, url: str) -> None:
    """Raise NotDeployedError when nothing listens on ``url``."""
    try:
        await ctx.http.get(url)
    except httpx.TransportError as error:
        raise NotDeployedError(f"nothing answers on {url} ({type(error).__name__})") from error


async def grafana_serves_dashboards(ctx: VerifyContext) -> str:
    """Grafana's search API lists both CA4 dashboards."""
    base = ctx.settings.GRAFANA_URL
    await _answers(ctx, f"{base}/api/health")
    auth = (
        (ctx.settings.GRAFANA_USER, ctx.settings.GRAFANA_PASSWORD or "")
        if ctx.settings.GRAFANA_USER
        else None
    )
    headers = {}
    if ctx.settings.GRAFANA_TOKEN:
        headers["Authorization"] = f"Bearer {ctx.settings.GRAFANA_TOKEN}"
    elif ctx.in_cluster:
        raise StepFailedError(
            "set CA4_GRAFANA_TOKEN: a token of a Grafana service account with the Viewer role"
        )
    response = await ctx.http.get(
        f"{base}/api/search",
        params={"type": "dash-db", "tag": "ca4"},
        auth=auth,
        headers=headers,
    )
    if response.status_code != httpx.codes.OK:
        raise StepFailedError(f"GET /api/search: HTTP {response.status_code} {response.text[:200]}")
    found = {item["uid"] for item in response.json()}
    missing = DASHBOARD_UIDS - found
    if missing:
        raise StepFailedError(f"dashboards missing: {', '.join(sorted(missing))}")
    return f"dashboards {', '.join(sorted(DASHBOARD_UIDS))} served"


# --- 8. Loki --------------------------------------------------------------------------------


async def loki_holds_log_lines(ctx: VerifyContext) -> str:
    """Loki returns log lines mentioning the test event id."""
    base = ctx.settings.LOKI_URL
    await _answers(ctx, f"{base}/ready")
    ctx.require_receipt()
    params = {
        "query": f'{LOKI_SERVICE_SELECTOR} |= "{ctx.event_id}"',
        "start": str(int((ctx.started_at - 60) * 1e9)),
        "limit": "200",
    }

    async def lines() -> dict[str, int]:
        response = await ctx.http.get(f"{base}/loki/api/v1/query_range", params=params)
        if response.status_code != httpx.codes.OK:
            raise StepFailedError(f"query_range: HTTP {response.status_code} {response.text[:200]}")
        per_service: dict[str, int] = {}
        for stream in response.json()["data"]["result"]:
            service = stream["stream"].get("service", "?")
            per_service[service] = per_service.get(service, 0) + len(stream["values"])
        if not per_service:
            raise _NotYetError(f"no log line mentions {ctx.event_id} yet")
        return per_service

    per_service = await poll(lines, ctx.settings)
    return ", ".join(
        f"{service}: {count} line(s)" for service, count in sorted(per_service.items())
    )


# --- 9. S3 archive --------------------------------------------------------------------------


def _start_offset(key: str) -> int:
    return int(key.rsplit("+", 1)[1].split(".", 1)[0])


ARCHIVE_OBJECT_SPAN_S = 3600
"""How long before the verify's start an archive object holding its record may have begun (an
object is named by the day of its first record; the worker closes one after
``CA4_ARCHIVE_MAX_AGE_S``, 30 s by default)."""


def archive_days(started_at: float, now: float) -> list[str]:
    """The ``dt=`` days an object holding a record sent at ``started_at`` may be filed under:
    a run near midnight UTC finds its record in an object begun the day before, or filed the
    day after."""
    moments = (started_at - ARCHIVE_OBJECT_SPAN_S, started_at, now)
    return sorted({time.strftime("%Y-%m-%d", time.gmtime(moment)) for moment in moments})


async def archive_holds_event(ctx: VerifyContext) -> str:
    """An archive object of the receipt's partition holds the record at the receipt's offset."""
    from ca4_worker.domain.archive import decode_archive_object
    from ca4_worker.persistence.s3 import S3ObjectStore

    receipt = ctx.require_receipt()
    settings = ctx.settings
    if not settings.S3_BUCKET:
        raise NotDeployedError("no archive bucket configured (CA4_S3_BUCKET)")
    topic = f"{settings.ARCHIVE_PREFIX}/{receipt.topic}"
    where = f"{topic}/dt=*/partition={receipt.partition}/"
    store = S3ObjectStore(
        bucket=settings.S3_BUCKET,
        endpoint_url=settings.S3_ENDPOINT_URL,
        region=settings.S3_REGION,
        access_key_id=settings.S3_ACCESS_KEY_ID,
        secret_access_key=settings.S3_SECRET_ACCESS_KEY,
    )

    async def find(s3: S3ObjectStore) -> str:
        keys = [
            key
            for day in archive_days(ctx.started_at, time.time())
            for key in await s3.list_keys(f"{topic}/dt={day}/partition={receipt.partition}/")
            if _start_offset(key) <= receipt.offset
        ]
        for key in sorted(keys, key=_start_offset, reverse=True)[:3]:
            for record in decode_archive_object(await s3.get(key)):
                if record.offset == receipt.offset:
                    if str(ctx.event_id) not in (record.value or b"").decode("utf-8", "replace"):
                        raise StepFailedError(f"{key} holds another event at {receipt.offset}")
                    return key
        raise _NotYetError(f"no object under s3://{settings.S3_BUCKET}/{where} holds it")

    async with store as s3:
        key = await poll(lambda: find(s3), settings)
    return f"s3://{settings.S3_BUCKET}/{key}"
