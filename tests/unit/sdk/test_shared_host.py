"""Shared hosts (JupyterHub, a lab's GPU server) and temp directories that cannot be used:
``Reporter()`` never raises for them, each user has a session file and a spool of their own,
and what an earlier SDK spooled in the directory every user shared is picked up.

Another user is played by this one with another uid (``runtime.current_uid``): what this test
creates is then another user's files.
"""

from __future__ import annotations

import errno
import logging
import tempfile
from pathlib import Path

import pytest
from ca4_sdk import Reporter, runtime
from ca4_sdk.privacy import default_salt
from ca4_sdk.runtime import session_file, stable_session_id
from ca4_sdk.spool import Spool, default_spool_dir

from tests.unit.sdk.reporter_support import StaticCollector
from tests.unit.sdk.stub_api import stub_api

OTHER_UID = 4242


@pytest.fixture(autouse=True)
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The session files and default spools live in this test's temp directory, and no id is
    left over in this process from another test."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setattr(runtime, "_process_session_ids", {}, raising=False)
    monkeypatch.delenv("CA4_SESSION_ID", raising=False)
    return temp


def _as_other_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "current_uid", lambda: OTHER_UID, raising=False)


def _reporter(url: str = "https://edge.example", **kwargs: object) -> Reporter:
    return Reporter(url=url, api_key="k", collector=StaticCollector(), **kwargs)  # type: ignore[arg-type]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_each_user_has_a_session_and_a_spool_of_their_own(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The session file depended on the runtime and the boot only: the second user of a host
    could not read the first one's (PermissionError from Reporter()), nor write to the spool
    directory the first one made."""
    first = _reporter()
    first_files = (session_file(first.runtime), first.spool.directory)
    _as_other_user(monkeypatch)
    second = stable_session_id(first.runtime)
    second_files = (session_file(first.runtime), default_spool_dir(second))
    assert second != first.session_id
    assert second_files[0].name.startswith(f"ca4-session-{OTHER_UID}-")
    assert second_files[1].parent.name == f"ca4-spool-{OTHER_UID}"
    assert first_files[0] != second_files[0]
    assert first_files[1].parent != second_files[1].parent
    assert _warnings(caplog) == []


def test_a_session_file_that_cannot_be_read_gives_an_id_for_this_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The read after FileExistsError was not guarded: an unreadable file raised."""
    session_file("jupyter").mkdir()  # exists, and cannot be read as a file
    first = stable_session_id("jupyter")
    assert first.startswith("jupyter-")
    assert stable_session_id("jupyter") == first  # a cell run again keeps it
    (warning,) = _warnings(caplog)
    assert f"session {first} lasts as long as this process" in warning
    assert "pass session_id= or set CA4_SESSION_ID" in warning


def test_a_session_file_of_another_user_is_not_taken(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _as_other_user(monkeypatch)
    session_file("jupyter").write_text("jupyter-put-there-by-someone-else")  # this test's uid
    assert stable_session_id("jupyter") != "jupyter-put-there-by-someone-else"
    (warning,) = _warnings(caplog)
    assert "belongs to another user" in warning


def test_a_spool_directory_of_another_user_gives_a_spool_in_memory(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, temp_dir: Path
) -> None:
    """With CA4_SESSION_ID set, the second user got PermissionError from the spool."""
    monkeypatch.setenv("CA4_SESSION_ID", "shared-experiment")
    (temp_dir / f"ca4-spool-{OTHER_UID}").mkdir()  # this test's uid: another user's
    _as_other_user(monkeypatch)
    reporter = _reporter()
    assert not reporter.spool.on_disk
    (warning,) = _warnings(caplog)
    assert "belongs to another user" in warning
    assert "kept in memory" in warning


@pytest.mark.parametrize("spool_dir", [None, "chosen"], ids=["default", "spool_dir"])
def test_a_spool_directory_that_cannot_be_made_gives_a_spool_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, temp_dir: Path, spool_dir: str | None
) -> None:
    (tmp_path / "chosen").write_text("a file, not a directory")
    default = default_spool_dir("unit-session")
    default.parent.write_text("a file, not a directory")
    with stub_api() as (url, state):
        reporter = _reporter(
            url, session_id="unit-session", spool_dir=tmp_path / spool_dir if spool_dir else None
        )
        (warning,) = _warnings(caplog)
        fix = "pass spool_dir=" if spool_dir else "set TMPDIR to a directory this user can write"
        assert fix in warning
        state.status = 503
        reporter.report_once()
        assert len(reporter.spool) == 1
        assert "kept in memory (no usable spool directory)" in caplog.text
        state.status = 202
        assert reporter.flush()
    assert len(state.accepted_ids()) == 1


