"""Keys know their owner: stamping, session ownership and scopes on the ingest path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator

from tests.support.keys import key_entry
from tests.support.reports import make_report
from tests.unit.processor.conftest import FakePublisher, FakeSessionClaims

KEYS = ",".join(
    [
        key_entry("a-writer", "k-a", "tenant-a", "write+read"),
        key_entry("b-writer", "k-b", "tenant-b", "write"),
        key_entry("a-reader", "k-a-read", "tenant-a", "read"),
    ]
)
AS_A = {"Authorization": "Bearer k-a"}
AS_B = {"Authorization": "Bearer k-b"}


def _client(make_client: Callable[..., Any], **settings: Any) -> Any:
    return make_client(API_KEY_HASHES=KEYS, RATE_LIMIT_PER_SECOND=0, **settings)


async def test_every_event_carries_the_key_id_and_tenant_of_its_key(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    async with _client(make_client) as (client, _app):
        one = await client.post("/v1/metadata", json=make_report(session_id="a-1"), headers=AS_A)
        batch = await client.post(
            "/v1/metadata/batch",
            json={"reports": [make_report(session_id="a-2"), make_report(session_id="a-3")]},
            headers=AS_A,
        )

    assert (one.status_code, batch.status_code) == (202, 202)
    assert [(e.key_id, e.tenant, e.schema_version) for e in fake_publisher.published] == [
        ("a-writer", "tenant-a", 2)
    ] * 3


async def test_a_body_cannot_name_its_own_key_or_tenant(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    async with _client(make_client) as (client, _app):
        forged = await client.post(
            "/v1/metadata",
            json=make_report(session_id="a-1", tenant="tenant-b", key_id="b-writer"),
            headers=AS_A,
        )

    assert forged.status_code == 422
    assert {(tuple(item["loc"]), item["type"]) for item in forged.json()["detail"]} == {
        (("body", "tenant"), "extra_forbidden"),
        (("body", "key_id"), "extra_forbidden"),
    }
    assert fake_publisher.published == []


async def test_another_tenants_session_is_refused_with_403(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    async with _client(make_client) as (client, app):
        created = await client.post(
            "/v1/metadata", json=make_report(session_id="shared"), headers=AS_A
        )
        intruding = await client.post(
            "/v1/metadata", json=make_report(session_id="shared"), headers=AS_B
        )
        again = await client.post(
            "/v1/metadata", json=make_report(session_id="shared"), headers=AS_A
        )
        openapi = app.openapi()

    assert (created.status_code, intruding.status_code, again.status_code) == (202, 403, 202)
    # The detail as before, its hint naming the pre-tenancy cause too, and the batch's type.
    assert intruding.json() == {
        "detail": "session 'shared' belongs to another tenant; "
        "report under a session_id of your own (a session first reported before the tenancy "
        "upgrade belongs to tenant legacy, which no key holds; a rotated key must keep its key "
        "id or name the same tenant: key_id:<hash>:<tenant>)",
        "type": "session_forbidden",
    }
    documented = openapi["paths"]["/v1/metadata"]["post"]["responses"]["403"]
    validator = Draft202012Validator(
        {**documented["content"]["application/json"]["schema"], "components": openapi["components"]}
    )
    assert [error.message for error in validator.iter_errors(intruding.json())] == []
    assert "tenant-a" not in intruding.text  # the hint names no tenant, least of all the owner
    assert [event.tenant for event in fake_publisher.published] == ["tenant-a", "tenant-a"]


async def test_a_batch_refuses_only_the_reports_of_another_tenants_session(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    async with _client(make_client) as (client, _app):
        await client.post("/v1/metadata", json=make_report(session_id="a-owned"), headers=AS_A)
        mixed = await client.post(
            "/v1/metadata/batch",
            json={"reports": [make_report(session_id="b-own"), make_report(session_id="a-owned")]},
            headers=AS_B,
        )
        only_foreign = await client.post(
            "/v1/metadata/batch",
            json={"reports": [make_report(session_id="a-owned")]},
            headers=AS_B,
        )

    assert mixed.status_code == 207
    body = mixed.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert body["results"][0]["status"] == "accepted"
    assert body["results"][1] == {
        "index": 1,
        "status": "rejected",
        "errors": [
            {
                "loc": ["body", "reports", 1, "session_id"],
                "msg": "session belongs to another tenant; report under a session_id of your "
                "own (a session first reported before the tenancy upgrade belongs to tenant "
                "legacy, which no key holds; a rotated key must keep its key id or name the "
                "same tenant: key_id:<hash>:<tenant>)",
                "type": "session_forbidden",
            }
        ],
    }
    assert only_foreign.status_code == 422
    assert only_foreign.json()["results"][0]["errors"][0]["type"] == "session_forbidden"
    assert [(e.session_id, e.tenant) for e in fake_publisher.published] == [
        ("a-owned", "tenant-a"),
        ("b-own", "tenant-b"),
    ]


async def test_a_key_without_write_scope_cannot_report(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    async with _client(make_client) as (client, _app):
        response = await client.post(
            "/v1/metadata", json=make_report(), headers={"Authorization": "Bearer k-a-read"}
        )

    assert response.status_code == 403
    assert response.json() == {"detail": "API key 'a-reader' lacks the 'write' scope"}
    assert fake_publisher.published == []


async def test_ownership_that_cannot_be_checked_answers_503_and_publishes_nothing(
    make_client: Callable[..., Any], fake_publisher: FakePublisher, fake_claims: FakeSessionClaims
) -> None:
    async with _client(make_client, SESSION_OWNER_TIMEOUT_S=0.05) as (client, _app):
        fake_claims.available = False
        down = await client.post("/v1/metadata", json=make_report(session_id="x"), headers=AS_A)
        fake_claims.available, fake_claims.delay_s = True, 0.5
        slow = await client.post(
            "/v1/metadata/batch",
            json={"reports": [make_report(session_id="y")]},
            headers=AS_A,
        )

    for response in (down, slow):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert response.json() == {
            "detail": "session ownership cannot be checked right now; nothing was accepted, "
            "retry later with the same event_id"
        }
    assert fake_publisher.published == []


async def test_known_sessions_cost_no_database_round_trip(
    make_client: Callable[..., Any], fake_claims: FakeSessionClaims
) -> None:
    async with _client(make_client) as (client, _app):
        for _ in range(5):
            response = await client.post(
                "/v1/metadata", json=make_report(session_id="steady"), headers=AS_A
            )
            assert response.status_code == 202
        fake_claims.available = False  # cached owners still answer while the database is down
        cached = await client.post(
            "/v1/metadata", json=make_report(session_id="steady"), headers=AS_A
        )

    assert cached.status_code == 202
    assert fake_claims.calls == 1


async def test_the_owner_cache_is_bounded(
    make_client: Callable[..., Any], fake_claims: FakeSessionClaims
) -> None:
    async with _client(make_client, SESSION_OWNER_CACHE_SIZE=2) as (client, _app):
        for session_id in ["s1", "s2", "s3", "s1"]:
            await client.post("/v1/metadata", json=make_report(session_id=session_id), headers=AS_A)

    assert fake_claims.calls == 4  # s1 was evicted by s3, so it is asked for again


async def test_two_tenants_trying_the_docs_examples_are_both_accepted(
    make_client: Callable[..., Any], fake_publisher: FakePublisher
) -> None:
    """Each reader of ``/openapi.json`` gets examples with ids of its own: with fixed ones the
    second tenant to press "Try it out" got ``403`` for the first one's session."""
    answers, examples = [], []
    async with _client(make_client) as (client, _app):
        for headers in (AS_A, AS_B):
            spec = (await client.get("/openapi.json")).json()
            body = spec["paths"]["/v1/metadata/batch"]["post"]["requestBody"]
            example = body["content"]["application/json"]["examples"]["two_reports"]["value"]
            examples.append(example)
            answers.append(await client.post("/v1/metadata/batch", json=example, headers=headers))

    assert [answer.status_code for answer in answers] == [202, 202], answers[1].text
    first, second = ({r["session_id"] for r in example["reports"]} for example in examples)
    assert not first & second
    assert len(fake_publisher.published) == 4
    assert all(session.startswith("colab-") for session in first | second)


