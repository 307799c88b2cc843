"""A TCP proxy in front of one of the dev stack's services, so a test can take it away (or
make it stop answering) without touching the shared stack."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit


class TcpProxy:
    """A TCP proxy a test can cut (connections dropped, new ones refused) and restore, or
    freeze: every connection stays open and nothing more is forwarded either way, as when a
    peer or the network path stops answering mid-call."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0

    async def start(self) -> None:
        """Listen (on a free port the first time, then on the same port again)."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._connections):
            writer.transport.abort()
        self._connections.clear()
        self._flowing.set()  # frozen pipes see their sinks closed and end

    async def restore(self) -> None:
        """Listen again on the same port."""
        await self.start()

    def freeze(self) -> None:
        """Forward nothing more, on open connections and new ones, until :meth:`cut`."""
        self._flowing.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._connections.update({writer, upstream_writer})

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    await self._flowing.wait()
                    if sink.transport.is_closing():
                        break
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self._connections.discard(writer)
        self._connections.discard(upstream_writer)


@contextlib.asynccontextmanager
async def proxy_to(url: str) -> AsyncIterator[TcpProxy]:
    """A started proxy to the host and port of ``url``, cut on exit."""
    parts = urlsplit(url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 80)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.cut()
