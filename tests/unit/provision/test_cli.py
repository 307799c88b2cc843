"""The ``ca4`` command as an operator meets it: one-line errors that name the endpoint and the
fix, deadlines on services that do not answer, ``--version``, validated choices, confirmation
before anything destructive, and times read as UTC.

"Down" services are a closed port on 127.0.0.1 (refused at once) or a socket that accepts and
never answers (a hung broker), with short deadlines so the tests stay fast.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from ca4_provision.cli import app
from ca4_worker import cli as worker_cli
from ca4_worker.application.replay import ReplayOutcome
from ca4_worker.core.config import get_settings
from typer.testing import CliRunner, Result

FIX = "start it with `uv run ca4 devstack up`"


def closed_port() -> int:
    """A loopback port nobody listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def hung_server() -> Iterator[int]:
    """A loopback port that accepts connections and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.fixture(autouse=True)
def operator_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fresh settings per test, short deadlines, nothing pointing at the shared dev stack."""
    monkeypatch.setenv("CA4_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{closed_port()}")
    monkeypatch.setenv("CA4_MONGO_URL", "mongodb://ca4-no-such-database.invalid:27017")
    monkeypatch.setenv("CA4_MONGO_TIMEOUT_MS", "300")
    monkeypatch.setenv("CA4_OPERATOR_KAFKA_TIMEOUT_S", "1")
    monkeypatch.delenv("CA4_DEBUG", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def ca4(*args: str, **kwargs: Any) -> Result:
    return CliRunner().invoke(app, list(args), **kwargs)


@pytest.mark.parametrize(
    "command",
    [("dlq", "list"), ("dlq", "show", "0:0"), ("dlq", "redrive", "--yes")],
    ids=" ".join,
)
def test_dlq_commands_name_the_kafka_they_cannot_reach_in_one_line(
    command: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    monkeypatch.setenv("CA4_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")

    result = ca4(*command)

    assert result.exit_code == 1
    assert result.output == (
        f"error: cannot reach Kafka at 127.0.0.1:{port}: {FIX} or set CA4_KAFKA_BOOTSTRAP_SERVERS\n"
    )


@pytest.mark.parametrize("args", [("--yes",), ("--dry-run",)], ids=" ".join)
def test_rewind_names_the_kafka_it_cannot_reach_in_one_line(
    args: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    monkeypatch.setenv("CA4_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")

    result = ca4("rewind", *args)

    assert result.exit_code == 1
    assert result.output == (
        f"error: cannot reach Kafka at 127.0.0.1:{port}: {FIX} or set CA4_KAFKA_BOOTSTRAP_SERVERS\n"
    )


def test_rewind_refuses_without_a_terminal_or_yes() -> None:
    result = ca4("rewind", "--to", "2026-11-30T09:00:00")

    assert result.exit_code == 1
    assert result.output == (
        "error: Move consumer groups ca4-store and ca4-project of gpu-metadata back to "
        "2026-11-30 09:00:00 UTC? Refusing without confirmation: stdin is not a terminal; pass "
        "--yes to go ahead.\n"
    )


def test_storing_events_again_needs_the_archive() -> None:
    result = ca4("replay", "--store-events")

    assert result.exit_code == 1
    assert result.output == "error: --store-events reads the archive: use it with --source s3.\n"


def test_a_kafka_that_never_answers_fails_at_the_deadline(
    hung_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CA4_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{hung_server}")
    started = time.monotonic()

    result = ca4("dlq", "list")

    assert time.monotonic() - started < 10
    assert result.exit_code == 1
    assert result.output.startswith(f"error: cannot reach Kafka at 127.0.0.1:{hung_server}: ")


def test_replay_names_the_database_it_cannot_reach_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CA4_MONGO_URL", "mongodb://ca4:s3cret@ca4-no-such-database.invalid:27017")

    result = ca4("replay")

    assert result.exit_code == 1
    assert result.output == (
        "error: cannot reach the database at mongodb://ca4-no-such-database.invalid:27017: "
        f"{FIX} or set CA4_MONGO_URL\n"
    )


@pytest.mark.parametrize(
    "command", [("rewind", "--dry-run"), ("dlq", "list"), ("usage",)], ids=" ".join
)
def test_invalid_settings_are_named_in_one_line_without_their_values(
    command: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prod URL exported on a laptop (its CA bundle is only in the pod) printed only
    `error: ValidationError: 1 validation error for Settings`."""
    monkeypatch.setenv(
        "CA4_MONGO_URL",
        "mongodb://ca4app:s3cret@docdb.invalid:27017/ca4?tls=true"
        "&tlsCAFile=/etc/ca4/db-ca/global-bundle.pem&replicaSet=rs0&retryWrites=false",
    )
    monkeypatch.setenv("CA4_MONGO_TIMEOUT_MS", "5")

    result = ca4(*command)

    assert result.exit_code == 1
    assert result.output == (
        "error: invalid settings: CA4_MONGO_URL: tlsCAFile=/etc/ca4/db-ca/global-bundle.pem does "
        "not exist: mount the database's CA bundle there (ca4-app chart: config.mongo.caBundle); "
        "CA4_MONGO_TIMEOUT_MS: Input should be greater than or equal to 100 "
        "(ca4 --debug shows the traceback)\n"
    )


def test_an_invalid_aliased_setting_is_named_by_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CA4_READ_MAX_IN_FLIGHT_PER_TENANT", "many")

    result = ca4("rewind", "--dry-run")

    assert result.output == (
        "error: invalid settings: CA4_READ_MAX_IN_FLIGHT_PER_TENANT: Input should be a valid "
        "integer, unable to parse string as an integer (ca4 --debug shows the traceback)\n"
    )
    assert "many" not in result.output


def test_an_invalid_setting_set_under_its_older_name_is_named_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator set only the name the new one replaces: told to fix the new name, they
    found it unset."""
    monkeypatch.setenv("CA4_READ_MAX_IN_FLIGHT_PER_KEY", "many")

    result = ca4("rewind", "--dry-run")

    assert result.output == (
        "error: invalid settings: CA4_READ_MAX_IN_FLIGHT_PER_KEY: Input should be a valid "
        "integer, unable to parse string as an integer (ca4 --debug shows the traceback)\n"
    )


def test_debug_shows_the_traceback_before_the_one_line_error() -> None:
    result = ca4("--debug", "dlq", "list")

    assert result.exit_code == 1
    assert result.output.startswith("Traceback (most recent call last):")
    assert "KafkaConnectionError" in result.output
    assert result.output.splitlines()[-1].startswith("error: cannot reach Kafka at 127.0.0.1:")


def test_version_prints_the_package_version() -> None:
    result = ca4("--version")

    assert result.exit_code == 0
    assert result.output == f"ca4 {version('ca4-provision')}\n"


def test_verify_is_one_command_with_options_not_a_group() -> None:
    result = ca4("verify", "--help")

    assert result.exit_code == 0
    assert re.search(r"Usage: ca4 verify \[OPTIONS\]\s*\n", result.output), result.output
    assert "COMMAND" not in result.output


@pytest.mark.parametrize(
    ("command", "choices"),
    [
        (("sdk", "probe", "--collector", "bogus"), "'nvml', 'nvidia-smi', 'none'"),
        (("replay", "--source", "bogus"), "'events', 's3'"),
        (("verify", "--target", "bogus"), "'local', 'k3s'"),
    ],
    ids=lambda value: value[0] if isinstance(value, tuple) else "",
)
def test_options_with_a_fixed_set_refuse_anything_else_and_list_the_choices(
    command: tuple[str, ...], choices: str
) -> None:
    result = ca4(*command)

    assert result.exit_code == 2
    assert "Invalid value for" in result.output
    assert f"'bogus' is not one of {choices}" in " ".join(result.output.split()).replace("│ ", "")


def test_rebuild_projections_refuses_without_a_terminal_or_yes() -> None:
    result = ca4("replay", "--rebuild-projections")

    assert result.exit_code == 1
    assert result.output == (
        "error: Empty the session, GPU and usage projections and rebuild them from events? "
        "Refusing without confirmation: stdin is not a terminal; pass --yes to go ahead.\n"
    )


def test_rebuild_projections_asks_on_a_terminal_and_no_stops_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("ca4_worker.cli_support.interactive", lambda: True)
    replays: list[dict[str, Any]] = []
    monkeypatch.setattr(worker_cli, "_replay", _recording(replays))

    result = ca4("replay", "--rebuild-projections", input="n\n")

    assert result.exit_code == 1
    assert "Empty the session, GPU and usage projections and rebuild them from events? [y/N]" in (
        " ".join(result.output.split())
    )
    assert "Aborted" in result.output
    assert replays == []


@pytest.mark.parametrize(
    "window",
    [
        ("--since", "2026-11-01"),
        ("--until", "2026-11-01"),
        ("--source", "s3", "--since", "2026-11-01"),
    ],
    ids=["since", "until", "s3-since"],
)
def test_a_rebuild_takes_no_window_since_it_would_drop_everything_outside_it(
    monkeypatch: pytest.MonkeyPatch, window: tuple[str, ...]
) -> None:
    replays: list[dict[str, Any]] = []
    monkeypatch.setattr(worker_cli, "_replay", _recording(replays))

    result = ca4("replay", "--rebuild-projections", *window, "--yes")

    assert result.exit_code == 1
    assert " ".join(result.output.split()) == (
        "error: --rebuild-projections empties every projection (sessions, GPUs and usage) and "
        "rebuilds them from everything the source holds, so it takes no --since or --until. "
        "To fill what a window lacks, replay it with --apply-only."
    )
    assert replays == []


def test_yes_skips_the_question(monkeypatch: pytest.MonkeyPatch) -> None:
    replays: list[dict[str, Any]] = []
    monkeypatch.setattr(worker_cli, "_replay", _recording(replays))

    result = ca4("replay", "--rebuild-projections", "--yes")

    assert result.exit_code == 0, result.output
    assert result.output == "Applied 0 events (0 skipped).\n"
    assert [call["rebuild"] for call in replays] == [True]


def test_devstack_purge_refuses_without_a_terminal_or_yes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CA4_DEVSTACK_HOME", str(tmp_path))
    (tmp_path / "data").mkdir()

    result = ca4("devstack", "down", "--purge")

    assert result.exit_code == 1
    assert result.output.startswith(
        f"error: Delete every dev stack service's data and logs in {tmp_path}? Refusing"
    )
    assert (tmp_path / "data").is_dir()


@pytest.fixture
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This machine's local time is UTC+9 for the test."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("tokyo")
@pytest.mark.parametrize(
    "since",
    [
        "2026-11-30T09:00:00",
        "2026-11-30 09:00:00",
        "2026-11-30T18:00:00+09:00",
        "2026-11-30T09:00:00Z",
    ],
)
def test_since_and_until_read_naive_times_as_utc_on_a_machine_in_another_zone(
    since: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    replays: list[dict[str, Any]] = []
    monkeypatch.setattr(worker_cli, "_replay", _recording(replays))

    result = ca4("replay", "--since", since, "--until", "2026-12-01")

    assert result.exit_code == 0, result.output
    assert replays[0]["since"] == datetime(2026, 11, 30, 9, tzinfo=UTC)
    assert replays[0]["until"] == datetime(2026, 12, 1, tzinfo=UTC)


def _recording(calls: list[dict[str, Any]]) -> Any:
    """A stand-in for the replay itself that records what the command asked for."""

    async def replay(**kwargs: Any) -> ReplayOutcome:
        calls.append(kwargs)
        return ReplayOutcome(events=0, skipped=0)

    return replay


def test_usage_names_the_database_it_cannot_reach_in_one_line() -> None:
    result = ca4("usage", "--json")

    assert result.exit_code == 1
    assert result.output == (
        "error: cannot reach the database at mongodb://ca4-no-such-database.invalid:27017: "
        f"{FIX} or set CA4_MONGO_URL\n"
    )


def test_usage_refuses_an_unknown_grouping() -> None:
    result = ca4("usage", "--group-by", "host")

    assert result.exit_code == 2
    assert "use label:<key>, gpu_model, runtime or tenant" in result.output


def test_logs_of_a_service_that_never_ran_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It said "no log files yet in <dir>" while the dir held the other services' logs.
    monkeypatch.setenv("CA4_DEVSTACK_HOME", str(tmp_path))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "kafka.log").write_text("started\n")

    result = ca4("devstack", "logs", "edge")

    assert result.exit_code == 1
    assert " ".join(result.output.split()) == (
        f"no log file of edge yet in {tmp_path / 'logs'}: it has not run in this state dir "
        "(`uv run ca4 devstack status` lists what runs)"
    )


def test_operator_commands_follow_a_dev_stack_moved_with_its_port_knobs() -> None:
    """`ca4 usage` read the default port's database (another checkout's stack) while `ca4 send`
    followed the moved edge. A subprocess: the command sets the environment it reads."""
    port = closed_port()
    env = {k: v for k, v in os.environ.items() if k != "CA4_MONGO_URL"}
    env["CA4_DEVSTACK_MONGO_PORT"] = str(port)
    ca4_command = Path(sys.executable).parent / "ca4"

    moved = subprocess.run(
        [str(ca4_command), "replay"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    explicit = subprocess.run(
        [str(ca4_command), "replay"],
        env={**env, "CA4_MONGO_URL": "mongodb://ca4-no-such-database.invalid:27017"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert moved.returncode == 1
    assert f"cannot reach the database at mongodb://127.0.0.1:{port}" in moved.stdout + moved.stderr
    assert "ca4-no-such-database.invalid" in explicit.stdout + explicit.stderr  # a setting wins
