"""Which service an operator command blames, and what it says, for each kind of failure."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError
from botocore.exceptions import ClientError
from ca4_worker.application.ports import UnavailableError
from ca4_worker.cli_support import (
    OperatorError,
    ServiceUnreachableError,
    database_endpoint,
    kafka_endpoint,
    reaching,
)
from ca4_worker.core.config import Settings
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError

SETTINGS = Settings(
    kafka_bootstrap_servers="kafka.example:9092",
    mongo_url="mongodb://app:hunter2@db.example:27017/?tls=true",
    s3_endpoint_url="http://s3.example:9000",
    s3_bucket="archive",
)


def _raised(error: Exception, *, blame_first: str = "database") -> str:
    scope = database_endpoint(SETTINGS) if blame_first == "database" else kafka_endpoint(SETTINGS)
    with pytest.raises(OperatorError) as caught, reaching(scope, SETTINGS):
        raise error
    return str(caught.value)


def _wrapped(cause: Exception) -> UnavailableError:
    try:
        raise UnavailableError("retry later") from cause
    except UnavailableError as error:
        return error


def test_the_driver_that_failed_is_blamed_whatever_the_scope() -> None:
    assert _raised(KafkaConnectionError("no bootstrap")) == (
        "cannot reach Kafka at kafka.example:9092: start it with `uv run ca4 devstack up` "
        "or set CA4_KAFKA_BOOTSTRAP_SERVERS"
    )
    assert _raised(_wrapped(ServerSelectionTimeoutError("x")), blame_first="kafka") == (
        "cannot reach the database at mongodb://db.example:27017/?tls=true: start it with "
        "`uv run ca4 devstack up` or set CA4_MONGO_URL"
    )


def test_a_bare_timeout_or_outage_blames_the_service_in_scope() -> None:
    with (
        pytest.raises(ServiceUnreachableError) as caught,
        reaching(kafka_endpoint(SETTINGS), SETTINGS),
    ):
        raise TimeoutError
    assert caught.value.endpoint.service == "Kafka"
    assert "cannot reach the database" in _raised(UnavailableError("database error: down"))


def test_a_service_that_answers_with_an_error_is_not_called_unreachable() -> None:
    missing_bucket = ClientError(
        {"Error": {"Code": "NoSuchBucket", "Message": "The bucket does not exist"}}, "ListObjectsV2"
    )

    assert _raised(missing_bucket) == (
        "S3 at http://s3.example:9000, bucket archive failed: An error occurred (NoSuchBucket) "
        "when calling the ListObjectsV2 operation: The bucket does not exist"
    )
    assert _raised(_wrapped(OperationFailure("Authentication failed.", code=18))) == (
        "the database at mongodb://db.example:27017/?tls=true failed: Authentication failed."
    )