def _limited(make_client: Callable[..., Any], **settings: Any) -> Any:
    return make_client(
        API_KEY_HASHES=KEYS,
        RATE_LIMIT_NEW_SESSIONS_PER_SECOND=0.001,
        RATE_LIMIT_NEW_SESSIONS_BURST=3,
        **settings,
    )


async def test_a_tenant_starts_at_most_its_new_session_burst_and_known_sessions_go_on(
    make_client: Callable[..., Any], fake_publisher: FakePublisher, fake_claims: FakeSessionClaims
) -> None:
    """A key holder sending each report as a new session, within its token rate, made the
    worker create documents faster than it could and delayed every tenant's projections."""
    async with _limited(make_client) as (client, _app):
        started = [
            await client.post("/v1/metadata", json=make_report(session_id=f"s{i}"), headers=AS_A)
            for i in range(3)
        ]
        refused = await client.post("/v1/metadata", json=make_report(session_id="s3"), headers=AS_A)
        batch = await client.post(
            "/v1/metadata/batch",
            json={"reports": [make_report(session_id="s0"), make_report(session_id="s4")]},
            headers=AS_A,
        )
        known = await client.post("/v1/metadata", json=make_report(session_id="s1"), headers=AS_A)
        other_tenant = await client.post(
            "/v1/metadata", json=make_report(session_id="b0"), headers=AS_B
        )

    assert [response.status_code for response in started] == [202, 202, 202]
    assert (refused.status_code, batch.status_code) == (429, 429)
    assert refused.json() == {
        "detail": "this request starts 1 new sessions, more than tenant 'tenant-a' may start "
        "now (RATE_LIMIT_NEW_SESSIONS_PER_SECOND: 0.001/s, all its keys together); reports of "
        "sessions already started are not limited by this. Nothing was accepted; retry after "
        "the Retry-After seconds"
    }
    assert int(refused.headers["Retry-After"]) > 900
    assert (known.status_code, other_tenant.status_code) == (202, 202)
    assert sorted(fake_claims.owners) == ["b0", "s0", "s1", "s2"]  # nothing claimed if refused
    assert [event.session_id for event in fake_publisher.published] == [
        "s0",
        "s1",
        "s2",
        "s1",
        "b0",
    ]


