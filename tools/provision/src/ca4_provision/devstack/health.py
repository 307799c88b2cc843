"""Real health checks: each talks the service's own protocol, none just probes a port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

if TYPE_CHECKING:
    from pymongo import AsyncMongoClient

CHECK_TIMEOUT_S = 3.0
QUERY_DEADLINE_S = 5.0
"""How long a real query may take before the database counts as wedged."""
PSQL_OPTIONS = ("--no-psqlrc", "--tuples-only", "--no-align")
"""Plain answers: no ~/.psqlrc, no headers, no padding."""
HEALTH_DATABASE = "ca4_devstack"
HEALTH_COLLECTION = "health"


def import_clients() -> None:
    """Import the client libraries before checks run concurrently.

    They are imported on use to keep ``ca4 devstack env`` fast, but an import inside a running
    check blocks the event loop for seconds on a busy machine, and the timers of the checks
    already waiting run out meanwhile (a healthy service reported down).
    """
    import aiokafka.client  # noqa: F401
    import pymongo  # noqa: F401


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


async def mongo_ready(url: str, *, query_deadline_s: float = QUERY_DEADLINE_S) -> None:
    """``ping`` answers, and so does a real query (an upsert and a find) within its deadline.

    A ping alone is not health: FerretDB answers it without the storage behind it, so a database
    whose connection pool is exhausted or whose storage is stuck still pings. The query touches
    a scratch collection (``ca4_devstack.health``), never project data.
    """
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
        socketTimeoutMS=int(max(CHECK_TIMEOUT_S, query_deadline_s) * 1000),
    )
    try:
        try:
            reply = await asyncio.wait_for(client.admin.command("ping"), CHECK_TIMEOUT_S + 1)
        except Exception as exc:
            raise UnhealthyError(f"ping failed: {exc!r}") from exc
        if reply.get("ok") != 1:
            raise UnhealthyError(f"ping answered {reply!r}")
        try:
            await asyncio.wait_for(_probe_query(client), query_deadline_s)
        except TimeoutError as exc:
            raise UnhealthyError(
                f"wedged: ping answers but a query on {HEALTH_DATABASE}.{HEALTH_COLLECTION} "
                f"gave no answer in {query_deadline_s:g}s"
            ) from exc
        except Exception as exc:
            raise UnhealthyError(f"ping answers but a query failed: {exc!r}") from exc
    finally:
        await client.close()


async def _probe_query(client: AsyncMongoClient[dict[str, Any]]) -> None:
    probes = client[HEALTH_DATABASE][HEALTH_COLLECTION]
    await probes.update_one({"_id": "probe"}, {"$inc": {"checks": 1}}, upsert=True)
    if await probes.find_one({"_id": "probe"}) is None:
        raise UnhealthyError("the probe document written a moment ago is not found")


async def psql(
    url: str,
    sql: str,
    *,
    psql_program: str | Path = "psql",
    timeout_s: float = CHECK_TIMEOUT_S + QUERY_DEADLINE_S,
) -> str:
    """Run one SQL statement with ``psql``; return its unaligned output (no header)."""
    proc = await asyncio.create_subprocess_exec(
        str(psql_program),
        *PSQL_OPTIONS,
        "--set=ON_ERROR_STOP=1",
        f"--command={sql}",
        url,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PGCONNECT_TIMEOUT": str(int(CHECK_TIMEOUT_S))},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise UnhealthyError(f"psql gave no answer to {sql!r}") from exc
    if proc.returncode != 0:
        raise UnhealthyError(f"psql failed: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace").strip()


async def postgres_ready(url: str, psql_program: str | Path = "psql") -> None:
    """A ``SELECT`` answers."""
    address = urlsplit(url)
    if address.hostname and address.port and not await port_open(address.hostname, address.port):
        raise UnhealthyError(f"nothing listens on {address.hostname}:{address.port}")
    answer = await psql(url, "SELECT 1", psql_program=psql_program)
    if answer != "1":
        raise UnhealthyError(f"SELECT 1 answered {answer!r}")


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
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), CHECK_TIMEOUT_S
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
