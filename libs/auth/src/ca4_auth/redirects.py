"""Redirects that keep the client's scheme: a key never follows one over plain http."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RelativeRedirects:
    """ASGI middleware: every redirect's ``Location`` made relative (path, query, fragment).

    Starlette builds an absolute one from the request as the app saw it, so behind a proxy
    that ends TLS (Traefik, ngrok, the dev edge) a trailing-slash redirect said ``http://``,
    and a client following it (``curl -L``, a POST's 307) sent its API key in clear. The apps
    redirect only to themselves, so the path alone is always right, whatever the scheme.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                message["headers"] = [
                    (name, relative(value) if name.lower() == b"location" else value)
                    for name, value in message.get("headers", [])
                ]
            await send(message)

        await self.app(scope, receive, sending)


def relative(location: bytes) -> bytes:
    """``location`` without its scheme and host."""
    parts = urlsplit(location.decode("latin-1"))
    if not parts.scheme and not parts.netloc:
        return location
    return urlunsplit(("", "", parts.path or "/", parts.query, parts.fragment)).encode("latin-1")
