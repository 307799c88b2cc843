"""``ca4 dlq``, ``ca4 replay`` and ``ca4 rewind`` against the real services, as an operator
runs them."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime

import pytest
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from ca4_provision.cli import app
from ca4_schemas.constants import (
    HEADER_ERROR_CLASS,
    HEADER_ERROR_MESSAGE,
    HEADER_SOURCE_TOPIC,
    HEADER_TENANT,
)
from ca4_worker.core.config import Settings, get_settings
from ca4_worker.messaging.groups import rewind_groups
from ca4_worker.persistence.documents import Doc
from ca4_worker.persistence.projections import MongoProjections
from ca4_worker.persistence.s3 import S3ObjectStore
from pymongo.asynchronous.database import AsyncDatabase
from typer.testing import CliRunner, Result

from tests.integration.worker.checks import archived_positions, projected_sample_total
from tests.integration.worker.support import produce, running_worker, wait_for
from tests.support.doc_commands import in_pod_python
from tests.support.kafka import read_topic
from tests.unit.worker.contracts import snapshot
from tests.unit.worker.factories import event_body, gpu_sample

pytestmark = [pytest.mark.kafka, pytest.mark.mongo, pytest.mark.s3]

IN_POD = pytest.mark.stand_in(
    "`kubectl exec` into a K3s worker pod: no cluster here; ran instead: the docs' in-pod "
    "`python -c` commands as written, by this workspace's Python, with the pod's CA4_* settings "
    "pointed at the dev stack"
)


async def ca4(runner: CliRunner, *args: str) -> Result:
    """Run ``ca4 ARGS`` in a thread (the CLI runs its own event loop)."""
    return await asyncio.to_thread(runner.invoke, app, list(args))


async def in_pod(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a doc's in-pod ``python -c`` command (``in_pod_python``) in the environment
    ``cli_env`` set, as the pod's ``CA4_*`` variables; stdout and stderr together."""
    return await asyncio.to_thread(
        subprocess.run,
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture
def cli_env(worker_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """A CLI runner whose ``CA4_*`` settings point at this test's topic, database, bucket."""
    secret = worker_settings.s3_secret_access_key
    for name, value in worker_settings.model_dump(exclude_none=True).items():
        text = secret.get_secret_value() if name == "s3_secret_access_key" and secret else value
        monkeypatch.setenv(f"CA4_{name.upper()}", str(text))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


async def test_dead_letters_are_listed_and_redriven_once(
    cli_env: CliRunner, worker_settings: Settings, database: AsyncDatabase[Doc]
) -> None:
    topic = worker_settings.kafka_topic
    bootstrap = worker_settings.kafka_bootstrap_servers
    good = event_body(session_id="redriven")
    # A good event dead-lettered earlier (say, by a buggy worker), and real poison.
    await produce(
        bootstrap,
        worker_settings.kafka_dlq_topic,
        [good],
        headers=[(HEADER_ERROR_CLASS, b"schema_invalid"), (HEADER_SOURCE_TOPIC, topic.encode())],
    )
    await produce(bootstrap, topic, [b"\xff\xfe not json"])
    async with running_worker(worker_settings.model_copy(update={"archive_enabled": False})):
        listed = await ca4(cli_env, "dlq", "list")
        assert listed.exit_code == 0, listed.output

        async def poison_dead_lettered() -> bool:
            output = (await ca4(cli_env, "dlq", "list")).output
            return "invalid_json: 1" in output

        await wait_for(poison_dead_lettered, timeout_s=30, what="poison in the DLQ")
        output = (await ca4(cli_env, "dlq", "list")).output
        assert "schema_invalid: 1" in output
        shown = await ca4(cli_env, "dlq", "show", "0:0")
        assert shown.exit_code == 0
        assert "redriven" in shown.output

        # In a script (no terminal, no --yes) it asks nothing and changes nothing.
        unconfirmed = await ca4(cli_env, "dlq", "redrive", "--error-class", "schema_invalid")
        assert unconfirmed.exit_code == 1
        assert "Refusing without confirmation: stdin is not a terminal; pass --yes" in (
            unconfirmed.output
        )
        redrive = ("dlq", "redrive", "--error-class", "schema_invalid", "--yes")
        first = await ca4(cli_env, *redrive)
        assert first.exit_code == 0, first.output
        assert "Re-drove 1 dead letters" in first.output
        # Each letter is re-driven once, and the list says when.
        second = await ca4(cli_env, *redrive)
        assert second.exit_code == 0, second.output
        assert "Nothing to re-drive. 1 re-driven before were skipped" in second.output
        listed = (await ca4(cli_env, "dlq", "list", "--error-class", "schema_invalid")).output
        assert "(x1)" in listed
        # Asked again, it re-drives again, and the store still keeps the event once.
        again = await ca4(cli_env, *redrive, "--again")
        assert again.exit_code == 0, again.output
        assert "Re-drove 1 dead letters" in again.output
        listed = (await ca4(cli_env, "dlq", "list", "--error-class", "schema_invalid")).output
        assert "(x2)" in listed
        redrives = await database["dead_letter_redrives"].find({}).to_list()
        assert [(doc["target_topic"], doc["times"]) for doc in redrives] == [(topic, 2)]

        async def stored_once() -> bool:
            return await projected_sample_total(database) == 1

        await wait_for(stored_once, timeout_s=30, what="re-driven event projected")
        live = await snapshot(MongoProjections(database))

    assert await database["events"].count_documents({}) == 1
    replayed = await ca4(cli_env, "replay", "--source", "events", "--rebuild-projections", "--yes")
    assert replayed.exit_code == 0, replayed.output
    assert "Applied 1 events" in replayed.output
    assert await snapshot(MongoProjections(database)) == live


@IN_POD
async def test_dlq_tools_read_at_most_the_limit_filter_by_tenant_and_show_by_seeking(
    cli_env: CliRunner, worker_settings: Settings
) -> None:
    topic = worker_settings.kafka_topic
    bootstrap = worker_settings.kafka_bootstrap_servers
    letters = [("acme", "bounded-a1"), ("mallory", "bounded-m1"), ("acme", "bounded-a2")]
    letters += [("mallory", "bounded-m2"), ("acme", "bounded-a3")]
    for tenant, session in letters:
        await produce(
            bootstrap,
            worker_settings.kafka_dlq_topic,
            [event_body(session_id=session, tenant=tenant)],
            headers=[
                (HEADER_ERROR_CLASS, b"event_id_conflict"),
                (HEADER_SOURCE_TOPIC, topic.encode()),
                (HEADER_TENANT, tenant.encode()),
            ],
        )

    listed = await ca4(cli_env, "dlq", "list", "--tenant", "acme", "--limit", "2")
    assert listed.exit_code == 0, listed.output
    assert "event_id_conflict: 2" in listed.output
    assert "Stopped at --limit 2: there may be more." in listed.output
    assert "acme" in listed.output
    assert "mallory" not in listed.output
    # observability/runbooks.md's command for a worker pod, for this class and tenant.
    runbook = in_pod_python("observability/runbooks.md", "dlq_app()' list -e CLASS --tenant T")
    runbook = [{"CLASS": "event_id_conflict", "T": "acme"}.get(arg, arg) for arg in runbook]
    in_pod_listed = await in_pod(runbook)
    assert in_pod_listed.returncode == 0, in_pod_listed.stdout
    assert "event_id_conflict: 3" in in_pod_listed.stdout
    assert "mallory" not in in_pod_listed.stdout
    shown = await ca4(cli_env, "dlq", "show", "0:3")
    assert shown.exit_code == 0, shown.output
    assert "bounded-m2" in shown.output
    assert "ca4-tenant: mallory" in shown.output
    missing = await ca4(cli_env, "dlq", "show", "0:99")
    assert missing.exit_code == 1
    assert "No dead letter at 0:99" in missing.output

    redrive = ("dlq", "redrive", "--tenant", "acme", "--limit", "2", "--yes")
    first = await ca4(cli_env, *redrive)
    assert first.exit_code == 0, first.output
    said = " ".join(first.output.split())  # however rich wraps it
    assert "Re-drove 2 dead letters" in said
    assert "Stopped at --limit 2" in said
    second = await ca4(cli_env, *redrive)
    assert second.exit_code == 0, second.output
    said = " ".join(second.output.split())
    assert "Re-drove 1 dead letters" in said
    assert "2 re-driven before were skipped" in said
    redriven = await read_topic(bootstrap, topic)
    assert sorted(record.key for record in redriven) == [
        b"bounded-a1",
        b"bounded-a2",
        b"bounded-a3",
    ]
    assert {dict(record.headers)[HEADER_TENANT] for record in redriven} == {b"acme"}


async def test_dlq_tools_show_header_text_as_written_never_as_markup(
    cli_env: CliRunner, worker_settings: Settings
) -> None:
    """A dead letter's headers are text, shown as written: Rich markup is not rendered (a
    ``[link=...]`` or ``[/]`` there would restyle or break the operator's table), nor emoji
    codes, and a terminal escape sequence reaches the screen as ``\\x1b``."""
    message = "[bold red]not markup[/bold red] [link=https://evil.example]here[/link] :x: end\\"
    await produce(
        worker_settings.kafka_bootstrap_servers,
        worker_settings.kafka_dlq_topic,
        [event_body(session_id="markup")],
        headers=[
            (HEADER_ERROR_CLASS, b"schema_[i]invalid"),
            (HEADER_ERROR_MESSAGE, message.encode()),
            (HEADER_SOURCE_TOPIC, worker_settings.kafka_topic.encode()),
            (HEADER_TENANT, b"\x1b]0;pwned\x07acme"),
        ],
    )

    listed = await ca4(cli_env, "dlq", "list")
    shown = await ca4(cli_env, "dlq", "show", "0:0")

    assert listed.exit_code == 0, listed.output
    assert "schema_[i]invalid: 1" in listed.output
    assert "[link=ht" in listed.output  # rendered, it would be gone (the cell wraps and crops)
    assert shown.exit_code == 0, shown.output
    assert f"ca4-error-message: {message}" in " ".join(shown.output.split())  # however wrapped
    assert "ca4-error-class: schema_[i]invalid" in shown.output
    assert "ca4-tenant: \\x1b]0;pwned\\x07acme" in shown.output
    assert "\x1b" not in listed.output + shown.output


async def test_redrive_refuses_when_it_cannot_read_its_records(
    cli_env: CliRunner, worker_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = worker_settings.kafka_topic
    bootstrap = worker_settings.kafka_bootstrap_servers
    await produce(
        bootstrap,
        worker_settings.kafka_dlq_topic,
        [event_body(session_id="not-redriven")],
        headers=[(HEADER_ERROR_CLASS, b"schema_invalid"), (HEADER_SOURCE_TOPIC, topic.encode())],
    )
    # A database that cannot be reached. (A refused or hung-up connection would do too, but
    # pymongo's async client then leaves a socket for the garbage collector to warn about.)
    monkeypatch.setenv("CA4_MONGO_URL", "mongodb://ca4-no-such-database.invalid:27017")
    monkeypatch.setenv("CA4_MONGO_TIMEOUT_MS", "500")
    get_settings.cache_clear()

    refused = await ca4(cli_env, "dlq", "redrive", "--yes")
    listed = await ca4(cli_env, "dlq", "list")  # listing still works, without the records

    assert refused.exit_code == 1
    assert "Nothing re-driven: cannot read the re-drive records" in refused.output
    assert await read_topic(bootstrap, topic) == []
    assert listed.exit_code == 0, listed.output
    assert "schema_invalid: 1" in listed.output


@IN_POD
async def test_a_rebuild_is_refused_while_workers_store_and_projections_stay_whole(
    cli_env: CliRunner, worker_settings: Settings, database: AsyncDatabase[Doc]
) -> None:
    bootstrap, topic = worker_settings.kafka_bootstrap_servers, worker_settings.kafka_topic
    events = [event_body(session_id=f"live-{index % 7}") for index in range(70)]
    async with running_worker(worker_settings.model_copy(update={"archive_enabled": False})):
        await produce(bootstrap, topic, events[:40])

        async def first_projected() -> bool:
            return await projected_sample_total(database) == 40

        await wait_for(first_projected, timeout_s=60, what="40 events projected")
        refused = await ca4(cli_env, "replay", "--rebuild-projections", "--yes")
        await produce(bootstrap, topic, events[40:])

        async def all_projected() -> bool:
            return await projected_sample_total(database) == 70

        await wait_for(all_projected, timeout_s=60, what="70 events projected")
        live = await snapshot(MongoProjections(database))

    assert refused.exit_code == 1, refused.output
    group = worker_settings.kafka_store_group
    assert f"Refused: consumer group {group} has 1 live member(s)" in refused.output
    assert "Stop the workers' consumers first" in " ".join(refused.output.split())
    assert (
        "CA4_CONSUMERS_ENABLED=false`, which keeps the pods for `kubectl exec`), rebuild, then"
        in (" ".join(refused.output.split()))
    )
    # The live projections equal a rebuild from scratch, made once the worker stopped.
    rebuilt = await ca4(cli_env, "replay", "--rebuild-projections", "--yes")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert await snapshot(MongoProjections(database)) == live
    # The README's rebuild in a worker pod (after the pre-tenancy upgrade), as written.
    in_pod_rebuilt = await in_pod(in_pod_python("README.md", "--rebuild-projections"))
    assert in_pod_rebuilt.returncode == 0, in_pod_rebuilt.stdout
    assert await snapshot(MongoProjections(database)) == live


async def test_a_lost_database_is_stored_and_projected_again_from_what_the_topic_holds(
    cli_env: CliRunner, worker_settings: Settings, database: AsyncDatabase[Doc]
) -> None:
    """The database lost (or restored to an earlier time): `ca4 rewind` moves both groups back
    and the restarted worker stores and projects the topic again, each event once, to the same
    read models; refused while the worker runs, and `--to` moves only what came after."""
    bootstrap, topic = worker_settings.kafka_bootstrap_servers, worker_settings.kafka_topic
    settings = worker_settings.model_copy(update={"archive_enabled": False})
    gpus = [gpu_sample(index) for index in range(4)]
    events = [event_body(session_id=f"restored-{index % 12}", gpus=gpus) for index in range(120)]
    async with running_worker(settings):
        await produce(bootstrap, topic, events[:60])
        await asyncio.sleep(1.5)  # records' timestamps: the second half is after `middle`
        middle = datetime.now(UTC)
        await asyncio.sleep(0.5)
        await produce(bootstrap, topic, events[60:])

        async def all_projected() -> bool:
            return await projected_sample_total(database) == 120

        await wait_for(all_projected, timeout_s=90, what="120 events projected")
        refused = await ca4(cli_env, "rewind", "--yes")
        previewed = await ca4(cli_env, "rewind", "--dry-run")  # a preview needs no stop
        before = await snapshot(MongoProjections(database))
    assert refused.exit_code == 1, refused.output
    assert "Refused: consumer group" in refused.output
    assert "its workers would commit over the offsets a rewind sets" in refused.output

    assert previewed.exit_code == 0, previewed.output
    assert "would move back" in previewed.output

    groups = [settings.kafka_store_group, settings.kafka_project_group]
    # A group with no committed offset starts at the oldest record: nothing to move it to.
    assert await rewind_groups(bootstrap, topic, [f"{topic}-never-used"], to=middle) == []
    after_middle = await rewind_groups(bootstrap, topic, groups, to=middle, dry_run=True)
    assert {item.group for item in after_middle} == set(groups)
    for group in groups:
        moved = [item for item in after_middle if item.group == group]
        assert sum((item.committed or 0) - item.to for item in moved) == 60, group

    await database.client.drop_database(database.name)  # the database is lost
    rewound = await ca4(cli_env, "rewind", "--yes")
    assert rewound.exit_code == 0, rewound.output
    assert "moved back" in rewound.output
    again = await ca4(cli_env, "rewind", "--to", middle.isoformat(timespec="seconds"), "--yes")
    assert again.exit_code == 0, again.output
    assert "Nothing to move" in again.output, "a rewind never moves a group forward"

    async with running_worker(settings):
        await wait_for(all_projected, timeout_s=90, what="120 events projected again")
        # What is applied is skipped, what is stored counts once: a moment more changes nothing.
        await asyncio.sleep(1)
        assert await database["events"].count_documents({}) == 120
        assert await snapshot(MongoProjections(database)) == before


@IN_POD
async def test_the_guides_restore_brings_back_sessions_older_than_the_topic_holds(
    cli_env: CliRunner,
    worker_settings: Settings,
    database: AsyncDatabase[Doc],
    bucket: S3ObjectStore,
) -> None:
    """docs/provisioning.md, "The database lost or restored", after an empty database: rewind,
    replay the archive with the consumers stopped, storing its events, start them. Sessions
    that began before the topic's retention come back whole in the read models and the event
    store (the archive holds their start, the topic the rest), claimed for their owner."""
    bootstrap, topic = worker_settings.kafka_bootstrap_servers, worker_settings.kafka_topic
    gpus = [gpu_sample(index) for index in range(4)]
    old = [event_body(session_id=f"long-{index % 6}", gpus=gpus) for index in range(60)]
    new = [event_body(session_id=f"long-{index % 6}", gpus=gpus) for index in range(60)]

    async def projected(count: int) -> Callable[[], Awaitable[bool]]:
        async def done() -> bool:
            return await projected_sample_total(database) == count

        return done

    async def archived() -> bool:
        return sum((await archived_positions(bucket, topic)).values()) >= 60

    async with running_worker(worker_settings):
        await produce(bootstrap, topic, old)
        await wait_for(await projected(60), timeout_s=60, what="the old events projected")
        await wait_for(archived, timeout_s=60, what="the old events archived")
    # Retention deletes the old records from the topic (the archive keeps them).
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        ends = await admin.list_consumer_group_offsets(worker_settings.kafka_store_group)
        await admin.delete_records(
            {partition: RecordsToDelete(meta.offset) for partition, meta in ends.items()}
        )
    finally:
        await admin.close()
    async with running_worker(worker_settings):
        await produce(bootstrap, topic, new)
        await wait_for(await projected(120), timeout_s=60, what="the new events projected")
        before = await snapshot(MongoProjections(database))

    await database.client.drop_database(database.name)  # the database is lost
    rewound = await ca4(cli_env, "rewind", "--yes")
    # The guide's step, as written for a worker pod.
    replayed = await in_pod(in_pod_python("docs/provisioning.md", "--source s3 --store-events"))
    assert rewound.exit_code == 0, rewound.output
    assert replayed.returncode == 0, replayed.stdout
    # The archive holds the old events and as many new ones as it archived before the stop.
    said = " ".join(replayed.stdout.split())
    restored = re.search(r"Stored (\d+) events again\. Applied \1 events \(0 skipped\)\.", said)
    assert restored is not None, replayed.stdout
    assert 60 <= int(restored[1]) <= 120
    async with running_worker(worker_settings):
        await wait_for(await projected(120), timeout_s=60, what="every event projected again")
        await asyncio.sleep(1)
        assert await snapshot(MongoProjections(database)) == before
        assert await database["events"].count_documents({}) == 120
    claims = {doc["_id"]: doc["tenant"] async for doc in database["session_owners"].find({})}
    assert claims == {f"long-{index}": "tenant-a" for index in range(6)}


async def test_storing_events_again_from_a_time_needs_what_came_before(
    cli_env: CliRunner, bucket: S3ObjectStore
) -> None:
    """On an empty event store the first event of a session in the window would decide its
    owner, though an earlier one outside it (another tenant's) did when it was stored: a second
    read found `--store-events --since` gave a session to the tenant whose report had been
    dead-lettered."""
    refused = await ca4(
        cli_env, "replay", "--source", "s3", "--store-events", "--since", "2026-11-01"
    )
    assert refused.exit_code == 1
    assert refused.output.splitlines()[-1].startswith(
        "error: --store-events with --since needs the event store to hold what came before"
    )
