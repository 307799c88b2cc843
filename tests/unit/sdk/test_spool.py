"""The on-disk spool: bounded, oldest first, no duplicates, survives a new instance."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import pytest
from ca4_sdk.spool import MemorySpool, Spool


def _report(n: int) -> dict[str, object]:
    return {"event_id": str(uuid.uuid4()), "n": n}


def test_oldest_first_and_survives_a_new_instance(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put([_report(1), _report(2)])
    spool.put([_report(3)])
    reopened = Spool(tmp_path)
    assert [item.report["n"] for item in reopened.peek(10)] == [1, 2, 3]
    reopened.remove(reopened.peek(2))
    assert [item.report["n"] for item in reopened.peek(10)] == [3]


def test_same_event_is_spooled_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    report = _report(1)
    spool.put([report])
    spool.put([report])
    assert len(spool) == 1


def test_count_cap_drops_oldest_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, max_reports=3)
    with caplog.at_level(logging.WARNING, logger="ca4_sdk"):
        spool.put([_report(n) for n in range(5)])
    assert [item.report["n"] for item in spool.peek(10)] == [2, 3, 4]
    assert spool.dropped == 2
    assert "dropped the 2 oldest" in caplog.text


@pytest.mark.parametrize("in_memory", [False, True], ids=["on disk", "in memory"])
def test_a_full_spool_warns_once_until_reports_leave_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, in_memory: bool
) -> None:
    """A day without the API warned at every collection: 240 lines an hour under the cell. A
    flaky API that takes a report now and then, the spool still full, is the same outage."""
    spool = MemorySpool(max_reports=2) if in_memory else Spool(tmp_path, max_reports=2)
    with caplog.at_level(logging.WARNING, logger="ca4_sdk"):
        assert spool.put([_report(n) for n in range(3)]) == 1
        assert [spool.put([_report(n)]) for n in range(3, 6)] == [1, 1, 1]
        spool.remove(spool.peek(1))  # the API took one; the spool is still far behind
        assert spool.put([_report(n) for n in range(6, 8)]) == 1
        said_during_the_outage = [r.getMessage() for r in caplog.records]
        spool.remove(spool.peek(10))  # the API took them all: the outage is over
        spool.put([_report(n) for n in range(8, 11)])  # the next one
    assert spool.dropped == 6
    assert len(said_during_the_outage) == 1
    assert said_during_the_outage[0].startswith(
        "ca4 spool full (2 reports / 67108864 bytes max): dropped the 1 oldest reports; until "
        "it has emptied, each new one drops the oldest"
    )
    assert len([r for r in caplog.records if "spool full" in r.getMessage()]) == 2


def test_byte_cap(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=200)
    spool.put([{"event_id": str(uuid.uuid4()), "pad": "x" * 80} for _ in range(5)])
    assert len(spool) == 1
    assert sum(p.stat().st_size for p in tmp_path.glob("*.json")) <= 200


def test_corrupt_files_are_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    (tmp_path / f"{0:020d}-{uuid.uuid4()}.json").write_text("{not json")
    spool.put([_report(7)])
    assert [item.report["n"] for item in spool.peek(10)] == [7]


def test_files_that_are_not_spooled_reports_are_never_sent_or_deleted(tmp_path: Path) -> None:
    # A spool_dir shared with other files: they were read as reports to send (a credentials
    # file among them), deleted when unreadable or over the caps, and a name without "-" made
    # every put raise.
    (tmp_path / "creds.json").write_text('{"client_secret": "s3cret"}')
    (tmp_path / "broken.json").write_text("{oops")
    spool = Spool(tmp_path, max_reports=1)
    spool.put([_report(1)])
    spool.put([_report(2)])
    assert [item.report["n"] for item in spool.peek(10)] == [2]
    assert len(spool) == 1
    assert (tmp_path / "creds.json").read_text() == '{"client_secret": "s3cret"}'
    assert (tmp_path / "broken.json").exists()


def test_a_spool_in_memory_keeps_the_same_caps_and_order(caplog: pytest.LogCaptureFixture) -> None:
    """Without a usable directory, the reporter's spool lives in memory: bounded the same way."""
    spool = MemorySpool(max_reports=3)
    report = _report(0)
    spool.put([report, report])  # once
    with caplog.at_level(logging.WARNING, logger="ca4_sdk"):
        spool.put([_report(n) for n in range(1, 5)])
    assert [item.report["n"] for item in spool.peek(10)] == [2, 3, 4]
    assert spool.dropped == 2
    assert "dropped the 2 oldest" in caplog.text
    spool.remove(spool.peek(1))
    assert [item.report["n"] for item in spool.peek(10)] == [3, 4]
    assert (spool.on_disk, spool.location) == (False, "memory (no usable spool directory)")


def test_a_spool_in_memory_has_a_byte_cap() -> None:
    spool = MemorySpool(max_bytes=200)
    spool.put([{"event_id": str(uuid.uuid4()), "pad": "x" * 80} for _ in range(5)])
    assert len(spool) == 1


@pytest.mark.parametrize("in_memory", [False, True], ids=["on disk", "in memory"])
def test_discard_deletes_the_reports_of_the_event_ids_given(
    tmp_path: Path, in_memory: bool
) -> None:
    spool = MemorySpool() if in_memory else Spool(tmp_path)
    reports = [_report(n) for n in range(3)]
    spool.put(reports)
    spool.discard({str(reports[1]["event_id"])})
    assert [item.report["n"] for item in spool.peek(10)] == [0, 2]


@pytest.mark.parametrize("in_memory", [False, True], ids=["on disk", "in memory"])
def test_a_clock_stepped_back_keeps_the_order_and_evicts_the_oldest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory: bool
) -> None:
    """Names came from the wall clock: stepped back an hour (a VM resumed, NTP), the newest
    reports were sent first and evicted first when the spool was full."""
    spool = MemorySpool(max_reports=4) if in_memory else Spool(tmp_path, max_reports=4)
    spool.put([_report(n) for n in range(3)])
    now = time.time_ns()
    monkeypatch.setattr(time, "time_ns", lambda: now - 3600 * 10**9)
    for n in range(3, 6):
        spool.put([_report(n)])
    assert [item.report["n"] for item in spool.peek(10)] == [2, 3, 4, 5]
    if not in_memory:  # a new instance (the next run) carries on after the newest name
        Spool(tmp_path, max_reports=4).put([_report(6)])
        assert [item.report["n"] for item in Spool(tmp_path).peek(10)] == [3, 4, 5, 6]
