"""What the operator commands share: one-line errors that name the endpoint and the fix,
deadlines on every call to a service, and confirmation before anything destructive.

The root ``ca4`` command prints an :class:`OperatorError` as one line (``--debug`` adds the
traceback); everything here only raises it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import typer
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
)
from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from pymongo.errors import ConnectionFailure, PyMongoError
from rich.text import Text

from ca4_worker.application.ports import UnavailableError
from ca4_worker.core.config import Settings

START_HINT = "start it with `uv run ca4 devstack up`"

_CONTROL_SHOWN = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}
_CONTROL_SHOWN_BUT_LINES = {code: shown for code, shown in _CONTROL_SHOWN.items() if code != 0x0A}


def as_written(value: str, *, style: str = "", lines: bool = False) -> Text:
    """Text a record carries, shown as written: never read as Rich markup or emoji codes, and
    its control characters (terminal escape sequences among them) shown as ``\\xNN``; with
    ``lines``, line breaks kept."""
    return Text(value.translate(_CONTROL_SHOWN_BUT_LINES if lines else _CONTROL_SHOWN), style)


class OperatorError(Exception):
    """A failure the operator can fix; its message is the whole story, in one line."""


@dataclass(frozen=True)
class Endpoint:
    """A service the command talks to: its name, where it is, and the variable that moves it."""

    service: str
    address: str
    variable: str


class ServiceUnreachableError(OperatorError):
    """A service did not answer (refused, timed out, or went away mid-command)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        super().__init__(
            f"cannot reach {endpoint.service} at {endpoint.address}: "
            f"{START_HINT} or set {endpoint.variable}"
        )


class ServiceFailedError(OperatorError):
    """A service answered, with an error (bad credentials, a missing bucket, ...)."""

    def __init__(self, endpoint: Endpoint, reason: str) -> None:
        self.endpoint = endpoint
        super().__init__(f"{endpoint.service} at {endpoint.address} failed: {reason}")


class ConfirmationRequiredError(OperatorError):
    """A destructive command ran without a terminal to ask on and without ``--yes``."""


def _without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` removed, so an error message never shows a secret."""
    parts = urlsplit(url)
    if parts.hostname is None or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def kafka_endpoint(settings: Settings) -> Endpoint:
    """The Kafka brokers the settings name."""
    return Endpoint("Kafka", settings.kafka_bootstrap_servers, "CA4_KAFKA_BOOTSTRAP_SERVERS")


def database_endpoint(settings: Settings) -> Endpoint:
    """The event store the settings name (credentials removed)."""
    return Endpoint("the database", _without_credentials(settings.mongo_url), "CA4_MONGO_URL")


def s3_endpoint(settings: Settings) -> Endpoint:
    """The archive bucket's S3 endpoint the settings name."""
    where = settings.s3_endpoint_url or f"AWS S3 ({settings.s3_region})"
    return Endpoint("S3", f"{where}, bucket {settings.s3_bucket}", "CA4_S3_ENDPOINT_URL")


_MAX_REASON = 200
_UNREACHABLE = (
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
    ConnectionFailure,
    BotoConnectionError,
    TimeoutError,
    ConnectionError,
    UnavailableError,
)


def _driver_error(error: BaseException) -> BaseException:
    """The driver's error behind ``error`` (ours wrap them, e.g. :class:`UnavailableError`)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, KafkaError | PyMongoError | BotoCoreError | ClientError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return error


def _endpoint_of(error: BaseException, settings: Settings) -> Endpoint | None:
    if isinstance(error, KafkaError):
        return kafka_endpoint(settings)
    if isinstance(error, PyMongoError):
        return database_endpoint(settings)
    if isinstance(error, BotoCoreError | ClientError):
        return s3_endpoint(settings)
    return None


@contextmanager
def reaching(endpoint: Endpoint, settings: Settings) -> Iterator[None]:
    """Turn a service's failures into one-line operator errors.

    The driver that raised decides which service is blamed (a replay from S3 talks to S3 and
    the database at once); a bare timeout or socket error blames ``endpoint``.
    """
    try:
        yield
    except (
        KafkaError,
        PyMongoError,
        BotoCoreError,
        ClientError,
        UnavailableError,
        OSError,
    ) as error:
        cause = _driver_error(error)
        blamed = _endpoint_of(cause, settings) or endpoint
        if isinstance(cause, _UNREACHABLE):
            raise ServiceUnreachableError(blamed) from error
        reason = str(cause).splitlines()[0][:_MAX_REASON] if str(cause) else type(cause).__name__
        raise ServiceFailedError(blamed, reason) from error


def interactive() -> bool:
    """True when a person can answer a prompt on this terminal."""
    return sys.stdin.isatty()


def confirm_destructive(question: str, *, yes: bool) -> None:
    """Ask before a destructive step; ``--yes`` skips the question, a script must pass it."""
    if yes:
        return
    if not interactive():
        raise ConfirmationRequiredError(
            f"{question} Refusing without confirmation: stdin is not a terminal; "
            "pass --yes to go ahead."
        )
    typer.confirm(question, abort=True)
