"""The DocumentDB build's inputs and outputs: pinned archives checked, minimal files installed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from ca4_provision.devstack import configs, documentdb, versions
from ca4_provision.devstack.documentdb import (
    PostgresInstall,
    SourceArchiveError,
    install_into_postgres,
    verified_sources,
)
from ca4_provision.devstack.settings import DevstackSettings
from ca4_provision.devstack.stack import Stack


@pytest.fixture(autouse=True)
def _no_devstack_knobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from the defaults, whatever the shell running pytest exports."""
    for name in list(os.environ):
        if name.startswith("CA4_DEVSTACK_"):
            monkeypatch.delenv(name)


def test_missing_archives_are_named_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SourceArchiveError) as raised:
        verified_sources(tmp_path)

    message = str(raised.value)
    assert "\n" not in message
    assert str(tmp_path) in message
    for source in versions.DOCUMENTDB_SOURCES:
        assert source.archive in message
        assert f"{source.repository}@{source.commit}" in message


def test_an_archive_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    for source in versions.DOCUMENTDB_SOURCES:
        (tmp_path / source.archive).write_bytes(b"not the pinned bytes")
    tampered = tmp_path / versions.DOCUMENTDB_SOURCES[0].archive

    with pytest.raises(SourceArchiveError, match=f"refusing {tampered}: sha256 "):
        verified_sources(tmp_path)


def test_pinned_archives_are_found_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "lib-1.0.tar.gz"
    archive.write_bytes(b"pinned bytes")
    pinned = versions.PinnedSource(
        "lib",
        archive.name,
        "example.org/lib",
        "abc123",
        hashlib.sha256(b"pinned bytes").hexdigest(),
    )
    monkeypatch.setattr(versions, "DOCUMENTDB_SOURCES", (pinned,))

    assert verified_sources(tmp_path) == {"lib": archive}


@pytest.fixture
def postgres_dirs(tmp_path: Path) -> PostgresInstall:
    install = PostgresInstall(tmp_path / "bin", tmp_path / "pglib", tmp_path / "share")
    install.pkglibdir.mkdir()
    install.extension_dir.mkdir(parents=True)
    return install


@pytest.fixture
def built(tmp_path: Path) -> Path:
    artifact = tmp_path / "artifact"
    (artifact / "lib").mkdir(parents=True)
    (artifact / "extension").mkdir()
    (artifact / "lib" / "pg_documentdb.so").write_bytes(b"\x7fELF build 1")
    (artifact / "extension" / "documentdb.control").write_text("default_version = '0.107-0'\n")
    return artifact


def test_install_copies_only_what_postgres_loads_and_only_when_it_differs(
    built: Path, postgres_dirs: PostgresInstall
) -> None:
    first = install_into_postgres(built, postgres_dirs)
    second = install_into_postgres(built, postgres_dirs)
    (built / "lib" / "pg_documentdb.so").write_bytes(b"\x7fELF build 2")
    third = install_into_postgres(built, postgres_dirs)

    library = postgres_dirs.pkglibdir / "pg_documentdb.so"
    control = postgres_dirs.extension_dir / "documentdb.control"
    assert first == [library, control]
    assert second == []
    assert third == [library]
    assert library.read_bytes() == b"\x7fELF build 2"
    assert sorted(p.name for p in postgres_dirs.pkglibdir.iterdir()) == ["pg_documentdb.so"]
    assert oct(control.stat().st_mode & 0o777) == "0o644"


def test_unwritable_postgres_folders_say_how_to_install(
    built: Path, postgres_dirs: PostgresInstall, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(documentdb.os, "access", lambda path, mode: False)  # not root

    with pytest.raises(documentdb.InstallError, match="sudo -E uv run ca4 devstack up"):
        install_into_postgres(built, postgres_dirs)

    assert list(postgres_dirs.pkglibdir.iterdir()) == []


def test_postgres_listens_on_loopback_and_preloads_documentdb(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CA4_DEVSTACK_POSTGRES_PORT", "15433")
    settings = DevstackSettings.from_env()

    rendered = configs.postgresql_conf(settings)

    conf = dict(line.split(" = ", 1) for line in rendered.splitlines() if " = " in line)
    assert conf["listen_addresses"] == "'127.0.0.1'"
    assert conf["port"] == "15433"
    assert conf["shared_preload_libraries"] == "'pg_cron,pg_documentdb_core,pg_documentdb'"
    assert settings.postgres_url == ("postgres://postgres@127.0.0.1:15433/postgres?sslmode=disable")


class _Silent:
    def begin(self, service: str, what: str) -> None: ...
    def end(self, service: str, what: str) -> None: ...
    def note(self, service: str, message: str) -> None: ...


def test_starting_ferretdb_starts_postgres_first_but_stopping_it_does_not() -> None:
    stack = Stack(DevstackSettings.from_env(), _Silent())

    starts = stack.select(["mongo"], with_dependencies=True)
    stops = stack.select(["mongo"])

    assert [s.name for s in starts] == ["postgres", "ferretdb"]
    assert [s.name for s in stops] == ["ferretdb"]


def test_postgres_lives_outside_a_home_its_user_cannot_enter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pwd

    from ca4_provision.devstack import services

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    owner = pwd.struct_passwd(("postgres", "x", 4242, 4242, "", "/", "/bin/sh"))
    monkeypatch.setattr(services, "server_user", lambda: owner)
    assert services._blocked_folder(owner, locked / "postgres") == locked
    key_dir = services.UNREACHABLE_HOME_FALLBACK
    service = services.Postgres.__new__(services.Postgres)
    monkeypatch.setattr(services.Postgres, "dir", property(lambda self: locked / "postgres"))
    assert service.cluster_dir.parent == key_dir
    assert service.data == service.cluster_dir / "data"
    open_home = tmp_path / "open"
    open_home.mkdir(mode=0o755)
    if services._blocked_folder(owner, open_home) is None:
        monkeypatch.setattr(services.Postgres, "dir", property(lambda self: open_home / "postgres"))
        assert service.cluster_dir == open_home / "postgres"
