"""DocumentDB has no retryable writes: the worker's settings guarantee retryWrites=false there;
and reads go to the primary, whatever the URL asks."""

from __future__ import annotations

from pathlib import Path

import pytest
from ca4_processor.ownership import MongoSessionClaims
from ca4_worker.core.config import Settings
from ca4_worker.persistence.database import connect
from pydantic import ValidationError
from pymongo import ReadPreference
from pymongo.uri_parser import parse_uri

DOCDB = "ca4.cluster-c1x2y3.eu-west-1.docdb.amazonaws.com:27017"


def test_documentdb_url_without_retry_option_gets_retry_writes_false(tmp_path: Path) -> None:
    ca_file = tmp_path / "global-bundle.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    url = f"mongodb://ca4:secret@{DOCDB}/?tls=true&tlsCAFile={ca_file}&replicaSet=rs0"
    options = parse_uri(Settings(mongo_url=url).mongo_url)["options"]
    assert options["retryWrites"] is False
    assert options["tlsCAFile"] == str(ca_file)
    assert options["replicaSet"] == "rs0"


def test_documentdb_url_without_path_or_query_gets_retry_writes_false() -> None:
    options = parse_uri(Settings(mongo_url=f"mongodb://ca4:secret@{DOCDB}").mongo_url)["options"]
    assert options["retryWrites"] is False


def test_documentdb_url_asking_for_retryable_writes_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValidationError, match="DocumentDB has no retryable writes") as error:
        Settings(mongo_url=f"mongodb://ca4:secret@{DOCDB}/?retryWrites=true")
    assert "secret" not in str(error.value)


@pytest.mark.parametrize(
    "url", ["mongodb://127.0.0.1:27017", "mongodb://mongo:27017/?retryWrites=true"]
)
def test_other_databases_keep_their_url(url: str) -> None:
    assert Settings(mongo_url=url).mongo_url == url


def test_a_missing_ca_file_is_named_when_the_worker_starts(tmp_path: Path) -> None:
    missing = tmp_path / "db-ca" / "global-bundle.pem"
    with pytest.raises(ValidationError, match=f"tlsCAFile={missing} does not exist") as error:
        Settings(mongo_url=f"mongodb://ca4:secret@{DOCDB}/?tls=true&tlsCAFile={missing}")
    assert "config.mongo.caBundle" in str(error.value)
    assert "secret" not in str(error.value)


@pytest.mark.parametrize(
    "options",
    [
        "readPreference=secondaryPreferred",
        "readPreference=secondaryPreferred&maxStalenessSeconds=120",
        "readPreference=nearest&readPreferenceTags=dc:ny&readPreferenceTags=",
        "",
    ],
)
async def test_reads_go_to_the_primary_whatever_the_url_asks(options: str) -> None:
    """The URL the docs once gave read from replicas: the worker and the processor read back
    what they have just written, and a replica behind the primary made the projection stage
    skip events stored by another worker for good. Staleness and tags, which pymongo refuses
    beside ``primary``, are replaced too (a second read found they stopped both services)."""
    url = "mongodb://ca4:secret@db.internal:27017/?replicaSet=rs0" + (
        f"&{options}" if options else ""
    )
    worker_client = connect(url)
    claims = MongoSessionClaims(url, database="ca4", timeout_s=1.0)
    try:
        assert worker_client.read_preference == ReadPreference.PRIMARY
        assert claims._client.read_preference == ReadPreference.PRIMARY
    finally:
        await worker_client.close()
        await claims.close()
