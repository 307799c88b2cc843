"""Real health checks: each talks the service's own protocol, none just probes a port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

if TYPE_CHECKING:
    from pymongo import AsyncMongoClient

CHECK_TIMEOUT_S = 3.0


class UnhealthyError(RuntimeError):
    """A service did not answer its health check; the message says how."""


@contextlib.contextmanager
def quiet_kafka_client() -> Iterator[None]:
    """Silence aiokafka's connection-refused log lines while a check may legitimately fail."""
    logger = logging.getLogger("aiokafka")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


async def kafka_ready(bootstrap_servers: str) -> None:
    """A metadata request answered with at least one live broker."""
    from aiokafka.client import AIOKafkaClient  # imported on use: keeps the CLI start fast

    with quiet_kafka_client():
        client = AIOKafkaClient(
            bootstrap_servers=bootstrap_servers,
            request_timeout_ms=int(CHECK_TIMEOUT_S * 1000),
        )
        try:
            await asyncio.wait_for(client.bootstrap(), CHECK_TIMEOUT_S + 1)
            if not client.cluster.brokers():
                raise UnhealthyError("metadata lists no brokers yet")
        except UnhealthyError:
            raise
        except Exception as exc:
            raise UnhealthyError(f"metadata request failed: {exc!r}") from exc
        finally:
            await client.close()


async def mongo_ready(url: str) -> None:
    """The ``ping`` command succeeds."""
    from pymongo import AsyncMongoClient

    # pymongo 4.x's async client leaks a socket when it is closed while its monitor is still
    # connecting to a down server (ResourceWarning); a plain TCP probe first avoids that case.
    address = urlsplit(url)
    if address.hostname and address.port and not await port_open(address.hostname, address.port):
        raise UnhealthyError(f"nothing listens on {address.hostname}:{address.port}")
    timeout_ms = int(CHECK_TIMEOUT_S * 1000)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        url,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=timeout_ms,
    )
    try:
        reply = await asyncio.wait_for(client.admin.command("ping"), CHECK_TIMEOUT_S + 1)
        if reply.get("ok") != 1:
            raise UnhealthyError(f"ping answered {reply!r}")
    except UnhealthyError:
        raise
    except Exception as exc:
        raise UnhealthyError(f"ping failed: {exc!r}") from exc
    finally:
        await client.close()


async def http_ok(url: str) -> None:
    """An HTTP GET answers 2xx."""
    try:
        async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_S) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        raise UnhealthyError(f"GET {url} failed: {exc!r}") from exc
    if not response.is_success:
        raise UnhealthyError(f"GET {url} answered {response.status_code}")


async def port_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
