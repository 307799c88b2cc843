"""``ca4 dlq``, ``ca4 replay`` and ``ca4 rewind``: operator commands for dead letters,
projection rebuilds and handling again what the topic holds.

Registered on the root ``ca4`` command by ``ca4_provision.cli``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ca4_worker.application.replay import (
    AlreadyDeadLettered,
    ReplayOutcome,
    archive_keys,
    replay_from_archive,
    replay_from_store,
)
from ca4_worker.bootstrap import bootstrap, store_stage
from ca4_worker.cli_support import (
    OperatorError,
    as_written,
    confirm_destructive,
    database_endpoint,
    kafka_endpoint,
    reaching,
)
from ca4_worker.core.config import Settings, get_settings
from ca4_worker.messaging.dlq_tools import (
    DEFAULT_LIMIT,
    LetterFilter,
    StoredDeadLetter,
    destination,
    iter_dead_letters,
    read_dead_letter,
    read_dead_letters,
    redrive,
)
from ca4_worker.messaging.groups import LiveConsumersError, ensure_group_idle, rewind_groups
from ca4_worker.persistence.redrives import MongoRedriveLog, Redrive, redrive_key

console = Console()
dlq_app = typer.Typer(help="Inspect and re-drive dead letters.", no_args_is_help=True)

ErrorClassOption = Annotated[
    str | None, typer.Option("--error-class", "-e", help="Only letters of this error class.")
]
TenantOption = Annotated[
    str | None,
    typer.Option(
        "--tenant", "-t", help="Only letters of this tenant ('' for letters of no tenant)."
    ),
]
YesOption = Annotated[
    bool,
    typer.Option(
        "--yes", "-y", help="Do not ask first (a script, with no terminal, must pass it)."
    ),
]
LimitOption = Annotated[
    int,
    typer.Option(
        "--limit",
        "-n",
        min=1,
        help="At most this many letters, oldest first (partition by partition, by offset).",
    ),
]


def _letters(
    settings: Settings, wanted: LetterFilter, limit: int = DEFAULT_LIMIT
) -> list[StoredDeadLetter]:
    with reaching(kafka_endpoint(settings), settings):
        return asyncio.run(
            read_dead_letters(
                settings.kafka_bootstrap_servers,
                settings.kafka_dlq_topic,
                error_class=wanted.error_class,
                tenant=wanted.tenant,
                limit=limit,
                timeout_s=settings.operator_kafka_timeout_s,
            )
        )


def _key(settings: Settings, letter: StoredDeadLetter) -> str:
    return redrive_key(settings.kafka_dlq_topic, letter.partition, letter.offset)


@asynccontextmanager
async def _redrive_log(settings: Settings) -> AsyncIterator[MongoRedriveLog]:
    async with bootstrap(settings, dead_letters=False, archive=False, patient=False) as adapters:
        yield adapters.redrives


async def _past_redrives(settings: Settings, letters: list[StoredDeadLetter]) -> dict[str, Redrive]:
    with reaching(database_endpoint(settings), settings):
        async with _redrive_log(settings) as redrives:
            return await redrives.find([_key(settings, letter) for letter in letters])


async def _redrive_and_record(
    settings: Settings, letters: list[StoredDeadLetter], target_topic: str | None
) -> int:
    """Publish first, then record: a crash between re-drives once more, never loses one."""
    targets = {_key(settings, letter): destination(letter, target_topic) for letter in letters}
    with reaching(kafka_endpoint(settings), settings):
        count = await redrive(
            settings.kafka_bootstrap_servers,
            letters,
            target_topic=target_topic,
            timeout_s=settings.operator_kafka_timeout_s,
        )
    with reaching(database_endpoint(settings), settings):
        async with _redrive_log(settings) as redrives:
            await redrives.record(targets, at=datetime.now(UTC))
    return count


def _redrive_column(redrive: Redrive | None) -> str:
    if redrive is None:
        return ""
    when = redrive.redriven_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{when} (x{redrive.times})"


@dlq_app.command("list")
def list_dead_letters(
    error_class: ErrorClassOption = None,
    tenant: TenantOption = None,
    limit: LimitOption = DEFAULT_LIMIT,
) -> None:
    """List dead letters, oldest first, with their error class, tenant and source position.

    At most ``--limit`` letters are read: narrow with ``--error-class`` and ``--tenant``.
    """
    settings = get_settings()
    letters = _letters(settings, LetterFilter(error_class, tenant), limit)
    try:
        redrives = asyncio.run(_past_redrives(settings, letters))
    except OperatorError as error:
        console.print(
            Text.assemble(
                "Re-drive records unavailable (",
                as_written(str(error)),
                "); listing without them.",
                style="yellow",
            )
        )
        redrives = {}
    table = Table(title=f"{settings.kafka_dlq_topic}: {len(letters)} dead letters")
    columns = ("ref", "error class", "tenant", "source", "event id", "error", "re-driven (UTC)")
    for column in columns:
        table.add_column(column)
    for letter in letters:
        # Header values are text a dead letter carries, never Rich markup to render.
        table.add_row(
            *map(
                as_written,
                (
                    letter.ref,
                    letter.error_class,
                    letter.tenant,
                    letter.source,
                    letter.event_id,
                    letter.error_message[:80],
                ),
            ),
            _redrive_column(redrives.get(_key(settings, letter))),
        )
    console.print(table)
    counts: dict[str, int] = {}
    for letter in letters:
        counts[letter.error_class] = counts.get(letter.error_class, 0) + 1
    for name, count in sorted(counts.items()):
        console.print(Text.assemble(as_written(name), f": {count}"))
    if len(letters) >= limit:
        console.print(f"Stopped at --limit {limit}: there may be more.")


@dlq_app.command("show")
def show_dead_letter(
    ref: Annotated[str, typer.Argument(help="partition:offset on the dead-letter topic")],
) -> None:
    """Show one dead letter: headers and the original bytes (read from its offset alone)."""
    settings = get_settings()
    partition, _, offset = ref.partition(":")
    if not (partition.isdigit() and offset.isdigit()):
        raise typer.BadParameter(f"{ref!r} is not partition:offset", param_hint="REF")
    with reaching(kafka_endpoint(settings), settings):
        letter = asyncio.run(
            read_dead_letter(
                settings.kafka_bootstrap_servers,
                settings.kafka_dlq_topic,
                int(partition),
                int(offset),
                timeout_s=settings.operator_kafka_timeout_s,
            )
        )
    if letter is None:
        console.print(f"[red]No dead letter at {ref}[/red]")
        raise typer.Exit(code=1)
    for name, value in letter.headers:
        console.print(
            Text.assemble(
                as_written(name, style="bold"), ": ", as_written(value.decode("utf-8", "replace"))
            )
        )
    console.print("[bold]body[/bold]:")
    console.print(
        as_written((letter.value or b"").decode("utf-8", "backslashreplace"), lines=True),
        highlight=False,
    )


def _unreadable_records(error: OperatorError) -> OperatorError:
    return OperatorError(f"Nothing re-driven: cannot read the re-drive records ({error})")


async def _pending_letters(
    settings: Settings, wanted: LetterFilter, *, limit: int, again: bool
) -> tuple[list[StoredDeadLetter], int]:
    """Up to ``limit`` letters ``wanted`` that were not re-driven before (any with ``again``),
    oldest first, and how many re-driven before were skipped on the way.

    Letters are read in chunks of the room left, each checked against the re-drive records,
    so no more than ``limit`` letters' values are held, however many were re-driven before.
    """
    pending: list[StoredDeadLetter] = []
    skipped = 0
    async with AsyncExitStack() as stack:
        redrives = None  # opened at the first letter: Kafka's errors come first, as for list

        async def keep_pending(chunk: list[StoredDeadLetter]) -> None:
            nonlocal skipped, redrives
            past: dict[str, Redrive] = {}
            if not again:
                try:
                    with reaching(database_endpoint(settings), settings):
                        if redrives is None:
                            redrives = await stack.enter_async_context(_redrive_log(settings))
                        past = await redrives.find([_key(settings, item) for item in chunk])
                except OperatorError as error:
                    raise _unreadable_records(error) from error
            fresh = [item for item in chunk if _key(settings, item) not in past]
            pending.extend(fresh)
            skipped += len(chunk) - len(fresh)
            chunk.clear()

        chunk: list[StoredDeadLetter] = []
        with reaching(kafka_endpoint(settings), settings):
            found = iter_dead_letters(
                settings.kafka_bootstrap_servers,
                settings.kafka_dlq_topic,
                wanted=wanted,
                timeout_s=settings.operator_kafka_timeout_s,
            )
            async with aclosing(found):
                async for letter in found:
                    chunk.append(letter)
                    if len(pending) + len(chunk) >= limit:
                        await keep_pending(chunk)
                        if len(pending) >= limit:
                            break
        await keep_pending(chunk)
    return pending, skipped


@dlq_app.command("redrive")
def redrive_dead_letters(
    *,
    error_class: ErrorClassOption = None,
    tenant: TenantOption = None,
    limit: LimitOption = DEFAULT_LIMIT,
    topic: Annotated[
        str | None, typer.Option(help="Publish here instead of each letter's source topic.")
    ] = None,
    again: Annotated[
        bool, typer.Option("--again", help="Also re-drive letters that were re-driven before.")
    ] = False,
    yes: YesOption = False,
) -> None:
    """Re-inject dead letters into their source topic once the cause is fixed.

    Each letter is re-driven once: those re-driven before are skipped unless ``--again``. At
    most ``--limit`` letters per run, oldest first; run it again for the next ones.
    """
    settings = get_settings()
    pending, skipped = asyncio.run(
        _pending_letters(settings, LetterFilter(error_class, tenant), limit=limit, again=again)
    )
    skipped_note = (
        f" {skipped} re-driven before were skipped (--again repeats them)." if skipped else ""
    )
    if not pending:
        console.print(f"Nothing to re-drive.{skipped_note}")
        return
    if len(pending) >= limit:
        skipped_note += f" Stopped at --limit {limit}: run it again for the next letters."
    confirm_destructive(f"Re-drive {len(pending)} dead letters?", yes=yes)
    count = asyncio.run(_redrive_and_record(settings, pending, topic))
    console.print(
        f"Re-drove {count} dead letters; the store deduplicates them by event id.{skipped_note}"
    )


class ReplaySource(StrEnum):
    """Where ``ca4 replay`` reads events from."""

    EVENTS = "events"
    S3 = "s3"


TIME_FORMATS = [
    "%Y-%m-%d",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%d %H:%M:%S%z",
]
"""What ``--since``/``--until`` accept: a date, a time, or a time with its UTC offset (or Z)."""
_TIME_HELP = "A time without an offset is UTC, e.g. 2026-11-30T09:00:00 or ...T10:00:00+01:00."


def as_utc(moment: datetime | None) -> datetime | None:
    """``moment`` in UTC, reading a naive time as UTC (never as this machine's local time)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        # Only on a terminal, and gone when the replay ends: the summary or one error line stays.
        transient=True,
        disable=not console.is_terminal,
    )


