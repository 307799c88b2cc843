"""The compose edge (``infra/compose/edge.conf``): the chart's ingress routes, in nginx.

Docker cannot run here, so the file is checked twice. Statically: its locations are the chart's
``ingress.routes`` (the one list, read as the dev edge reads it) and the compose service is wired
to it. Executed: Debian's nginx (installed with the dev stack's apt helper, as Prometheus is)
serves the same file in a mount namespace whose ``/etc/hosts`` points ``processor`` and
``worker`` at stub servers on loopback addresses, on the container ports compose uses; only its
``listen`` line is changed, to a free loopback port. What it refuses is compared with what the
dev edge (``ca4_provision.devstack.edge``) answers for the same path.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest
import yaml
from ca4_processor.core.config import Settings as ProcessorSettings
from ca4_provision.devstack import edge, installers
from ca4_provision.devstack.settings import DevstackSettings
from ca4_provision.devstack.tools import MissingToolError
from ca4_provision.devstack.versions import IMAGE_TAGS

from tests.infra.conftest import REPO
from tests.support.ports import free_port

pytestmark = pytest.mark.stand_in(
    "the compose edge container: no Docker engine here; ran instead: infra/compose/edge.conf "
    "served by a real nginx in front of stub apps"
)

CONF = REPO / "infra" / "compose" / "edge.conf"
COMPOSE = REPO / "docker-compose.yml"
CONTAINER_CONF = "/etc/nginx/conf.d/default.conf"  # the nginx image reads it inside http {}
ROUTES = edge.chart_routes(REPO / edge.CHART_VALUES)
#: Where the stubs answer: the loopback address ``processor``/``worker`` resolve to in the test.
STUB_ADDRESSES = {"processor": "127.0.0.2", "worker": "127.0.0.3"}
EDGE_ADDRESS = "127.0.0.4"
NOT_FOUND = (404, b"404 page not found\n")


# --- the config file, parsed ------------------------------------------------------------------


def conf_text() -> str:
    return "\n".join(line.split("#", 1)[0] for line in CONF.read_text("utf-8").splitlines())


def upstream_servers() -> dict[str, tuple[str, int]]:
    """``upstream`` block name -> its one ``server host:port``."""
    found = re.findall(r"upstream\s+(\S+)\s*\{[^}]*?server\s+([\w.-]+):(\d+)", conf_text())
    return {name: (host, int(port)) for name, host, port in found}


def locations() -> dict[str, str | None]:
    """``location`` (``"= /p"`` or ``"/p/"``) -> the host its upstream names, None if none."""
    upstreams = upstream_servers()
    routed: dict[str, str | None] = {}
    for exact, path, body in re.findall(r"location\s+(=\s*)?(\S+)\s*\{([^}]*)\}", conf_text()):
        target = re.search(r"proxy_pass\s+http://([\w.-]+)\s*;", body)
        key = f"= {path}" if exact else path
        routed[key] = upstreams[target.group(1)][0] if target else None
    return routed


def directive(name: str) -> str:
    values = re.findall(rf"^\s*{name}\s+([^;]+);", conf_text(), flags=re.MULTILINE)
    assert len(values) == 1, f"{CONF.name}: {name} {values}"
    return str(values[0]).strip()


def seconds(value: str) -> float:
    assert value.endswith("s"), value
    return float(value[:-1])


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text("utf-8"))["services"]
    return services


def container_port(service: str) -> int:
    (mapping,) = compose_services()[service]["ports"]
    return int(str(mapping).rsplit(":", 1)[1])


# --- static -----------------------------------------------------------------------------------


def test_edge_locations_are_the_charts_ingress_routes() -> None:
    routed = {key: host for key, host in locations().items() if host is not None}
    expected = {}
    for path, component in ROUTES.items():
        expected[f"= {path}"] = component  # a Prefix path matches itself...
        expected[f"{path.rstrip('/')}/"] = component  # ...and whole segments below it
    assert routed == expected
    others = {key for key, host in locations().items() if host is None}
    assert others == {f"= {edge.HEALTH_PATH}", "/"}


def test_edge_upstreams_are_the_container_ports_compose_uses() -> None:
    for host, port in upstream_servers().values():
        assert host in compose_services(), host
        assert port == container_port(host), f"{host}:{port}"
    assert {host for host, _ in upstream_servers().values()} == set(ROUTES.values())


def test_edge_limits_match_the_processor_and_the_dev_edge() -> None:
    fields = ProcessorSettings.model_fields
    size = directive("client_max_body_size")
    assert size.endswith("m"), size
    assert int(size[:-1]) * 1024 * 1024 == fields["MAX_BODY_BYTES"].default
    assert seconds(directive("client_body_timeout")) == fields["BODY_READ_TIMEOUT_S"].default
    assert seconds(directive("proxy_read_timeout")) == edge.DEFAULT_DEADLINE_S
    assert seconds(directive("proxy_send_timeout")) == edge.DEFAULT_DEADLINE_S
    assert seconds(directive("proxy_connect_timeout")) == edge.CONNECT_TIMEOUT_S
    assert directive("proxy_request_buffering") == "off"  # streamed, as the dev edge does


def test_compose_edge_service_is_wired_to_the_config() -> None:
    service = compose_services()["edge"]
    assert service["image"] == f"nginx:{IMAGE_TAGS['nginx']}"
    assert f"./{CONF.relative_to(REPO)}:{CONTAINER_CONF}:ro" in service["volumes"]
    listen = int(directive("listen"))
    (published,) = service["ports"]
    host_ip, _, inner = str(published).split(":")
    assert (host_ip, int(inner)) == ("127.0.0.1", listen)
    assert f"http://127.0.0.1:{listen}{edge.HEALTH_PATH}" in service["healthcheck"]["test"]
    assert service["depends_on"] == {
        component: {"condition": "service_healthy"} for component in set(ROUTES.values())
    }


# --- executed: the real nginx with this file --------------------------------------------------


@dataclass
class Seen:
    """One request a stub upstream received."""

    upstream: str
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Stubs:
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> list[Seen]:
        with self.lock:
            taken, self.seen[:] = list(self.seen), []
        return taken


def stub_handler(name: str, stubs: Stubs) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = self._chunked()
            else:
                body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            with stubs.lock:
                stubs.seen.append(Seen(name, self.command, self.path, headers, body))
            answer = json.dumps({"upstream": name}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def _chunked(self) -> bytes:
            body = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return body

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def log_message(self, *_: Any) -> None:
            pass

    return Handler


def nginx_binary() -> str:
    """Debian's nginx, installed by the dev stack's apt helper when missing (cached: dpkg)."""
    cache = DevstackSettings.from_env().cache
    try:
        asyncio.run(installers.apt_install(cache, ["nginx"], log_name="nginx"))
    except (MissingToolError, installers.InstallError) as error:
        pytest.fail(f"the compose edge test runs the real nginx and could not install it: {error}")
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if found is None:
        pytest.fail("the compose edge test runs the real nginx: install it (apt-get install nginx)")
    return found


@pytest.fixture(scope="module")
def stubs() -> Iterator[Stubs]:
    recorded = Stubs()
    servers = []
    for host, port in upstream_servers().values():
        server = ThreadingHTTPServer((STUB_ADDRESSES[host], port), stub_handler(host, recorded))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield recorded
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def nginx_edge(stubs: Stubs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The port the real nginx serves edge.conf on, ``processor``/``worker`` being the stubs."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("the compose edge test needs root and unshare (CI runs as root): /etc/hosts")
    binary = nginx_binary()
    work = tmp_path_factory.mktemp("nginx-edge")
    port = free_port(EDGE_ADDRESS)
    conf, replaced = re.subn(
        r"^(\s*)listen\s+\d+;",
        rf"\1listen {EDGE_ADDRESS}:{port};",
        CONF.read_text("utf-8"),
        flags=re.MULTILINE,
    )
    assert replaced == 1, f"{CONF.name} has no `listen <port>;` line"
    (work / "edge.conf").write_text(conf)
    temp = "\n".join(
        f"    {kind}_temp_path {work}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # What the nginx image's own nginx.conf provides around conf.d/default.conf, here in tmp.
    (work / "nginx.conf").write_text(
        f"user root;\nworker_processes 1;\npid {work}/nginx.pid;\nerror_log stderr warn;\n"
        f"events {{ worker_connections 64; }}\n"
        f"http {{\n    access_log off;\n{temp}\n    include {work}/edge.conf;\n}}\n"
    )
    hosts = work / "hosts"
    hosts.write_text(
        "127.0.0.1 localhost\n"
        + "".join(f"{address} {name}\n" for name, address in STUB_ADDRESSES.items())
    )
    command = (
        f"mount --bind {hosts} /etc/hosts && exec {binary} -e stderr -p {work}/ "
        f'-c {work}/nginx.conf -g "daemon off;"'
    )
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-ec", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 5
        while request(port, "GET", edge.HEALTH_PATH, retry=True)[0] != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                output = proc.communicate()[0].decode(errors="replace")
                pytest.fail(f"nginx did not serve {CONF.name}:\n{output}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def request(
    port: int,
    method: str,
    target: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    retry: bool = False,
) -> tuple[int, bytes]:
    """One request with ``target`` sent verbatim (httpx would remove dot segments first)."""
    conn = http.client.HTTPConnection(
        EDGE_ADDRESS, port, timeout=10, source_address=("127.0.0.1", 0)
    )
    try:
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    except ConnectionRefusedError:
        if retry:
            return 0, b""
        raise
    finally:
        conn.close()


def dev_edge_answer(target: str) -> tuple[int, bytes]:
    """What the dev edge answers, its upstreams unreachable (it must not need them here)."""
    raw_path, _, query = target.partition("?")
    proxy = edge.EdgeProxy(ROUTES, dict.fromkeys(ROUTES.values(), "http://127.0.0.1:9"))
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": "GET",
        "path": unquote(raw_path),  # as uvicorn decodes it
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "headers": [(b"host", b"edge.test")],
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    asyncio.run(proxy(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


ROUTED_TARGETS = [
    target
    for path in ROUTES
    for target in (path, f"{path.rstrip('/')}/s-1/items?limit=2&after=a%2Fb", f"{path}/")
]


@pytest.mark.parametrize("target", ROUTED_TARGETS)
def test_each_chart_route_reaches_its_component_with_path_and_query_intact(
    nginx_edge: int, stubs: Stubs, target: str
) -> None:
    component = edge.route(target, ROUTES)
    assert component is not None
    stubs.take()
    assert request(nginx_edge, "GET", target) == (200, json.dumps({"upstream": component}).encode())
    (seen,) = stubs.take()
    assert (seen.upstream, seen.method, seen.target) == (component, "GET", target)


def test_a_gzip_body_up_to_the_processors_limit_passes_unchanged(
    nginx_edge: int, stubs: Stubs
) -> None:
    stubs.take()
    body = gzip.compress(json.dumps({"reports": [{"gpu": i} for i in range(1000)]}).encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    assert request(nginx_edge, "POST", "/v1/metadata", body=body, headers=headers)[0] == 200
    (seen,) = stubs.take()
    assert (seen.upstream, seen.body, seen.headers["content-encoding"]) == (
        "processor",
        body,
        "gzip",
    )
    limit = ProcessorSettings.model_fields["MAX_BODY_BYTES"].default
    assert request(nginx_edge, "POST", "/v1/metadata", body=b"x" * limit)[0] == 200
    assert len(stubs.take()[0].body) == limit
    assert request(nginx_edge, "POST", "/v1/metadata", body=b"x" * (limit + 1))[0] == 413
    assert stubs.take() == []


REFUSED_TARGETS = [
    "/v1/sessions/../../metrics",
    "/v1/sessions/s-1/../../metrics?x=1",
    "/v1/sessions/./s-1",
    "/v1/sessions/x/../s-1",  # nginx would match the cleaned path, then forward this one
    "/v1/metadata/../../v1/sessions",
    "/v1/gpus/%2e%2e/sessions",
    "/v1/usage/..%2Fgpus",
    "/v1/sessions/s-1/.",
    "/v1/sessions/%2e%2e/%2E%2E/metrics",
    "/v1/sessions/..%2f..%2fmetrics",
    "/v1/gpus/.%2e/docs",
    "/v1/events/%2e",
    "/sdk/..",
    "/metrics",
    "/healthz",
    "/readyz",
    "/docs",
    "/openapi.json",
    "/",
    "/v1/metadatax",
    "/v1",
    "//v1/metadata",
]


@pytest.mark.parametrize("target", REFUSED_TARGETS)
def test_dot_segments_and_unrouted_paths_are_refused_as_the_dev_edge_refuses_them(
    nginx_edge: int, stubs: Stubs, target: str
) -> None:
    stubs.take()
    assert dev_edge_answer(target) == NOT_FOUND
    assert request(nginx_edge, "GET", target) == NOT_FOUND
    assert stubs.take() == []


def test_dots_in_the_query_are_not_dot_segments(nginx_edge: int, stubs: Stubs) -> None:
    stubs.take()
    assert request(nginx_edge, "GET", "/v1/events?after=../x")[0] == 200
    assert stubs.take()[0].target == "/v1/events?after=../x"


def test_host_and_forwarded_headers_are_what_the_ingress_passes(
    nginx_edge: int, stubs: Stubs
) -> None:
    stubs.take()
    request(nginx_edge, "GET", "/v1/gpus", headers={"Host": "notebook.test:8002"})
    (direct,) = stubs.take()
    forwarded = {k: v for k, v in direct.headers.items() if k == "host" or "forwarded" in k}
    assert forwarded == {
        "host": "notebook.test:8002",
        "x-forwarded-for": "127.0.0.1",
        "x-forwarded-proto": "http",
        "x-forwarded-host": "notebook.test:8002",
    }
    tunnel = {
        "Host": "abc.ngrok.app",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "abc.ngrok.app",
    }
    request(nginx_edge, "GET", "/v1/gpus", headers=tunnel)
    (via_tunnel,) = stubs.take()
    assert via_tunnel.headers["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert via_tunnel.headers["x-forwarded-proto"] == "https"
    assert via_tunnel.headers["x-forwarded-host"] == "abc.ngrok.app"
    assert "connection" not in via_tunnel.headers  # keep-alive to the upstream is nginx's own


def test_the_edge_answers_its_own_health(nginx_edge: int, stubs: Stubs) -> None:
    stubs.take()
    assert request(nginx_edge, "GET", edge.HEALTH_PATH) == (200, b"ok\n")
    assert stubs.take() == []


def test_a_path_above_the_root_is_refused_before_routing(nginx_edge: int, stubs: Stubs) -> None:
    # nginx answers 400 itself while parsing such a request line (the dev edge: 404); either
    # way nothing is forwarded.
    stubs.take()
    assert dev_edge_answer("/../v1/sessions") == NOT_FOUND
    assert request(nginx_edge, "GET", "/../v1/sessions")[0] == 400
    assert stubs.take() == []
