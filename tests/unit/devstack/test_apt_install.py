"""The dev stack's apt step on a system whose archive lacks its packages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ca4_provision.devstack import installers


def _tool(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


async def test_a_release_without_postgresql_15_is_named_before_apt_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ubuntu 24.04 and Debian 13 ship another PostgreSQL: apt's own failure ("Unable to locate
    package postgresql-15") said nothing of why or what to do."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    _tool(bin_dir, "dpkg-query", "exit 1")  # nothing installed
    _tool(bin_dir, "apt-get", f'echo "apt-get $*" >> {calls}')
    _tool(bin_dir, "apt-cache", 'echo "E: No packages found" >&2; exit 100')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(installers, "_system_name", lambda: "Ubuntu 24.04.1 LTS")

    with pytest.raises(installers.InstallError) as refused:
        await installers.apt_install(tmp_path / "cache", ["postgresql-15"], log_name="postgres")

    assert str(refused.value) == (
        "apt has no postgresql-15 on Ubuntu 24.04.1 LTS: the dev stack installs Debian 12's "
        "packages (PostgreSQL 15). On another release add the PostgreSQL apt repository "
        '(https://wiki.postgresql.org/wiki/Apt), or use Docker (README, "With Docker").'
    )
    assert calls.read_text() == "apt-get update\n"  # nothing installed half-way


def test_the_system_is_named_from_os_release(tmp_path: Path) -> None:
    release = tmp_path / "os-release"
    release.write_text('NAME="Debian GNU/Linux"\nPRETTY_NAME="Debian GNU/Linux 13 (trixie)"\n')
    assert installers._system_name(release) == "Debian GNU/Linux 13 (trixie)"
    assert installers._system_name(tmp_path / "absent") == "this system"