async def _replay(
    *,
    settings: Settings,
    source: ReplaySource,
    since: datetime | None,
    until: datetime | None,
    rebuild: bool,
    store_events: bool,
    advance: Callable[[int, int | None], None],
) -> ReplayOutcome:
    if rebuild or store_events:
        # A session's projection applies its events in position order: a worker applying new
        # events meanwhile would move the position guards past the history not yet reached,
        # and those events would be skipped for good.
        if rebuild:
            risk = "a rebuild while workers store events would lose their projections"
            action = "rebuild"
            instead = "; or replay without --rebuild-projections, which is safe while they run"
        else:
            risk = "events the workers project first would make older archived ones be skipped"
            action, instead = "store the archived events", ""
        with reaching(kafka_endpoint(settings), settings):
            await ensure_group_idle(
                settings.kafka_bootstrap_servers,
                settings.kafka_store_group,
                settings.kafka_topic,
                risk=risk,
                action=action,
                instead=instead,
            )
    from_archive = source is ReplaySource.S3
    async with bootstrap(
        settings, dead_letters=False, archive=from_archive, claims=store_events, patient=False
    ) as adapters:
        if adapters.objects is None:
            advance(0, await adapters.store.count())
            return await replay_from_store(
                adapters.store,
                adapters.projections,
                since=since,
                until=until,
                rebuild=rebuild,
                batch_size=settings.projection_max_records,
                max_bytes=settings.projection_max_bytes,
                progress=lambda done: advance(done, None),
            )
        if store_events and since is not None and not await adapters.store.count():
            raise OperatorError(
                "--store-events with --since needs the event store to hold what came before "
                "(a point-in-time restore): this one is empty, and a session's first event in the "
                "window would decide its owner. Store everything the archive holds: leave out "
                "--since."
            )
        keys = await archive_keys(
            adapters.objects,
            prefix=settings.archive_prefix,
            topic=settings.kafka_topic,
            since=since,
            until=until,
        )
        advance(0, len(keys))
        return await replay_from_archive(
            adapters.objects,
            adapters.projections,
            prefix=settings.archive_prefix,
            topic=settings.kafka_topic,
            since=since,
            until=until,
            rebuild=rebuild,
            batch_size=settings.projection_max_records,
            max_bytes=settings.projection_max_bytes,
            progress=lambda done: advance(done, None),
            store_again=(
                store_stage(settings, adapters, dead_letters=AlreadyDeadLettered())
                if store_events
                else None
            ),
        )


