"""``ca4 verify --target k3s`` against recording fakes: a fake kubectl whose port-forwards lead to
stub services and whose ``exec`` answers for Kafka and the database, plus a stub S3. Every TCP
connection the run makes is recorded (a socket audit hook), which proves it never reads the local
dev stack; the forwards it opened are gone when it returns."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

import pytest
from ca4_provision.cli import app as ca4
from ca4_provision.verify.cluster import forwards
from ca4_provision.verify.results import StepStatus
from ca4_provision.verify.runner import run_verification
from ca4_provision.verify.settings import VerifySettings
from ca4_worker.domain.archive import archive_key, encode_archive_object
from ca4_worker.domain.records import RawRecord
from typer.testing import CliRunner

from tests.support import grafana

pytestmark = pytest.mark.stand_in(
    "ca4 verify --target k3s against a cluster: no Kubernetes here; ran instead: the real command "
    "against a recording fake kubectl whose port-forwards lead to stub services"
)

BUCKET = "ca4-dev-archive-123456789012"
GRAFANA_TOKEN = "glsa_viewer_token"
TOPIC = "gpu-metadata"
OFFSET = 7
SERVICES = {
    "svc/ca4-app-processor": "processor",
    "svc/ca4-app-worker": "worker",
    "svc/prometheus": "prometheus",
    "svc/grafana": "grafana",
    "svc/loki": "loki",
}
# Where the dev stack and the local services listen: a k3s run must connect to none of them.
DEV_STACK_PORTS = {8000, 8001, 9090, 3000, 3100, 9092, 27017, 9000}

_connects: list[tuple[str, int]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and isinstance(args[1], tuple) and len(args[1]) >= 2:
        _connects.append((str(args[1][0]), int(args[1][1])))


sys.addaudithook(_audit)


@dataclass
class Cluster:
    """The stub services behind the fake port-forwards, and the stub S3 bucket."""

    state: Path
    archive_the_event: bool = True
    objects: dict[str, bytes] = field(default_factory=dict)
    queries: int = 0
    s3_url: str = ""
    stub_ports: set[int] = field(default_factory=set)


def handler_for(cluster: Cluster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def answer(self, status: int, body: Any, content_type: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            report = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            event_id = report["event_id"]
            (cluster.state / "accepted.json").write_text(
                json.dumps({"event_id": event_id, "offset": OFFSET})
            )
            if cluster.archive_the_event:
                record = RawRecord(
                    topic=TOPIC,
                    partition=0,
                    offset=OFFSET,
                    value=json.dumps(report).encode(),
                    key=report["session_id"].encode(),
                    headers=(),
                    timestamp_ms=int(time.time() * 1000),
                )
                key = archive_key("raw", TOPIC, record)
                cluster.objects[key] = encode_archive_object([record])
            self.answer(
                202, {"event_id": event_id, "topic": TOPIC, "partition": 0, "offset": OFFSET}
            )

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if url.path.startswith("/v1/events/"):
                event_id = url.path.rsplit("/", 1)[1]
                return self.answer(200, {"event_id": event_id, "stored": True, "projected": True})
            if url.path == "/api/v1/query":
                cluster.queries += 1
                value = [0, str(cluster.queries)]
                return self.answer(200, {"data": {"result": [{"value": value}]}})
            if url.path in {"/api/health", "/ready"}:
                return self.answer(200, {})
            if url.path == "/api/search":
                login = grafana.bearer(GRAFANA_TOKEN)
                return self.answer(*grafana.search_answer(self.headers.get("Authorization"), login))
            if url.path == "/loki/api/v1/query_range":
                stream = {"stream": {"service": "worker"}, "values": [["1", "stored"]]}
                return self.answer(200, {"data": {"result": [stream]}})
            if url.path == f"/{BUCKET}" and "list-type" in query:
                prefix = query.get("prefix", [""])[0]
                keys = sorted(k for k in cluster.objects if k.startswith(prefix))
                contents = "".join(
                    f"<Contents><Key>{escape(k)}</Key><Size>1</Size></Contents>" for k in keys
                )
                xml = (
                    '<?xml version="1.0" encoding="UTF-8"?>'
                    '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                    f"<Name>{BUCKET}</Name><Prefix>{escape(prefix)}</Prefix>"
                    f"<KeyCount>{len(keys)}</KeyCount><MaxKeys>1000</MaxKeys>"
                    f"<IsTruncated>false</IsTruncated>{contents}</ListBucketResult>"
                )
                return self.answer(200, xml.encode(), "application/xml")
            if url.path.startswith(f"/{BUCKET}/"):
                key = unquote(url.path[len(BUCKET) + 2 :])
                if key in cluster.objects:
                    return self.answer(200, cluster.objects[key], "application/octet-stream")
            return self.answer(404, {"detail": "not found"})

    return Handler


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """Fake kubectl first on PATH, five stub services behind its port-forwards, a stub S3."""
    state = tmp_path / "state"
    state.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = (Path(__file__).parent / "fakes" / "fake_tool.py").read_text()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(f"#!{sys.executable}\n{fake}")
    kubectl.chmod(0o755)
    stub = Cluster(state=state)
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), handler_for(stub)) for _ in range(6)]
    for server in servers:
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    ports = {svc: s.server_address[1] for svc, s in zip(SERVICES, servers, strict=False)}
    for name in [n for n in os.environ if n.startswith("CA4_")]:
        monkeypatch.delenv(name)  # e.g. `eval "$(ca4 devstack env)"` in the shell running pytest
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CA4_FAKE_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("CA4_FAKE_STATE", str(state))
    monkeypatch.setenv("CA4_FAKE_FORWARDS", json.dumps(ports))
    stub.s3_url = f"http://127.0.0.1:{servers[5].server_address[1]}"
    stub.stub_ports = {s.server_address[1] for s in servers}
    yield stub
    for server in servers:
        server.shutdown()
        server.server_close()


def k3s_settings(cluster: Cluster, **overrides: object) -> VerifySettings:
    values: dict[str, Any] = {
        "VERIFY_TIMEOUT_S": 3.0,
        "VERIFY_POLL_S": 0.1,
        "GRAFANA_TOKEN": GRAFANA_TOKEN,
        "S3_BUCKET": BUCKET,
        "S3_ENDPOINT_URL": cluster.s3_url,
        "S3_ACCESS_KEY_ID": "test",
        "S3_SECRET_ACCESS_KEY": "test",
        **overrides,
    }
    return VerifySettings(**values)


def kubectl_calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "calls.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return [json.loads(line)["argv"] for line in lines]


def forwards_still_running(cluster: Cluster) -> list[int]:
    pids_file = cluster.state / "port-forward.pids"
    alive = []
    for pid in map(int, pids_file.read_text().split()):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive


async def test_k3s_checks_every_step_through_its_own_forwards(
    cluster: Cluster, tmp_path: Path
) -> None:
    _connects.clear()
    report = await run_verification(k3s_settings(cluster), "k3s")
    assert [s.status for s in report.steps] == [StepStatus.PASS] * len(report.steps), [
        (s.name, s.detail) for s in report.steps if s.status is not StepStatus.PASS
    ]
    assert report.steps[-1].name == "S3 archive holds the event"
    assert report.steps[-1].detail.startswith(f"s3://{BUCKET}/raw/{TOPIC}/dt=")
    calls = kubectl_calls(tmp_path)
    forwarded = sorted(a[a.index("port-forward") + 1] for a in calls if "port-forward" in a)
    # The reader first, where prod reads go; this cluster has none, so the worker.
    assert forwarded == sorted([*SERVICES, "svc/ca4-app-reader"])
    execs = [a[a.index("exec") + 1] for a in calls if "exec" in a]
    assert execs == ["pod/kafka-0", "deploy/ca4-app-worker"]
    # Never the dev stack: every connection went to a port a fake port-forward announced.
    local = {port for host, port in _connects if host in {"127.0.0.1", "localhost", "::1"}}
    assert local, "the run connected nowhere"
    assert local <= cluster.stub_ports, local - cluster.stub_ports
    assert not local & DEV_STACK_PORTS
    assert forwards_still_running(cluster) == [], "the run left its port-forwards open"


async def test_k3s_reads_through_the_reader_where_the_chart_runs_one(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prod's edge sends reads to the reader: verifying them on the worker passed with the
    reader down. The reader's Service leads to the stub that answers reads."""
    ports = json.loads(os.environ["CA4_FAKE_FORWARDS"])
    ports["svc/ca4-app-reader"] = ports.pop("svc/ca4-app-worker")
    monkeypatch.setenv("CA4_FAKE_FORWARDS", json.dumps(ports))
    report = await run_verification(k3s_settings(cluster), "k3s")
    assert [s.status for s in report.steps] == [StepStatus.PASS] * len(report.steps), [
        (s.name, s.detail) for s in report.steps if s.status is not StepStatus.PASS
    ]
    calls = kubectl_calls(tmp_path)
    forwarded = [a[a.index("port-forward") + 1] for a in calls if "port-forward" in a]
    assert "svc/ca4-app-reader" in forwarded
    assert "svc/ca4-app-worker" not in forwarded


