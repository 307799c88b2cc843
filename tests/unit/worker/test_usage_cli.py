"""``ca4 usage`` as an operator meets it: one tenant's usage (``--tenant``), the API's cap on
groups with its ``(other)`` rows and a truncation line, and a deadline with a message that says
what to do. The records are the in-memory fakes, behind the command's ``usage_records`` seam."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from ca4_provision.cli import app
from ca4_worker import usage_cli
from ca4_worker.application.usage import UsageRecords
from ca4_worker.core.config import Settings, get_settings
from ca4_worker.domain.usage import GpuUsage, UsageDay
from typer.testing import CliRunner, Result

from tests.unit.worker.factories import TENANT_A, TENANT_B
from tests.unit.worker.usage_scenario import (
    START,
    TENANT_EVIL,
    RecordingRecords,
    day_record,
)

"""A tenant with more day records than a report reads within its deadline."""
WINDOW = [
    "--from",
    START.date().isoformat(),
    "--to",
    (START.date() + timedelta(days=1)).isoformat(),
]
LONG = "\N{GRINNING FACE}" * 118
"""Most of a 128-character GPU name, as the review's reports sent."""


def _many_models(tenant: str, sessions: int, gpus: int) -> list[UsageDay]:
    """``sessions`` day records of ``gpus`` GPUs each, every GPU of a model of its own."""
    return [
        UsageDay(
            session_id=f"{tenant}-s{session}",
            day=START.date(),
            tenant=tenant,
            labels={"project": "p"},
            runtime="colab",
            gpus={
                (f"GPU-{session}-{gpu}", 0): GpuUsage(
                    f"GPU-{session}-{gpu}",
                    f"{LONG}{session:06d}-{gpu:03d}",
                    held_ms=60_000 * (gpu + 1),
                )
                for gpu in range(gpus)
            },
        )
        for session in range(sessions)
    ]


@pytest.fixture(autouse=True)
def operator_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fresh settings per test, nothing pointing at the shared dev stack."""
    monkeypatch.setenv("CA4_MONGO_URL", "mongodb://ca4-no-such-database.invalid:27017")
    monkeypatch.delenv("CA4_DEBUG", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def stored(monkeypatch: pytest.MonkeyPatch) -> RecordingRecords:
    """The records ``ca4 usage`` reads (instead of the database's)."""
    records = RecordingRecords()

    @asynccontextmanager
    async def in_memory(settings: Settings) -> AsyncIterator[UsageRecords]:
        yield records

    monkeypatch.setattr(usage_cli, "usage_records", in_memory)
    return records


def ca4(*args: str) -> Result:
    return CliRunner().invoke(app, ["usage", *WINDOW, *args])


def test_tenant_reads_only_that_tenants_records_and_names_it(stored: RecordingRecords) -> None:
    stored.add(day_record(TENANT_A, "a1", "vision", 36), day_record(TENANT_B, "b1", "b-only", 72))

    as_json = ca4("--tenant", TENANT_A, "--json")
    as_csv = ca4("--tenant", TENANT_A, "--csv")
    shown = ca4("--tenant", TENANT_A)

    assert (as_json.exit_code, as_csv.exit_code, shown.exit_code) == (0, 0, 0), as_json.output
    body = json.loads(as_json.stdout)
    assert body["truncated"] is False
    assert [(row["tenant"], row["group"], row["held_seconds"]) for row in body["rows"]] == [
        (TENANT_A, "vision", 36.0)
    ]
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(row["tenant"], row["group"]) for row in rows] == [(TENANT_A, "vision")]
    assert "vision" in shown.stdout
    assert "b-only" not in shown.stdout
    assert stored.asked == [TENANT_A] * 3


def test_a_tenant_no_key_could_belong_to_is_refused(stored: RecordingRecords) -> None:
    result = ca4("--tenant", "a/b")

    assert result.exit_code == 2
    assert "a tenant is 1-64 of A-Z a-z 0-9 . _ -" in result.output
    assert stored.asked == []