def replay(  # noqa: PLR0917 - Typer passes each option by keyword
    source: Annotated[
        ReplaySource,
        typer.Option(help="Read from the event store (events) or the S3 archive (s3)."),
    ] = ReplaySource.EVENTS,
    since: Annotated[
        datetime | None,
        typer.Option(
            formats=TIME_FORMATS,
            metavar="TIME",
            help=f"Only events received at or after this time. {_TIME_HELP}",
        ),
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option(
            formats=TIME_FORMATS,
            metavar="TIME",
            help=f"Only events received before this time. {_TIME_HELP}",
        ),
    ] = None,
    rebuild_projections: Annotated[
        bool,
        typer.Option(
            "--rebuild-projections/--apply-only",
            help="Empty the projections first (else only fill what is missing); asks first.",
        ),
    ] = False,
    store_events: Annotated[
        bool,
        typer.Option(
            "--store-events",
            help=(
                "With --source s3: also store the archived events the event store lacks (after "
                "the database was lost), by the store stage's rules. Needs the consumers "
                "stopped; dead letters are not published again."
            ),
        ),
    ] = False,
    yes: YesOption = False,
) -> None:
    """Rebuild the session and GPU projections from the event store or the S3 archive, and
    the event store from the archive."""
    if store_events and source is not ReplaySource.S3:
        raise OperatorError("--store-events reads the archive: use it with --source s3.")
    if rebuild_projections and (since is not None or until is not None):
        # The rebuild empties every projection, so a window would leave only its own events:
        # sessions counting part of their reports and GPU time before it gone for good.
        raise OperatorError(
            "--rebuild-projections empties every projection (sessions, GPUs and usage) and "
            "rebuilds them from everything the source holds, so it takes no --since or --until. "
            "To fill what a window lacks, replay it with --apply-only."
        )
    if rebuild_projections:
        confirm_destructive(
            f"Empty the session, GPU and usage projections and rebuild them from {source.value}?",
            yes=yes,
        )
    settings = get_settings()
    unit = "events" if source is ReplaySource.EVENTS else "objects"
    with (
        reaching(database_endpoint(settings), settings),
        _progress() as progress,
    ):
        task = progress.add_task(f"replay from {source.value} ({unit})", total=None)

        def advance(done: int, total: int | None) -> None:
            if total is not None:
                progress.update(task, total=total)
            progress.advance(task, done)

        try:
            outcome = asyncio.run(
                _replay(
                    settings=settings,
                    source=source,
                    since=as_utc(since),
                    until=as_utc(until),
                    rebuild=rebuild_projections,
                    store_events=store_events,
                    advance=advance,
                )
            )
        except LiveConsumersError as error:
            raise OperatorError(f"Refused: {error}") from error
    stored = f"Stored {outcome.stored} events again. " if store_events else ""
    console.print(f"{stored}Applied {outcome.events} events ({outcome.skipped} skipped).")