def test_no_usable_temp_directory_gives_a_spool_in_memory_and_a_session_for_this_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Python's ``No usable temporary directory found`` came out of Reporter(), even with
    session_id=, from the spool."""

    def no_temp_dir() -> str:
        raise FileNotFoundError(errno.ENOENT, "No usable temporary directory found in ['/tmp']")

    monkeypatch.setattr(tempfile, "gettempdir", no_temp_dir)
    chosen = _reporter(session_id="unit-session")
    assert not chosen.spool.on_disk
    (spool_warning,) = _warnings(caplog)
    assert "No usable temporary directory" in spool_warning
    assert "set TMPDIR to a directory this user can write to, or pass spool_dir=" in spool_warning
    caplog.clear()
    runtimes = _reporter()
    assert runtimes.session_id == _reporter().session_id  # for this process's life
    assert [w for w in _warnings(caplog) if "session" in w and "this process" in w] != []


def test_an_earlier_sdks_spool_of_the_session_is_picked_up(
    temp_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Reports an SDK before the uid in the name spooled under ``<tmp>/ca4-spool/<session>``
    are moved to this user's spool, and sent."""
    legacy = temp_dir / "ca4-spool" / "unit-session"
    Spool(legacy).put([{"event_id": f"00000000-0000-4000-8000-00000000000{n}"} for n in (1, 2)])
    caplog.set_level(logging.INFO, logger="ca4_sdk")
    reporter = _reporter(session_id="unit-session")
    assert [item.report["event_id"][-1] for item in reporter.spool.peek(10)] == ["1", "2"]
    assert not legacy.exists()
    assert not legacy.parent.exists()
    assert "moved 2 reports an earlier SDK spooled in" in caplog.text


def test_an_earlier_spool_others_may_write_to_is_left_alone(temp_dir: Path) -> None:
    legacy = temp_dir / "ca4-spool" / "unit-session"
    Spool(legacy).put([{"event_id": "00000000-0000-4000-8000-000000000001"}])
    legacy.chmod(0o777)
    reporter = _reporter(session_id="unit-session")
    assert len(reporter.spool) == 0
    assert len(Spool(legacy)) == 1


def test_an_earlier_sdks_session_id_is_kept_when_it_is_this_users(
    monkeypatch: pytest.MonkeyPatch, temp_dir: Path
) -> None:
    """So that the reports it spooled under that session are found (above)."""
    legacy_name = session_file("jupyter").name.replace(f"-{runtime.current_uid()}-", "-")
    (temp_dir / legacy_name).write_text("jupyter-from-an-earlier-sdk")
    assert stable_session_id("jupyter") == "jupyter-from-an-earlier-sdk"
    assert session_file("jupyter").read_text() == "jupyter-from-an-earlier-sdk"
    _as_other_user(monkeypatch)  # another user's, to them: a fresh id
    assert stable_session_id("jupyter") != "jupyter-from-an-earlier-sdk"


def test_privacy_mode_never_takes_another_users_salt_file(
    temp_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The salt was one file for every user of the host, read whole and followed through
    links: another user chose it, or made it a file of gigabytes privacy mode read into the
    notebook's memory."""
    monkeypatch.delenv("CA4_PRIVACY_SALT", raising=False)
    planted = temp_dir / "ca4-privacy-salt"
    with planted.open("wb") as handle:
        handle.write(b"known-to-them")
        handle.truncate(2**30)  # sparse: 1 GiB read as text
    _as_other_user(monkeypatch)  # what this test wrote is another user's now
    first = default_salt()
    assert first != "known-to-them"
    assert len(first) == 32
    # Kept for this user's later reporters, in a file of their own.
    assert (temp_dir / f"ca4-privacy-salt-{OTHER_UID}").read_text() == first


def test_a_link_in_place_of_the_session_or_salt_file_is_never_followed(
    temp_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renaming ``_NOFOLLOW`` to ``NOFOLLOW`` looked up ``os.ONOFOLLOW``, which no platform has:
    the flag was 0 everywhere, and a link another user put at this user's file name was
    followed to a file of this user's own that the link's owner chose."""
    monkeypatch.delenv("CA4_PRIVACY_SALT", raising=False)
    chosen = tmp_path / "a-file-of-this-users-own"
    chosen.write_text("jupyter-chosen-through-a-link")
    session_file("jupyter").symlink_to(chosen)
    assert stable_session_id("jupyter") != "jupyter-chosen-through-a-link"

    chosen_salt = tmp_path / "hex-of-this-users-own"
    chosen_salt.write_text("ab" * 16)
    (temp_dir / f"ca4-privacy-salt{runtime.user_suffix()}").symlink_to(chosen_salt)
    assert default_salt() != "ab" * 16


def test_the_salt_another_process_wrote_first_is_the_one_taken(
    temp_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two notebooks starting at once: the one that lost O_EXCL hashed its hostname with a salt
    of its own, kept nowhere, so one host's reports differed by process."""
    from ca4_sdk import privacy

    monkeypatch.delenv("CA4_PRIVACY_SALT", raising=False)
    path = temp_dir / f"ca4-privacy-salt{runtime.user_suffix()}"
    read_own = privacy.read_own

    def written_meanwhile(candidate: Path) -> str | None:
        if candidate == path and not path.exists():
            path.write_text("cd" * 16)  # the other process, between this one's read and write
            raise FileNotFoundError(candidate)
        return read_own(candidate)

    monkeypatch.setattr(privacy, "read_own", written_meanwhile)
    assert default_salt() == "cd" * 16


def test_a_salt_file_left_empty_is_written_again(
    temp_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process stopped between creating the salt file and writing it left it empty: O_EXCL
    then failed for every later process, each hashing with a salt of its own (the SDK before
    the uid in the name truncated and rewrote it)."""
    monkeypatch.delenv("CA4_PRIVACY_SALT", raising=False)
    path = temp_dir / f"ca4-privacy-salt{runtime.user_suffix()}"
    path.touch(mode=0o600)
    first = default_salt()
    assert default_salt() == first
    assert path.read_text() == first
