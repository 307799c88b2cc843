"""The dev edge: the chart's routes, what it forwards and what it answers itself.

The apps behind it are stand-ins here (ASGI apps through httpx's ASGI transport, or a plain
``http.server`` for the test that runs the edge under uvicorn); the edge in front of the real
processor and worker is ``tests/integration/sdk/test_edge_pipeline.py``.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from ca4_provision.devstack import cli as devstack_cli
from ca4_provision.devstack import settings as settings_module
from ca4_provision.devstack.edge import (
    HEALTH_PATH,
    UVICORN_FLAGS,
    EdgeProxy,
    chart_routes,
    chart_values,
    from_env,
    route,
    upstreams_from_env,
)
from ca4_provision.devstack.services import catalog
from ca4_provision.devstack.settings import DevstackSettings
from ca4_provision.devstack.stack import Stack, resolve_names

from tests.support.edge import local_edge

UPSTREAMS = {"processor": "http://processor.test", "worker": "http://worker.test"}


@pytest.fixture(autouse=True)
def _no_edge_knobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults, whatever the shell running pytest exports."""
    for name in list(os.environ):
        if name.startswith(("CA4_DEVSTACK_", "CA4_EDGE_")):
            monkeypatch.delenv(name)


class Upstream:
    """A stand-in app: records each request and answers what the test set."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
        self.body = b'{"ok": true}'
        self.delay_s = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.requests.append(
            {
                "server": scope["server"][0],
                "method": scope["method"],
                "raw_path": scope["raw_path"],
                "query": scope["query_string"],
                "headers": [(n.decode(), v.decode()) for n, v in scope["headers"]],
                "body": body,
            }
        )
        await asyncio.sleep(self.delay_s)
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})

    def header(self, index: int, name: str) -> list[str]:
        return [v for n, v in self.requests[index]["headers"] if n == name]


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


def _client(proxy: EdgeProxy) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=proxy, client=("127.0.0.1", 51000))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8002")


def _edge(upstream: Upstream, *, deadline_s: float = 60.0) -> EdgeProxy:
    transport = httpx.ASGITransport(app=upstream)
    return EdgeProxy(chart_routes(), UPSTREAMS, deadline_s=deadline_s, transport=transport)


# --- routing ------------------------------------------------------------------------------------


def test_the_routes_are_the_charts_own() -> None:
    values = yaml.safe_load(chart_values().read_text())
    expected = {r["path"]: r["component"] for r in values["ingress"]["routes"]}
    assert chart_routes() == expected
    assert set(expected.values()) == {"processor", "worker"}
    for path, component in expected.items():
        assert route(path, expected) == component
        assert route(f"{path.rstrip('/')}/anything?x=1", expected) == component


@pytest.mark.parametrize(
    ("path", "component"),
    [
        ("/v1/metadata", "processor"),
        ("/v1/metadata/batch", "processor"),
        ("/metadata", "processor"),
        ("/sdk/", "processor"),
        ("/sdk/ca4-sdk/", "processor"),
        ("/v1/sessions/abc?limit=5", "worker"),
        ("/v1/gpus", "worker"),
        ("/v1/events/0190-aaaa", "worker"),
        ("/v1/usage?days=7", "worker"),
        # Whole segments only, and nothing the chart keeps inside the cluster.
        ("/v1/sessionsX", None),
        ("/sdkx", None),
        ("/healthz", None),
        ("/readyz", None),
        ("/metrics", None),
        ("/docs", None),
        ("/openapi.json", None),
        ("/", None),
        (HEALTH_PATH, None),
    ],
)
def test_route_matches_prefixes_on_segment_boundaries(path: str, component: str | None) -> None:
    assert route(path, chart_routes()) == component


def test_the_longest_prefix_wins() -> None:
    routes = {"/v1": "processor", "/v1/sessions": "worker"}
    assert route("/v1/sessions/x", routes) == "worker"
    assert route("/v1/other", routes) == "processor"


def test_an_edge_without_an_upstream_for_a_routed_component_refuses_to_start() -> None:
    with pytest.raises(ValueError, match="no upstream URL for worker"):
        EdgeProxy(chart_routes(), {"processor": "http://p.test"})
    with pytest.raises(ValueError, match="health path"):
        EdgeProxy({"/-": "processor"}, {"processor": "http://p.test"})


# --- forwarding ---------------------------------------------------------------------------------


async def test_ingest_goes_to_the_processor_with_method_path_query_body_and_headers(
    upstream: Upstream,
) -> None:
    body = json.dumps({"event_id": "e1", "payload": {"gpus": []}}).encode()
    async with _client(_edge(upstream)) as client:
        response = await client.post(
            "/v1/metadata?dry_run=1&x=%2F",
            content=body,
            headers={
                "Authorization": "Bearer ca4-dev-key",
                "Content-Type": "application/json",
                "Idempotency-Key": "k1",
                "Connection": "keep-alive, X-Per-Hop",
                "X-Per-Hop": "dropped",
                "Keep-Alive": "timeout=5",
                "Host": "abc.ngrok-free.app",
            },
        )

    assert response.status_code == 200
    assert response.json() == {"ok": True}
    (seen,) = upstream.requests
    assert seen["server"] == "processor.test"
    assert (seen["method"], seen["raw_path"], seen["query"]) == (
        "POST",
        b"/v1/metadata",
        b"dry_run=1&x=%2F",
    )
    assert seen["body"] == body
    assert upstream.header(0, "authorization") == ["Bearer ca4-dev-key"]
    assert upstream.header(0, "idempotency-key") == ["k1"]
    assert upstream.header(0, "content-length") == [str(len(body))]
    assert upstream.header(0, "host") == ["abc.ngrok-free.app"]  # passed on, as Traefik does
    for hop in ("connection", "keep-alive", "x-per-hop"):
        assert upstream.header(0, hop) == [], hop
    assert upstream.header(0, "x-forwarded-for") == ["127.0.0.1"]
    assert upstream.header(0, "x-forwarded-proto") == ["http"]
    assert upstream.header(0, "x-forwarded-host") == ["abc.ngrok-free.app"]


async def test_reads_go_to_the_worker(upstream: Upstream) -> None:
    async with _client(_edge(upstream)) as client:
        for path in ("/v1/sessions/s1", "/v1/gpus", "/v1/events/e1", "/v1/usage?days=1"):
            assert (await client.get(path)).status_code == 200
        assert (await client.head("/sdk/ca4-sdk/")).status_code == 200
    assert [r["server"] for r in upstream.requests] == [
        "worker.test",
        "worker.test",
        "worker.test",
        "worker.test",
        "processor.test",
    ]
    assert upstream.requests[3]["query"] == b"days=1"
    assert upstream.requests[4]["method"] == "HEAD"
    assert all(r["body"] == b"" for r in upstream.requests)
    assert upstream.header(0, "transfer-encoding") == []  # a GET gets no invented body


async def test_a_tunnels_forwarded_headers_are_kept_and_extended(upstream: Upstream) -> None:
    async with _client(_edge(upstream)) as client:
        await client.get(
            "/v1/gpus",
            headers={
                "X-Forwarded-For": "203.0.113.9",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "abc.ngrok-free.app",
            },
        )
    assert upstream.header(0, "x-forwarded-for") == ["203.0.113.9, 127.0.0.1"]
    assert upstream.header(0, "x-forwarded-proto") == ["https"]
    assert upstream.header(0, "x-forwarded-host") == ["abc.ngrok-free.app"]


async def test_status_retry_after_and_body_bytes_come_back_as_the_app_sent_them(
    upstream: Upstream,
) -> None:
    upstream.status = 503
    upstream.body = gzip.compress(b'{"detail": "kafka unavailable"}')
    upstream.headers = [
        (b"content-type", b"application/json"),
        (b"content-encoding", b"gzip"),
        (b"content-length", str(len(upstream.body)).encode()),
        (b"retry-after", b"7"),
        (b"x-request-id", b"r1"),
        (b"connection", b"close"),
    ]
    async with _client(_edge(upstream)) as client:
        response = await client.post("/v1/metadata", content=b"{}")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert response.headers["x-request-id"] == "r1"
    assert response.headers["content-encoding"] == "gzip"  # not decoded on the way
    assert response.headers["content-length"] == str(len(upstream.body))
    assert "connection" not in response.headers
    assert response.json() == {"detail": "kafka unavailable"}  # httpx decodes the gzip here


@pytest.mark.parametrize("status", [201, 202, 204, 301, 400, 401, 403, 404, 413, 422, 429, 500])
async def test_every_status_passes_through(upstream: Upstream, status: int) -> None:
    upstream.status = status
    upstream.body = b"" if status == 204 else b"{}"
    async with _client(_edge(upstream)) as client:
        response = await client.get("/v1/sessions/x")
    assert response.status_code == status


async def test_unrouted_paths_are_404_like_the_ingress_and_never_reach_an_app(
    upstream: Upstream,
) -> None:
    async with _client(_edge(upstream)) as client:
        for path in ("/healthz", "/metrics", "/docs", "/openapi.json", "/v1/sessionsX", "/"):
            response = await client.get(path)
            assert response.status_code == 404, path
            assert response.text == "404 page not found\n"
    assert upstream.requests == []


async def test_the_edge_answers_its_own_health_without_asking_an_app(upstream: Upstream) -> None:
    async with _client(_edge(upstream)) as client:
        response = await client.get(HEALTH_PATH)
    assert (response.status_code, response.text) == (200, "ok\n")
    assert upstream.requests == []


async def test_an_app_that_does_not_answer_is_a_502() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    proxy = EdgeProxy(chart_routes(), UPSTREAMS, transport=httpx.MockTransport(refuse))
    async with _client(proxy) as client:
        response = await client.post("/v1/metadata", content=b"{}")
    await proxy.aclose()
    assert response.status_code == 502
    assert response.text == "Bad Gateway\n"


async def test_an_app_slower_than_the_deadline_is_a_504(upstream: Upstream) -> None:
    upstream.delay_s = 5.0
    proxy = _edge(upstream, deadline_s=0.2)
    async with _client(proxy) as client:
        response = await asyncio.wait_for(client.get("/v1/usage"), 3.0)
    await proxy.aclose()
    assert response.status_code == 504


# --- settings -----------------------------------------------------------------------------------


def test_upstreams_are_the_dev_stack_ports_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CA4_DEVSTACK_PROCESSOR_PORT", "18000")
    assert upstreams_from_env(chart_routes()) == {
        "processor": "http://127.0.0.1:18000",
        "worker": "http://127.0.0.1:8001",
    }
    monkeypatch.setenv("CA4_EDGE_WORKER_URL", "http://10.0.0.5:9001")
    assert upstreams_from_env(chart_routes())["worker"] == "http://10.0.0.5:9001"
    with pytest.raises(ValueError, match="CA4_EDGE_ARCHIVE_URL"):
        upstreams_from_env({"/x": "archive"}, DevstackSettings.from_env())


def test_the_factory_reads_the_checkouts_chart_and_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CA4_EDGE_DEADLINE_S", "12.5")
    proxy = from_env()
    assert proxy.routes == chart_routes()
    assert proxy.deadline_s == 12.5
    assert proxy.upstreams == {
        "processor": "http://127.0.0.1:8000",
        "worker": "http://127.0.0.1:8001",
    }
    monkeypatch.setenv("CA4_EDGE_DEADLINE_S", "soon")
    with pytest.raises(ValueError, match="CA4_EDGE_DEADLINE_S"):
        from_env()


# --- under uvicorn, as the dev stack and the tests run it ---------------------------------------


class _Plain(BaseHTTPRequestHandler):
    """An app server of another kind: echoes what it got, in a JSON body."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = b""
            while (size := int(self.rfile.readline().strip(), 16)) > 0:
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = json.dumps(
            {
                "path": self.path,
                "body": body.decode(),
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        ).encode()
        self.send_response(429)
        self.send_header("Retry-After", "3")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def plain_app() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Plain)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_under_uvicorn_a_chunked_body_streams_through_and_headers_are_not_doubled(
    plain_app: str,
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"event_id": '
        yield b'"e2"}'

    with local_edge({"processor": plain_app, "worker": plain_app}) as edge:
        response = httpx.post(f"{edge}/v1/metadata?a=b", content=chunks(), timeout=10)
        health = httpx.get(f"{edge}{HEALTH_PATH}", timeout=10)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.headers.get_list("server") == [response.headers["server"]]  # the app's
    assert "BaseHTTP" in response.headers["server"]
    assert len(response.headers.get_list("date")) == 1
    seen = response.json()
    assert seen["path"] == "/v1/metadata?a=b"
    assert seen["body"] == '{"event_id": "e2"}'
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert health.status_code == 200


def test_the_chart_values_file_is_found_from_anywhere_in_the_checkout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # outside the checkout: found from the package's own folder
    assert chart_values().is_file()


# --- the dev stack service ----------------------------------------------------------------------


class _Silent:
    def begin(self, service: str, what: str) -> None: ...
    def end(self, service: str, what: str) -> None: ...
    def note(self, service: str, message: str) -> None: ...


def test_the_edge_is_an_app_started_after_the_processor_and_the_worker() -> None:
    stack = Stack(DevstackSettings.from_env(), _Silent())
    names = list(stack.services)
    edge = stack.services["edge"]
    assert edge.group == "app"
    assert set(edge.depends_on) == {"processor", "worker"}
    assert names.index("edge") > max(names.index("processor"), names.index("worker"))
    assert edge.port == 8002
    assert edge.address == "http://127.0.0.1:8002"
    # CI's `ca4 devstack up` (no --with-app) starts no app, the edge included.
    assert "edge" not in {s.name for s in stack.select(None, with_app=False)}
    with_app = [s.name for s in stack.select(None, with_app=True)]
    assert with_app[-3:] == ["processor", "worker", "edge"]
    # `up edge` brings what it routes to; `down` stops it before them.
    wanted = {s.name for s in stack.select(["edge"], with_dependencies=True)}
    assert wanted == {"processor", "worker", "edge"}
    assert resolve_names(["EDGE"]) == ["edge"]


def test_the_edge_port_moves_like_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CA4_DEVSTACK_EDGE_PORT", "18002")
    assert DevstackSettings.from_env().ports.edge == 18002
    monkeypatch.setenv("CA4_DEVSTACK_EDGE_PORT", "80000")
    with pytest.raises(ValueError, match="CA4_DEVSTACK_EDGE_PORT"):
        DevstackSettings.from_env()


async def test_the_edge_service_runs_the_factory_in_front_of_this_stacks_apps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CA4_DEVSTACK_WORKER_PORT", "18001")
    monkeypatch.setenv("CA4_DEVSTACK_EDGE_PORT", "18002")
    edge = catalog(DevstackSettings.from_env())["edge"]
    spec = await edge.prepare()
    argv = " ".join(spec.argv)
    assert "-m uvicorn ca4_provision.devstack.edge:from_env" in argv
    assert "--port 18002" in argv
    assert "--factory" in spec.argv
    assert set(UVICORN_FLAGS) <= set(spec.argv)
    assert all(marker in argv for marker in spec.markers)  # its PID is recognised as ours
    assert spec.env["CA4_EDGE_PROCESSOR_URL"] == "http://127.0.0.1:8000"
    assert spec.env["CA4_EDGE_WORKER_URL"] == "http://127.0.0.1:18001"


def test_every_port_is_documented_in_the_help_and_the_settings() -> None:
    """``ca4 devstack --help`` and the settings docstring name each CA4_DEVSTACK_*_PORT."""
    epilog = devstack_cli.app.info.epilog or ""
    braces = re.search(r"CA4_DEVSTACK_\{([A-Z0-9_,]+)\}_PORT \(defaults ([\d ]+)\)", epilog)
    assert braces is not None, epilog
    in_help = dict(zip(braces[1].split(","), braces[2].split(), strict=True))
    defaults = DevstackSettings.from_env().ports
    expected = {f.name.upper(): str(getattr(defaults, f.name)) for f in fields(defaults)}
    assert in_help == expected
    for name, default in expected.items():
        assert f"``CA4_DEVSTACK_{name}_PORT`` [{default}]" in (settings_module.__doc__ or "")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/sessions/../../metrics",
        "/v1/metadata/./../readyz",
        "/v1/sessions/%2e%2e/%2e%2e/metrics",
        "/sdk/../docs",
    ],
)
def test_dot_segments_never_reach_an_app(plain_app: str, path: str) -> None:
    """Sent as is (http.client does not clean paths): a review reached the worker's unrouted
    ``/metrics`` through ``/v1/sessions/../../metrics``, as anyone with the ngrok URL could."""
    with local_edge({"processor": plain_app, "worker": plain_app}) as edge:
        connection = http.client.HTTPConnection(edge.removeprefix("http://"), timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            status, body = response.status, response.read()
        finally:
            connection.close()

    assert (status, body) == (404, b"404 page not found\n")


# --- header values the upstream cannot carry as sent --------------------------------------------


def test_a_pasted_keys_surrounding_whitespace_is_dropped_not_a_502(plain_app: str) -> None:
    """A review's 502: the edge's server (httptools) keeps a trailing space in a header value,
    and h11 then refused to send it upstream (``Illegal header value b'Bearer key '``)."""
    with local_edge({"processor": plain_app, "worker": plain_app}) as edge:
        connection = http.client.HTTPConnection(edge.removeprefix("http://"), timeout=10)
        try:
            connection.putrequest("POST", "/v1/metadata")
            connection.putheader("Authorization", "Bearer ca4-dev-key \t")
            connection.putheader("Content-Length", "2")
            connection.endheaders(b"{}")
            response = connection.getresponse()
            status, body = response.status, response.read()
        finally:
            connection.close()

    assert status == 429, body  # the app's own answer
    assert json.loads(body)["headers"]["authorization"] == "Bearer ca4-dev-key"


async def test_header_values_go_upstream_without_surrounding_whitespace(
    upstream: Upstream,
) -> None:
    async with _client(_edge(upstream)) as client:
        await client.get(
            "/v1/sessions/s1",
            headers={"Authorization": " Bearer ca4-dev-key \t", "X-Empty": "  "},
        )
    assert upstream.header(0, "authorization") == ["Bearer ca4-dev-key"]
    assert upstream.header(0, "x-empty") == [""]


@pytest.mark.parametrize(
    ("name", "value", "part"),
    [
        (b"authorization", b"Bearer ca4-\x00dev-key", "value"),
        (b"authorization", b"Bearer ca4-\x7fdev-key", "value"),
        (b"x-note", b"one\r\ntwo", "value"),
        (b"bad header", b"x", "name"),
    ],
)
async def test_a_header_that_cannot_be_forwarded_is_the_clients_400_not_a_502(
    upstream: Upstream, name: bytes, value: bytes, part: str
) -> None:
    proxy = _edge(upstream)
    messages: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/sessions/s1",
        "raw_path": b"/v1/sessions/s1",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8002"), (name, value)],
        "client": ("127.0.0.1", 51000),
        "scheme": "http",
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        messages.append(message)

    await proxy(scope, receive, send)
    await proxy.aclose()

    assert upstream.requests == []
    start, body = messages
    assert start["status"] == 400
    assert (b"content-type", b"application/json") in start["headers"]
    detail = json.loads(body["body"])["detail"]
    assert detail.startswith(f"request header {name.decode()!r} cannot be forwarded: its {part}")
    assert b"ca4" not in body["body"]  # never the value: it may be a key


async def test_what_the_upstream_client_refuses_to_send_is_a_400_that_quotes_no_value() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.LocalProtocolError("Illegal header value b'Bearer secret-key '")

    proxy = EdgeProxy(chart_routes(), UPSTREAMS, transport=httpx.MockTransport(refuse))
    async with _client(proxy) as client:
        response = await client.get("/v1/gpus")
    await proxy.aclose()
    assert response.status_code == 400
    assert response.json() == {
        "detail": "the request cannot be forwarded as sent (not valid HTTP/1.1)"
    }
    assert "secret" not in response.text


# --- the make dev banner ------------------------------------------------------------------------


def test_the_make_dev_banner_gives_notebooks_the_edge_never_the_processors_port() -> None:
    """A user who took ``:8000`` from the banner saw ingest work and every read answer 404."""
    makefile = (chart_values().parents[3] / "Makefile").read_text("utf-8")
    recipe = makefile.split("\ndev:", 1)[1].split("\n.PHONY", 1)[0]
    banner = [line for line in recipe.splitlines() if line.strip().startswith("@echo")]
    for line in banner:
        if "/sdk/" in line or "/v1/" in line:  # what a notebook installs from and reads
            assert "$(PROCESSOR_URL)" not in line, line
            assert "$(WORKER_URL)" not in line, line
    assert any("--index-url $(EDGE_URL)/sdk/ ca4-sdk" in line for line in banner)