async def test_k3s_archive_step_fails_when_the_object_is_missing(cluster: Cluster) -> None:
    cluster.archive_the_event = False
    report = await run_verification(k3s_settings(cluster, VERIFY_TIMEOUT_S=1.0), "k3s")
    archive = report.steps[-1]
    assert archive.status is StepStatus.FAIL, archive
    assert f"no object under s3://{BUCKET}/raw/{TOPIC}/dt=" in archive.detail
    assert not report.ok
    assert forwards_still_running(cluster) == []


async def test_k3s_grafana_step_needs_a_service_account_token(cluster: Cluster) -> None:
    report = await run_verification(k3s_settings(cluster, GRAFANA_TOKEN=None), "k3s")
    grafana = next(s for s in report.steps if s.name.startswith("Grafana"))
    assert grafana.status is StepStatus.FAIL
    assert "CA4_GRAFANA_TOKEN" in grafana.detail


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--edge-api-url", "http://127.0.0.1:8000"),
        ("--worker-url", "http://localhost:8001"),
        ("--kafka", "127.0.0.1:9092"),
        ("--mongo-url", "mongodb://127.0.0.1:27017"),
    ],
)
def test_k3s_refuses_loopback_endpoints(
    cluster: Cluster, tmp_path: Path, option: str, value: str
) -> None:
    result = CliRunner().invoke(ca4, ["verify", "--target", "k3s", option, value])
    assert result.exit_code == 2, result.output
    assert "--target k3s checks the cluster, not this machine" in result.output
    assert kubectl_calls(tmp_path) == [], "nothing was opened"