async def test_a_session_another_processor_claimed_is_not_a_new_one_here(
    make_client: Callable[..., Any], fake_claims: FakeSessionClaims
) -> None:
    fake_claims.owners.update({f"old-{i}": "tenant-a" for i in range(5)})  # before a restart
    async with _limited(make_client) as (client, _app):
        answers = [
            await client.post("/v1/metadata", json=make_report(session_id=f"old-{i}"), headers=AS_A)
            for i in range(5)
        ]
        new = await client.post("/v1/metadata", json=make_report(session_id="new"), headers=AS_A)

    assert [answer.status_code for answer in answers] == [202] * 5
    assert new.status_code == 202  # the burst of 3 is still whole


async def test_a_new_session_refusal_gives_back_the_tokens_it_paid(
    make_client: Callable[..., Any],
) -> None:
    """A fleet retrying its new sessions spent the tenant's rate, and its running sessions got
    429 too (found by a second read)."""
    async with make_client(
        API_KEY_HASHES=KEYS,
        RATE_LIMIT_PER_SECOND=0.001,
        RATE_LIMIT_BURST=5,
        RATE_LIMIT_TENANT_KEYS=1,
        RATE_LIMIT_NEW_SESSIONS_PER_SECOND=0.001,
        RATE_LIMIT_NEW_SESSIONS_BURST=1,
    ) as (client, _app):
        first = await client.post("/v1/metadata", json=make_report(session_id="s0"), headers=AS_A)
        refused = [
            await client.post("/v1/metadata", json=make_report(session_id="s1"), headers=AS_A)
            for _ in range(4)
        ]
        known = await client.post("/v1/metadata", json=make_report(session_id="s0"), headers=AS_A)

    assert first.status_code == 202
    assert [answer.status_code for answer in refused] == [429] * 4
    assert known.status_code == 202, known.text


async def test_a_batch_starting_more_sessions_than_the_burst_is_413_not_429_for_good(
    make_client: Callable[..., Any], fake_claims: FakeSessionClaims
) -> None:
    """A 429 it could never get past: the SDK retries a 429 as it is and splits only on 413."""
    async with _limited(make_client) as (client, _app):
        answer = await client.post(
            "/v1/metadata/batch",
            json={"reports": [make_report(session_id=f"n{i}") for i in range(4)]},
            headers=AS_A,
        )

    assert answer.status_code == 413
    assert answer.json() == {
        "detail": "this request starts 4 new sessions, more than tenant 'tenant-a' may ever "
        "start at once (RATE_LIMIT_NEW_SESSIONS_BURST: 3); send reports of fewer new sessions "
        "per request"
    }
    assert fake_claims.owners == {}