def rewind(
    to: Annotated[
        datetime | None,
        typer.Option(
            formats=TIME_FORMATS,
            metavar="TIME",
            help=(
                "Handle again every record received at or after this time (a little before the "
                f"restored database's time). Without it, everything the topic holds. {_TIME_HELP}"
            ),
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would move; change nothing.")
    ] = False,
    yes: YesOption = False,
) -> None:
    """Move the store and projection groups back, so the (stopped) workers store and project
    again what the topic holds: after the database was restored to an earlier time, or lost."""
    # Events count once by id and the projections' position guards skip what is applied, so
    # nothing is stored or counted twice. Events older than the topic keeps are in the S3
    # archive, from which `ca4 replay --source s3` rebuilds the projections.
    settings = get_settings()
    groups = [settings.kafka_store_group, settings.kafka_project_group]
    since = (
        "the oldest record the topic holds" if to is None else f"{as_utc(to):%Y-%m-%d %H:%M:%S} UTC"
    )
    if not dry_run:
        confirm_destructive(
            f"Move consumer groups {' and '.join(groups)} of {settings.kafka_topic} back to "
            f"{since}?",
            yes=yes,
        )
    with reaching(kafka_endpoint(settings), settings):
        try:
            moved = asyncio.run(
                rewind_groups(
                    settings.kafka_bootstrap_servers,
                    settings.kafka_topic,
                    groups,
                    to=as_utc(to),
                    dry_run=dry_run,
                    timeout_s=settings.operator_kafka_timeout_s,
                )
            )
        except LiveConsumersError as error:
            raise OperatorError(f"Refused: {error}") from error
    if not moved:
        console.print(f"Nothing to move: every partition of both groups is at or before {since}.")
        return
    table = Table(title=f"{settings.kafka_topic}: {'would move' if dry_run else 'moved'} back")
    for column in ("group", "partition", "committed", "now"):
        table.add_column(column)
    for item in moved:
        table.add_row(
            item.group,
            str(item.partition),
            "-" if item.committed is None else str(item.committed),
            str(item.to),
        )
    console.print(table)
    if not dry_run:
        console.print("Start the workers: they store and project from there.")
