"""The dev edge: one local URL that routes each path to the app serving it, as the ingress does.

In production one ingress URL serves ingest (the processor) and reads (the worker's read API);
the routes are the chart's ``ingress.routes`` (``infra/helm/ca4-app/values.yaml``), the one list
of them. This module is the local stand-in: an ASGI reverse proxy that reads that same list,
matches path prefixes on whole segments as a Kubernetes ``Prefix`` path does (longest wins) and
answers ``404`` for everything else, as the ingress does for probes, metrics and API docs. A
notebook user exposes this one port (``ngrok http 127.0.0.1:8002``) and reads back through it
what the SDK sent through it. The tests' ``local_edge`` runs this same proxy.

Forwarding: the method, the raw path and query, the body (streamed, never buffered) and the
headers except hop-by-hop ones; the ``Host`` header passes through (as Traefik's does) and
``X-Forwarded-For``/``-Proto``/``-Host`` are added, keeping those a tunnel in front (ngrok) set:
the edge listens on 127.0.0.1 only, so whatever talks to it is local. The answer comes back
as the app gave it: status, headers (``Retry-After`` included) and body bytes, streamed
undecoded. An upstream that does not answer is a ``502``; one slower than the deadline, a
``504`` (Traefik's answers). Header values lose surrounding whitespace on the way (optional
whitespace in HTTP, and a pasted key's trailing space is common: the upstream client refuses to
send it as is); a header that still cannot be sent is the client's error, a ``400`` whose JSON
``detail`` names the header (never its value, which may be a key), not a ``502`` blaming the app.
The edge's own health is ``GET /-/healthy``, a path the ingress never routes.

Run it with ``ca4 devstack up --with-app`` (the ``edge`` service), or by hand with
``uvicorn --factory ca4_provision.devstack.edge:from_env`` plus :data:`UVICORN_FLAGS`.
Knobs: ``CA4_EDGE_<COMPONENT>_URL`` (``CA4_EDGE_PROCESSOR_URL``, ``CA4_EDGE_WORKER_URL``; default
the dev stack's processor and worker ports) and ``CA4_EDGE_DEADLINE_S`` (60).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from ca4_provision.devstack.settings import HOST, DevstackSettings, find_repo_root

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CHART_VALUES = Path("infra") / "helm" / "ca4-app" / "values.yaml"
"""The chart's default values, relative to the repository root: ``ingress.routes`` lives there."""
HEALTH_PATH = "/-/healthy"
"""The edge's own health, answered by the edge itself (the ingress routes nothing under ``/-``)."""
DEFAULT_DEADLINE_S = 60.0
"""How long one call may take upstream, answer and body together (``CA4_EDGE_DEADLINE_S``)."""
CONNECT_TIMEOUT_S = 5.0
UVICORN_FLAGS = ("--no-proxy-headers", "--no-server-header", "--no-date-header")
"""How uvicorn must serve the edge: it sees the real peer (it adds it to ``X-Forwarded-For``
itself), and the app's ``Server`` and ``Date`` headers are not doubled by the edge's own."""
UVICORN_OPTIONS: Mapping[str, bool] = {
    "proxy_headers": False,
    "server_header": False,
    "date_header": False,
}
""":data:`UVICORN_FLAGS` as ``uvicorn.Config`` keywords (for an edge run in process)."""

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers about one connection, never forwarded (RFC 9110, 7.6.1), with those ``Connection``
names."""
_NOT_FORWARDED = HOP_BY_HOP | {"expect"}  # the edge's server answers 100-continue itself
_FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")
_OPTIONAL_WHITESPACE = b" \t"
_HEADER_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(
    rb"([\x21-\x7e\x80-\xff]([\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?"
)
"""RFC 9110's ``token`` and ``field-value`` (surrounding whitespace already gone), as h11,
the upstream client's HTTP/1.1, checks them before sending."""

log = logging.getLogger(__name__)


def chart_values(repo_root: Path | None = None) -> Path:
    """The chart's ``values.yaml`` in this checkout."""
    root = repo_root or find_repo_root() or find_repo_root(Path(__file__).parent)
    if root is None:
        raise FileNotFoundError(f"no CA4 checkout here to read {CHART_VALUES} from")
    return root / CHART_VALUES


def chart_routes(values: Path | None = None) -> dict[str, str]:
    """``path prefix -> component`` from the chart's default values (``ingress.routes``)."""
    document = yaml.safe_load((values or chart_values()).read_text("utf-8"))
    return {entry["path"]: entry["component"] for entry in document["ingress"]["routes"]}


