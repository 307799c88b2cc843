"""Dead letters say whose they are: the decoded event's tenant, else the processor's
``ca4-tenant`` header; the counter takes the tenant as a label only when it is a tenant of the
keys, so whoever writes to the topic cannot make its series unbounded."""

from __future__ import annotations

from ca4_schemas.constants import HEADER_TENANT
from ca4_worker.application.ingest import IngestService
from ca4_worker.domain.dead_letters import DEAD_LETTER_CLASSES
from ca4_worker.domain.records import DeadLetter
from ca4_worker.messaging.dead_letters import dead_letter_headers
from ca4_worker.persistence.memory import (
    InMemoryDeadLetters,
    InMemoryEventStore,
    InMemoryProjections,
)
from prometheus_client import REGISTRY

from tests.unit.worker.factories import event_body, record


def counted(error_class: str, tenant: str) -> float | None:
    return REGISTRY.get_sample_value(
        "ca4_worker_dead_letters_total", {"error_class": error_class, "tenant": tenant}
    )


def ingest(letters: InMemoryDeadLetters, known: frozenset[str]) -> IngestService:
    return IngestService(
        store=InMemoryEventStore(),
        projections=InMemoryProjections(),
        dead_letters=letters,
        max_backoff_s=0.01,
        known_tenants=lambda: known,
    )


async def test_a_letter_carries_the_events_tenant_or_the_processors_header() -> None:
    letters = InMemoryDeadLetters()
    service = ingest(letters, frozenset({"attr-owner", "attr-other"}))
    first = event_body(session_id="attr-s1", tenant="attr-owner")
    # The same event id under a second tenant's key: an event_id_conflict letter of that tenant.
    conflict = {
        **event_body(session_id="attr-s2", tenant="attr-other"),
        "event_id": first["event_id"],
    }
    await service.handle_batch([record(first, offset=0)])
    unknown_version = record({**first, "schema_version": 99}, offset=2)
    await service.handle_batch(
        [
            record(conflict, offset=1),
            unknown_version._replace(headers=((HEADER_TENANT, b"attr-owner"),)),
            record(b"{oops", offset=3),
        ]
    )

    assert [(letter.error_class, letter.tenant) for letter in letters.letters] == [
        ("unknown_schema_version", "attr-owner"),
        ("invalid_json", ""),
        ("event_id_conflict", "attr-other"),
    ]
    conflict_headers = dict(dead_letter_headers(letters.letters[2], "test"))
    assert conflict_headers[HEADER_TENANT] == b"attr-other"
    assert HEADER_TENANT not in dict(dead_letter_headers(letters.letters[1], "test"))


def test_the_events_tenant_replaces_a_tenant_header_on_the_record() -> None:
    forged = record(b"{}")._replace(headers=((HEADER_TENANT, b"someone-else"),))

    headers = dead_letter_headers(DeadLetter(forged, "schema_invalid", "bad", "owner"), "test")

    assert [value for name, value in headers if name == HEADER_TENANT] == [b"owner"]


async def test_letters_are_counted_by_tenant_of_the_keys_and_unknown_ones_under_empty() -> None:
    letters = InMemoryDeadLetters()
    service = ingest(letters, frozenset({"count-known"}))
    assert counted("schema_invalid", "count-known") is None
    before = counted("invalid_json", "")
    assert before is not None, "the unattributed series exist from the start"

    bad = record(b"{oops", offset=0)
    await service.handle_batch(
        [
            bad._replace(headers=((HEADER_TENANT, b"count-known"),)),
            bad._replace(offset=1, headers=((HEADER_TENANT, b"count-forged"),)),
        ]
    )

    assert counted("invalid_json", "count-known") == 1
    assert counted("invalid_json", "") == before + 1
    assert counted("invalid_json", "count-forged") is None
    # The tenant's first letter started every class of it at 0, so its next letters of any
    # class are increases of a series Prometheus already has.
    assert {c: counted(c, "count-known") for c in DEAD_LETTER_CLASSES if c != "invalid_json"} == (
        dict.fromkeys([c for c in DEAD_LETTER_CLASSES if c != "invalid_json"], 0.0)
    )
