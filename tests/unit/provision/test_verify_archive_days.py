"""Where `ca4 verify` looks for its record in the archive: the days an object holding it may be
filed under."""

from __future__ import annotations

from datetime import UTC, datetime

from ca4_provision.verify.checks import archive_days


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_a_run_just_after_midnight_looks_in_the_day_before_too() -> None:
    """An object is filed under the day of its first record: the one holding a record sent at
    00:00:05 may have begun at 23:59:50. Only the start's day was searched, so a run near
    midnight UTC failed (`ca4 verify` and the suite's verify test)."""
    assert archive_days(_at("2026-12-03T00:00:05"), _at("2026-12-03T00:00:40")) == [
        "2026-12-02",
        "2026-12-03",
    ]


def test_a_run_just_before_midnight_looks_in_the_next_day_too() -> None:
    assert archive_days(_at("2026-12-02T23:59:58"), _at("2026-12-03T00:00:30")) == [
        "2026-12-02",
        "2026-12-03",
    ]


def test_a_run_at_noon_looks_in_its_own_day() -> None:
    assert archive_days(_at("2026-12-02T12:00:00"), _at("2026-12-02T12:00:30")) == ["2026-12-02"]