def route(path: str, routes: Mapping[str, str]) -> str | None:
    """The component serving ``path`` (a ``Prefix`` match on whole segments), or None.

    A path with a ``.`` or ``..`` segment is served by nothing: the upstream URL would drop the
    dot segments after the match, so ``/v1/sessions/../../metrics`` reached the worker's
    ``/metrics``, which the ingress never routes (Traefik cleans the path before it matches).
    ``path`` is the decoded one, so ``%2e%2e`` counts too.
    """
    bare = path.split("?", 1)[0]
    if any(segment in {".", ".."} for segment in bare.split("/")):
        return None
    matches = [p for p in routes if bare == p or bare.startswith(p.rstrip("/") + "/")]
    return routes[max(matches, key=len)] if matches else None


class _ClientGoneError(Exception):
    """The client disconnected while its body was being forwarded."""


class _UnforwardableHeaderError(Exception):
    """A request header that HTTP/1.1 cannot carry upstream: the client's error, a ``400``."""

    def __init__(self, name: bytes, part: str) -> None:
        self.name = name.decode("latin-1")
        super().__init__(
            f"request header {self.name!r} cannot be forwarded: its {part} holds a character"
            " HTTP does not allow there (a control character or a line break); fix what the"
            " client sends"
        )


class EdgeProxy:
    """The ASGI app: route by ``routes``, forward to ``upstreams`` (component -> base URL)."""

    def __init__(
        self,
        routes: Mapping[str, str],
        upstreams: Mapping[str, str],
        *,
        deadline_s: float = DEFAULT_DEADLINE_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        missing = sorted(set(routes.values()) - set(upstreams))
        if missing:
            raise ValueError(f"no upstream URL for {', '.join(missing)} (routed by the chart)")
        if route(HEALTH_PATH, routes) is not None:
            raise ValueError(f"the chart routes {HEALTH_PATH}, the edge's own health path")
        if deadline_s <= 0:
            raise ValueError(f"the edge's deadline must be positive, not {deadline_s}")
        self.routes = dict(routes)
        self.upstreams = {name: url.rstrip("/") for name, url in upstreams.items()}
        self.deadline_s = deadline_s
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport,
                timeout=httpx.Timeout(self.deadline_s, connect=CONNECT_TIMEOUT_S),
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
                follow_redirects=False,
                trust_env=False,  # upstreams are local: no HTTP(S)_PROXY
            )
        return self._client

    async def aclose(self) -> None:
        """Close the upstream connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point: lifespan and HTTP (the ingress routes no websocket)."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http_request(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path == HEALTH_PATH:
            await _answer(send, 200, b"ok\n")
            return
        component = route(path, self.routes)
        if component is None:
            await _answer(send, 404, b"404 page not found\n")
            return
        raw_path: bytes = scope.get("raw_path") or path.encode()
        query: bytes = scope.get("query_string", b"")
        url = self.upstreams[component] + raw_path.decode("latin-1")
        if query:
            url += "?" + query.decode("latin-1")
        try:
            headers, has_body = _request_headers(scope)
        except _UnforwardableHeaderError as exc:
            log.info("%s %s: %s", scope["method"], path, exc)
            await _answer_json(send, 400, {"detail": str(exc)})
            return
        request = httpx.Request(
            scope["method"],
            url,
            headers=headers,
            content=_body(receive) if has_body else None,
        )
        await self._exchange(request, component, send)

    async def _exchange(self, request: httpx.Request, component: str, send: Send) -> None:
        started = False
        try:
            async with asyncio.timeout(self.deadline_s):
                upstream = await self._http().send(request, stream=True)
                try:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": upstream.status_code,
                            "headers": _response_headers(upstream.headers.raw),
                        }
                    )
                    started = True
                    async for chunk in upstream.aiter_raw():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                finally:
                    await upstream.aclose()
        except _ClientGoneError:
            return
        except (TimeoutError, httpx.TimeoutException) as exc:
            log.warning("%s %s: %s gave no answer in time (%r)", *_what(request, component), exc)
            if not started:
                await _answer(send, 504, b"Gateway Timeout\n")
        except httpx.LocalProtocolError as exc:
            # What the upstream client refused to send was the request as the client made it
            # (the checks in _request_headers should catch it first). Its message may quote a
            # header's value, a key: neither logged nor answered.
            log.info(
                "%s %s: not forwardable (%s)", *_what(request, component)[:2], type(exc).__name__
            )
            if not started:
                detail = "the request cannot be forwarded as sent (not valid HTTP/1.1)"
                await _answer_json(send, 400, {"detail": detail})
        except httpx.TransportError as exc:
            log.warning("%s %s: %s unreachable (%r)", *_what(request, component), exc)
            if not started:
                await _answer(send, 502, b"Bad Gateway\n")
        except OSError as exc:  # (TimeoutError is one, handled above) the client went away
            log.info("%s %s: client gone (%r)", *_what(request, component)[:2], exc)


def _what(request: httpx.Request, component: str) -> tuple[str, str, str]:
    return request.method, request.url.raw_path.decode("latin-1"), component


def _request_headers(scope: Scope) -> tuple[list[tuple[bytes, bytes]], bool]:
    """What goes upstream, and whether a body comes with the request.

    Values lose surrounding whitespace; a name or value HTTP/1.1 cannot carry raises
    :class:`_UnforwardableHeaderError`.
    """
    raw = [(n, v.strip(_OPTIONAL_WHITESPACE)) for n, v in scope.get("headers", [])]
    for name, value in raw:
        if not _HEADER_NAME.fullmatch(name):
            raise _UnforwardableHeaderError(name, "name")
        if not _HEADER_VALUE.fullmatch(value):
            raise _UnforwardableHeaderError(name, "value")
    headers = _without(raw, _NOT_FORWARDED)
    has_body = any(n.lower() in {b"content-length", b"transfer-encoding"} for n, _ in raw)
    given = {n: v for n, v in headers if n in _FORWARDED}
    headers = [(n, v) for n, v in headers if n not in _FORWARDED]
    client = scope.get("client")
    peer = client[0].encode() if client else b""
    chain = b", ".join(v for v in (given.get(b"x-forwarded-for"), peer) if v)
    host = next((v for n, v in headers if n == b"host"), b"")
    proto = given.get(b"x-forwarded-proto") or str(scope.get("scheme", "http")).encode()
    forwarded_host = given.get(b"x-forwarded-host") or host
    if chain:
        headers.append((b"x-forwarded-for", chain))
    headers.append((b"x-forwarded-proto", proto))
    if forwarded_host:
        headers.append((b"x-forwarded-host", forwarded_host))
    return headers, has_body


def _response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The app's headers less hop-by-hop ones (``Content-Length`` stays: the body is as sent)."""
    return _without(raw, HOP_BY_HOP)


