"""Failures by cause: outages wait, timeouts shrink the call, poison is isolated and
dead-lettered while the rest of the batch is stored, projected and committed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
import structlog
from bson.errors import InvalidDocument
from ca4_worker.application import poison
from ca4_worker.application.bounded import WriteLimits, in_bounded_calls
from ca4_worker.application.ports import (
    AppendOutcome,
    RejectedError,
    TimedOutError,
    UnavailableError,
)
from ca4_worker.domain.projection import SESSION_MAX_GPU_MODELS
from ca4_worker.domain.records import PositionedEvent, RawRecord
from ca4_worker.persistence.database import classify_driver_error
from ca4_worker.persistence.memory import (
    InMemoryDeadLetters,
    InMemoryEventStore,
    InMemoryProjections,
)
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DocumentTooLarge,
    NetworkTimeout,
    OperationFailure,
    WriteConcernError,
)

from tests.unit.worker.factories import event_body, gpu_sample, record
from tests.unit.worker.stages import StoreThenProject

Parts = tuple[InMemoryEventStore, InMemoryProjections, InMemoryDeadLetters]


@pytest.fixture
def parts() -> Parts:
    return InMemoryEventStore(), InMemoryProjections(), InMemoryDeadLetters()


def service(parts: Parts, **kwargs: int) -> StoreThenProject:
    return StoreThenProject(*parts, **kwargs)


def batch_of(bodies: list[dict[str, object]]) -> list[RawRecord]:
    """One record per body, at consecutive offsets of partition 0."""
    return [record(body, offset=index) for index, body in enumerate(bodies)]


def refusing(
    operation: object, poison_ids: set[str], error: Exception
) -> object:  # a port method that refuses any call holding a poison event
    async def wrapped(events: Sequence[PositionedEvent]) -> object:
        if any(item.event_id in poison_ids for item in events):
            raise error
        return await operation(events)  # type: ignore[operator]

    return wrapped


async def test_a_document_the_store_refuses_is_dead_lettered_and_the_rest_stored(
    parts: Parts,
) -> None:
    store, projections, letters = parts
    bodies = [event_body(session_id="s1") for _ in range(10)]
    poison = bodies[6]["event_id"]
    store.append = refusing(  # type: ignore[method-assign]
        store.append, {poison}, RejectedError("document_too_large", "BSON document too large")
    )
    outcome = await service(parts).handle_batch(batch_of(bodies))
    assert (outcome.stored, outcome.duplicate, outcome.dead_lettered) == (9, 0, 1)
    assert poison not in store.events
    assert len(store.events) == 9
    [letter] = letters.letters
    assert letter.error_class == "store_document_too_large"
    assert letter.error_message == "BSON document too large"
    assert letter.record.offset == 6
    assert json.loads(letter.record.value or b"")["event_id"] == poison
    view = await projections.session("s1", tenant=None)
    assert view is not None
    assert view.sample_count == 9


async def test_a_dead_letter_log_line_names_the_event_and_session_a_client_looks_for(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh logger: the module's may be cached with processors of an earlier configuration.
    monkeypatch.setattr(poison, "log", structlog.get_logger(poison.__name__))
    good = event_body(session_id="s1")
    unknown_version = {**event_body(session_id="s1"), "schema_version": 99}
    never_from_the_processor = RawRecord("gpu-metadata", 0, 2, b"{", key=b"x" * 10_000)
    with structlog.testing.capture_logs() as lines:
        await service(parts).handle_batch(
            [*batch_of([good, unknown_version]), never_from_the_processor]
        )
    dead = [line for line in lines if line["event"] == "dead-lettered"]
    assert [(line.get("event_id"), line.get("session_id")) for line in dead] == [
        (unknown_version["event_id"], "s1"),
        (None, "x" * 128),
    ]


async def test_an_event_the_projection_refuses_is_dead_lettered_later_ones_still_apply(
    parts: Parts,
) -> None:
    store, projections, letters = parts
    bodies = [event_body(session_id="s1") for _ in range(8)]
    poison = bodies[3]["event_id"]
    projections.apply = refusing(  # type: ignore[method-assign]
        projections.apply, {poison}, RejectedError("database_rejected", "codes ['2']: bad")
    )
    outcome = await service(parts).handle_batch(batch_of(bodies))
    assert (outcome.stored, outcome.dead_lettered) == (8, 1)
    assert len(store.events) == 8  # stored, only its projection was refused
    assert [letter.error_class for letter in letters.letters] == ["projection_database_rejected"]
    view = await projections.session("s1", tenant=None)
    assert view is not None
    assert view.sample_count == 7
    assert await projections.applied_offset("s1", 0) == 7


async def test_an_unknown_error_gets_a_budget_of_tries_then_is_poison(parts: Parts) -> None:
    store, _, letters = parts
    bodies = [event_body(session_id="s1") for _ in range(4)]
    calls = 0

    async def broken(events: Sequence[PositionedEvent]) -> AppendOutcome:
        nonlocal calls
        calls += 1
        if any(item.event_id == bodies[0]["event_id"] for item in events):
            raise RuntimeError("no idea")  # neither the driver's nor the data's: unknown
        return await InMemoryEventStore.append(store, events)

    store.append = broken  # type: ignore[method-assign]
    outcome = await service(parts, max_attempts=3).handle_batch(batch_of(bodies))
    assert (outcome.stored, outcome.dead_lettered) == (3, 1)
    assert letters.letters[0].error_class == "store_unexpected_error"
    assert "RuntimeError: no idea" in letters.letters[0].error_message
    # 3 tries of the batch, then the half with the poison 3 times, the quarter 3 times, and
    # one try for each clean half: bounded, no hot loop.
    assert calls == 3 + 3 + 1 + 3 + 1


async def test_an_error_that_clears_within_the_budget_dead_letters_nothing(
    parts: Parts,
) -> None:
    store, _, letters = parts
    failures = iter([RuntimeError("flaky"), RuntimeError("flaky")])
    original = store.append

    async def flaky(events: Sequence[PositionedEvent]) -> AppendOutcome:
        error = next(failures, None)
        if error is not None:
            raise error
        return await original(events)

    store.append = flaky  # type: ignore[method-assign]
    outcome = await service(parts).handle_batch([record(event_body(), offset=0)])
    assert (outcome.stored, outcome.dead_lettered) == (1, 0)
    assert letters.letters == []


async def test_an_outage_is_waited_out_and_dead_letters_nothing(parts: Parts) -> None:
    store, projections, letters = parts
    store.outage.failures_left = 4
    projections.outage.failures_left = 4
    outcome = await service(parts, max_attempts=1).handle_batch(
        [record(event_body(), offset=index) for index in range(5)]
    )
    assert (outcome.stored, outcome.dead_lettered) == (5, 0)
    assert letters.letters == []


async def test_a_timed_out_call_is_halved_never_resent_whole() -> None:
    seen: list[int] = []

    async def slow_when_big(items: Sequence[int]) -> list[int]:
        seen.append(len(items))
        if len(items) > 25:
            raise TimedOutError("deadline passed")
        return list(items)

    results = await in_bounded_calls(
        list(range(250)),
        slow_when_big,
        limits=WriteLimits(chunk=100, max_backoff_s=0.001),
        slots=asyncio.Semaphore(1),
        what="test",
    )
    assert sorted(item for part in results for item in part) == list(range(250))
    assert all(len(part) <= 25 for part in results)
    assert seen.count(100) == 2  # each full chunk tried once, then only smaller pieces
    assert [part[0] for part in results] == sorted(part[0] for part in results)  # in order


async def test_at_most_the_configured_calls_are_in_flight() -> None:
    in_flight = peak = 0

    async def tracked(items: Sequence[int]) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1

    await in_bounded_calls(
        list(range(1000)),
        tracked,
        limits=WriteLimits(chunk=10, max_backoff_s=0.01),
        slots=asyncio.Semaphore(3),
        what="test",
    )
    assert peak == 3


async def test_a_session_records_at_most_the_cap_of_gpu_models(parts: Parts) -> None:
    _, projections, letters = parts
    bodies = [
        event_body(
            session_id="bloat",
            gpus=[gpu_sample(i, name=f"model-{report}-{i}") for i in range(64)],
        )
        for report in range(5)
    ]
    worker = service(parts)
    for offset, body in enumerate(bodies):  # one batch per report: the cap holds across writes
        await worker.handle_batch([record(body, offset=offset)])
    view = await projections.session("bloat", tenant=None)
    assert view is not None
    assert len(view.gpu_models) == SESSION_MAX_GPU_MODELS
    assert view.gpu_models_dropped == 4 * 64
    assert view.sample_count == 5
    assert letters.letters == []


async def test_an_integer_past_the_digit_limit_is_a_dead_letter_not_a_crash(
    parts: Parts,
) -> None:
    _, _, letters = parts
    body = json.dumps(event_body()).replace(
        '"memory_total_mib": 15360.0', '"memory_total_mib": ' + "9" * 5000
    )
    outcome = await service(parts).handle_batch([record(body.encode(), offset=0)])
    assert outcome.dead_lettered == 1
    assert letters.letters[0].error_class == "invalid_json"


@pytest.mark.parametrize(
    ("error", "expected", "error_class"),
    [
        (DocumentTooLarge("BSON document too large (17 MiB)"), RejectedError, "document_too_large"),
        (InvalidDocument("cannot encode object"), RejectedError, "invalid_document"),
        (
            OverflowError("MongoDB can only handle up to 8-byte ints"),
            RejectedError,
            "invalid_document",
        ),
        (OperationFailure("bad value", code=2), RejectedError, "database_rejected"),
        (
            OperationFailure("object to insert too large", code=10334),
            RejectedError,
            "document_too_large",
        ),
        (
            BulkWriteError({"writeErrors": [{"index": 0, "code": 17419, "errmsg": "too big"}]}),
            RejectedError,
            "document_too_large",
        ),
        (OperationFailure("shutting down", code=91), UnavailableError, None),
        # The worker's credentials or rights, not the data: every event would fail alike.
        (OperationFailure("Authentication failed.", code=18), UnavailableError, None),
        (
            OperationFailure("not authorized on ca4 to execute command", code=13),
            UnavailableError,
            None,
        ),
        (
            BulkWriteError({"writeErrors": [{"index": 0, "code": 13, "errmsg": "unauthorized"}]}),
            UnavailableError,
            None,
        ),
        (OperationFailure("Feature not supported", code=115), UnavailableError, None),
        # DocumentDB's "Feature not supported": the deployment's, not the data's.
        (OperationFailure("Feature not supported: $foo", code=303), UnavailableError, None),
        # Another index build on the collection (DocumentDB; MongoDB): wait it out.
        (
            OperationFailure("Existing index build in progress on the same collection", 40333),
            UnavailableError,
            None,
        ),
        (OperationFailure("Index build already in progress", code=276), UnavailableError, None),
        # killOp or a stepdown interrupted the call: the same call may succeed next time.
        (OperationFailure("operation was interrupted", code=11601), UnavailableError, None),
        (
            OperationFailure("retry me", code=1, details={"errorLabels": ["RetryableWriteError"]}),
            UnavailableError,
            None,
        ),
        (WriteConcernError("w timeout", code=64), UnavailableError, None),
        (AutoReconnect("connection reset"), UnavailableError, None),
        (NetworkTimeout("timed out"), TimedOutError, None),
        (OperationFailure("operation exceeded time limit", code=50), TimedOutError, None),
    ],
)
def test_driver_errors_are_sorted_by_cause(
    error: Exception, expected: type[Exception], error_class: str | None
) -> None:
    classified = classify_driver_error(error)
    assert type(classified) is expected
    if error_class is not None:
        assert isinstance(classified, RejectedError)
        assert classified.error_class == error_class


@pytest.mark.parametrize(
    "error",
    [
        OverflowError("date value out of range"),
        ValueError("bad"),
        KeyError("gpu"),
        RecursionError("maximum recursion depth exceeded"),
    ],
)
async def test_an_error_of_the_data_itself_is_poison_at_once(
    parts: Parts, error: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A projection fold that fails on one event's values fails the same way on every try:
    # retried with backoff at every halving level, one such event held a round of 5,000
    # other events (every tenant's) about 40 s.
    _, projections, letters = parts
    bodies = [event_body(session_id=f"s{index}") for index in range(4)]
    calls = 0
    sleeps: list[float] = []

    async def no_sleep(delay: float) -> None:
        if delay:  # a backoff; sleep(0) is the event loop's turn-taking
            sleeps.append(delay)

    async def failing_on_the_first(events: Sequence[PositionedEvent]) -> None:
        nonlocal calls
        calls += 1
        if any(item.event_id == bodies[0]["event_id"] for item in events):
            raise error
        await InMemoryProjections.apply(projections, events)

    projections.apply = failing_on_the_first  # type: ignore[method-assign]
    monkeypatch.setattr("ca4_worker.application.poison.asyncio.sleep", no_sleep)
    outcome = await service(parts, max_attempts=5).handle_batch(batch_of(bodies))
    assert (outcome.stored, outcome.dead_lettered) == (4, 1)
    assert [letter.error_class for letter in letters.letters] == ["projection_unexpected_error"]
    assert type(error).__name__ in letters.letters[0].error_message
    # one try per halving level: the whole, both halves, both quarters of the poisoned half
    assert (calls, sleeps) == (5, [])