def test_groups_past_the_cap_are_one_other_row_per_tenant_and_said_so(
    stored: RecordingRecords, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review: ``--group-by gpu_model`` over 500 day records of 64 distinct 128-character
    model names gave 32,000 rows and held 77 MiB; the API's cap gave 1,000 and ``(other)``."""
    monkeypatch.setenv("CA4_USAGE_MAX_GROUPS", "50")
    stored.add(
        *_many_models(TENANT_A, sessions=30, gpus=8),  # 240 groups
        day_record(TENANT_B, "b1", "b-only", 60, model="L4"),
    )

    as_json = ca4("--group-by", "gpu_model", "--json")
    as_csv = ca4("--group-by", "gpu_model", "--csv")
    shown = ca4("--group-by", "gpu_model")

    assert (as_json.exit_code, as_csv.exit_code, shown.exit_code) == (0, 0, 0), as_json.output
    body = json.loads(as_json.stdout)
    assert body["truncated"] is True
    rows = body["rows"]
    assert len(rows) == 51
    own = [row for row in rows if row["tenant"] == TENANT_A]
    assert [row["kind"] for row in own] == ["value"] * 49 + ["other"]
    assert [(row["group"], row["held_seconds"]) for row in rows if row["tenant"] == TENANT_B] == [
        ("L4", 60.0)
    ]
    assert sum(row["held_seconds"] for row in rows) == 30 * sum(60 * (g + 1) for g in range(8)) + 60
    note = (
        "truncated: more than 50 groups (CA4_USAGE_MAX_GROUPS); each tenant's (other) row "
        "sums the rest. Group by fewer values, ask for fewer days or pass --tenant to see "
        "every group."
    )
    assert len(list(csv.DictReader(io.StringIO(as_csv.stdout)))) == 51
    assert as_csv.stderr == f"{note}\n"
    assert note in " ".join(shown.stdout.split())
    # one tenant's report already is what --tenant gives: the note does not send it there
    one_tenant = ca4("--group-by", "gpu_model", "--csv", "--tenant", TENANT_A)
    assert one_tenant.stderr == (
        "truncated: more than 50 groups (CA4_USAGE_MAX_GROUPS); each tenant's (other) row "
        "sums the rest. Group by fewer values, ask for fewer days to see every group.\n"
    )


def test_a_report_of_many_groups_holds_no_more_than_the_cap(
    stored: RecordingRecords, monkeypatch: pytest.MonkeyPatch
) -> None:
    """6,400 groups of 128-character names, the default cap cut to 100: without it the
    command held and printed every group."""
    monkeypatch.setenv("CA4_USAGE_MAX_GROUPS", "100")
    stored.add(*_many_models(TENANT_A, sessions=100, gpus=64))

    tracemalloc.start()
    try:
        result = ca4("--group-by", "gpu_model", "--json")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["rows"]) == 101
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.1f} MiB"


def test_a_report_past_timeout_says_what_to_do_and_fails(stored: RecordingRecords) -> None:
    stored.stalling = True

    result = ca4("--timeout", "0.2")

    assert result.exit_code == 1
    assert result.output == (
        "error: the usage report did not finish within 0.2 s: ask for fewer days "
        "(--from/--to), one tenant's (--tenant NAME), or allow it longer (--timeout SECONDS)\n"
    )
    assert stored.asked == [None]


def test_the_deadline_defaults_to_the_api_reports(
    stored: RecordingRecords, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``--timeout``, ``CA4_USAGE_REPORT_TIMEOUT_S``; one tenant's report that misses
    it does not suggest ``--tenant``."""
    monkeypatch.setenv("CA4_USAGE_REPORT_TIMEOUT_S", "0.2")
    stored.stalling = True

    result = ca4("--tenant", TENANT_EVIL, "--json")

    assert result.exit_code == 1
    assert result.output == (
        "error: the usage report did not finish within 0.2 s: ask for fewer days "
        "(--from/--to), or allow it longer (--timeout SECONDS)\n"
    )


@pytest.mark.parametrize("seconds", ["0", "-1"])
def test_a_timeout_of_no_time_is_refused(stored: RecordingRecords, seconds: str) -> None:
    result = ca4("--timeout", seconds)

    assert result.exit_code == 2
    assert "a number of seconds above 0" in result.output
    assert stored.asked == []


def test_csv_text_cells_a_spreadsheet_would_run_as_formulas_are_quoted_numbers_stay(
    stored: RecordingRecords, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group values are the tenants' own: a label value or GPU model starting with ``=``,
    ``+``, ``-``, ``@``, a tab or a carriage return is a formula in the operator's billing
    export unless it starts with ``'`` (OWASP); a negative cost (a negative price) stays a
    number."""
    monkeypatch.setenv("CA4_USAGE_PRICES", '{"=1+1": -1.0, "H100": 2.0}')
    stored.add(
        day_record(TENANT_A, "a1", '=HYPERLINK("http://evil.example","x")', 36),
        day_record(TENANT_A, "a2", "+1", 36),
        day_record(TENANT_A, "a3", "-1", 36),
        day_record(TENANT_A, "a4", "@SUM(A1)", 36),
        day_record(TENANT_A, "a5", "\tx", 36),
        day_record(TENANT_A, "a6", "\rx", 36),
        day_record(TENANT_A, "a7", "plain", 36, model="=1+1"),
    )

    by_project = ca4("--csv")
    by_model = ca4("--csv", "--group-by", "gpu_model")

    assert (by_project.exit_code, by_model.exit_code) == (0, 0), by_project.output
    header = (
        "tenant,group,kind,held_seconds,busy_seconds,idle_seconds,held_hours,busy_hours,"
        "idle_hours,gpus,sessions,cost,unpriced_hours\n"
    )
    numbers = "36.0,0.0,0.0,0.01,0.0,0.0,1,1"
    assert by_project.stdout == header + (
        f"{TENANT_A},'\tx,value,{numbers},0.02,0.0\n"
        f"{TENANT_A},'\rx,value,{numbers},0.02,0.0\n"
        f"{TENANT_A},'+1,value,{numbers},0.02,0.0\n"
        f"{TENANT_A},'-1,value,{numbers},0.02,0.0\n"
        f'{TENANT_A},"\'=HYPERLINK(""http://evil.example"",""x"")",value,{numbers},0.02,0.0\n'
        f"{TENANT_A},'@SUM(A1),value,{numbers},0.02,0.0\n"
        f"{TENANT_A},plain,value,{numbers},-0.01,0.0\n"
    )
    assert by_model.stdout == header + (
        f"{TENANT_A},H100,value,216.0,0.0,0.0,0.06,0.0,0.0,6,6,0.12,0.0\n"
        f"{TENANT_A},'=1+1,value,{numbers},-0.01,0.0\n"
    )