def _without(raw: list[tuple[bytes, bytes]], names: frozenset[str]) -> list[tuple[bytes, bytes]]:
    """``raw`` headers, lower-cased, less ``names`` and those its ``Connection`` header names."""
    named_in_connection = {
        token.strip().lower()
        for name, value in raw
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    dropped = {h.encode() for h in names} | named_in_connection
    return [(n.lower(), v) for n, v in raw if n.lower() not in dropped]


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    """The request body as it arrives (never held whole)."""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError
        more = bool(message.get("more_body", False))
        chunk: bytes = message.get("body", b"")
        if chunk:
            yield chunk


async def _answer(
    send: Send, status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8"
) -> None:
    """An answer from the edge itself, plain text unless ``content_type`` says otherwise."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _answer_json(send: Send, status: int, document: Mapping[str, str]) -> None:
    """A JSON answer from the edge itself, for a client's error: ``detail`` as the API has it."""
    await _answer(send, status, json.dumps(document).encode(), b"application/json")


def upstreams_from_env(
    routes: Mapping[str, str], settings: DevstackSettings | None = None
) -> dict[str, str]:
    """``CA4_EDGE_<COMPONENT>_URL`` for each routed component, else its dev stack port."""
    settings = settings or DevstackSettings.from_env()
    upstreams = {}
    for component in sorted(set(routes.values())):
        variable = f"CA4_EDGE_{component.upper()}_URL"
        port = getattr(settings.ports, component, None)
        url = os.environ.get(variable) or (f"http://{HOST}:{port}" if port else None)
        if url is None:
            raise ValueError(f"set {variable}: the dev stack runs no {component}")
        upstreams[component] = url
    return upstreams


def from_env() -> EdgeProxy:
    """The edge the dev stack runs (``uvicorn --factory``): the checkout's chart routes, upstreams
    from ``CA4_EDGE_*_URL`` or the dev stack ports, the deadline from ``CA4_EDGE_DEADLINE_S``."""
    settings = DevstackSettings.from_env()
    routes = chart_routes(chart_values(settings.repo_root))
    raw_deadline = os.environ.get("CA4_EDGE_DEADLINE_S") or str(DEFAULT_DEADLINE_S)
    try:
        deadline_s = float(raw_deadline)
    except ValueError as exc:
        raise ValueError(f"CA4_EDGE_DEADLINE_S={raw_deadline!r} is not a number") from exc
    return EdgeProxy(routes, upstreams_from_env(routes, settings), deadline_s=deadline_s)