def test_k3s_refuses_a_shell_pointed_at_the_dev_stack(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`eval "$(ca4 devstack env)"` left in the operator's shell must not turn a cluster check
    into a check of this machine."""
    for name, value in {
        "CA4_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        "CA4_MONGO_URL": "mongodb://127.0.0.1:27017",
        "CA4_PROMETHEUS_URL": "http://127.0.0.1:9090",
    }.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(ca4, ["verify", "--target", "k3s", "--json"])
    assert result.exit_code == 2, result.output
    assert (
        "so remove PROMETHEUS_URL=http://127.0.0.1:9090, KAFKA_BOOTSTRAP_SERVERS" in result.output
    )
    assert kubectl_calls(tmp_path) == []


def test_k3s_names_a_failed_port_forward(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CA4_FAKE_FORWARDS", json.dumps({"svc/ca4-app-processor": 1}))
    result = CliRunner().invoke(ca4, ["verify", "--target", "k3s", "--json"])
    assert result.exit_code == 2, result.output
    assert (
        'kubectl port-forward svc/ca4-app-worker in app failed: error: services "ca4-app-worker"'
        in (result.output)
    )
    assert forwards_still_running(cluster) == []


@pytest.mark.parametrize("value_set", ["dev", "prod"])
def test_every_forward_names_a_port_the_rendered_service_has(rendered: Any, value_set: str) -> None:
    """kubectl resolves ``svc/NAME :PORT`` against the Service's own ports: the verify run
    forwarded the app's 8000 and 8001, its containers' ports, which the Services (on 80) lack,
    so every deploy's step 8 failed with "does not have a service port 8000"."""
    services = {
        (doc["metadata"].get("namespace"), doc["metadata"]["name"]): doc["spec"]["ports"]
        for chart in ("ca4-app", "ca4-platform")
        for doc in rendered[(chart, value_set)]
        if doc["kind"] == "Service"
    }
    for forward in forwards(VerifySettings()):
        service = forward.service
        if (forward.namespace, service) not in services and forward.fallback is not None:
            service = forward.fallback  # the reader, off in these values
        ports = services.get((forward.namespace, service))
        assert ports is not None, f"no Service {service} in {forward.namespace}"
        names = {str(port.get("name")) for port in ports} | {str(port["port"]) for port in ports}
        assert forward.port in names, (forward, ports)
