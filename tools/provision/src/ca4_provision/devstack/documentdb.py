"""PostgreSQL with the DocumentDB extension: the storage engine under FerretDB v2.

DocumentDB, and the libraries it needs that Debian lacks or ships too old (libbson, pg_cron)
plus pgvector, are built once from pinned source archives (``versions.DOCUMENTDB_SOURCES``,
found in ``../shared/vendor/`` beside the repository and checked against their sha256). The
build runs in the cache and keeps only what PostgreSQL loads: the ``.so`` files and the
extensions' ``.control``/``.sql`` files. PostgreSQL 15 looks for those only in its own
``pkglibdir`` and ``sharedir/extension``, so ``install_into_postgres`` copies exactly those files
there (nothing else, and only when they differ).
"""

from __future__ import annotations

import asyncio
import filecmp
import hashlib
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ca4_provision.devstack import versions
from ca4_provision.devstack.installers import (
    Artifact,
    InstallError,
    apt_install,
    run_logged,
    staging_for,
)
from ca4_provision.devstack.tools import require

# DocumentDB finds the Intel decimal library through pkg-config; Debian ships no .pc file for it.
INTELMATHLIB_PC = """Name: intelmathlib
Description: Intel Decimal Floating-Point Math Library (pkg-config file written by ca4 devstack)
Version: 2.0
Cflags: -I/usr/include
Libs: -lbidgcc000
"""


@dataclass(frozen=True)
class PostgresInstall:
    """Where the distribution's PostgreSQL keeps its programs and loadable extensions."""

    bindir: Path
    pkglibdir: Path
    sharedir: Path

    @classmethod
    def debian(cls, major: str = versions.POSTGRES_MAJOR) -> PostgresInstall:
        """Debian's layout for one major version (``postgresql-<major>``)."""
        return cls(
            bindir=Path(f"/usr/lib/postgresql/{major}/bin"),
            pkglibdir=Path(f"/usr/lib/postgresql/{major}/lib"),
            sharedir=Path(f"/usr/share/postgresql/{major}"),
        )

    def program(self, name: str) -> Path:
        """``postgres``, ``initdb``, ``psql``, ``pg_config``…"""
        return self.bindir / name

    def installed(self) -> bool:
        """True when the server program is there."""
        return self.program("postgres").is_file()

    @property
    def extension_dir(self) -> Path:
        """Where ``CREATE EXTENSION`` reads control and SQL files."""
        return self.sharedir / "extension"


class SourceArchiveError(InstallError):
    """A pinned source archive is missing or not the pinned one."""


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_sources(vendor: Path) -> dict[str, Path]:
    """Every pinned archive in ``vendor``, by source name, each checked against its sha256."""
    missing = [s for s in versions.DOCUMENTDB_SOURCES if not (vendor / s.archive).is_file()]
    if missing:
        names = ", ".join(f"{s.archive} ({s.repository}@{s.commit})" for s in missing)
        raise SourceArchiveError(
            f"DocumentDB build sources missing in {vendor}: {names}; put the pinned archives "
            "there (or point CA4_DEVSTACK_VENDOR at their folder)."
        )
    found = {}
    for source in versions.DOCUMENTDB_SOURCES:
        path = vendor / source.archive
        actual = sha256_of(path)
        if actual != source.sha256:
            raise SourceArchiveError(
                f"refusing {path}: sha256 {actual} is not the pinned {source.sha256}."
            )
        found[source.name] = path
    return found


def documentdb_artifact(cache: Path) -> Artifact:
    """The cached build: ``lib/*.so`` and ``extension/*.control|*.sql``."""
    return Artifact(cache, "documentdb", versions.DOCUMENTDB_BUILD)


async def build_documentdb(cache: Path, vendor: Path, postgres: PostgresInstall) -> Path:
    """Build libbson, pgvector, pg_cron and DocumentDB once; return the cached artifact folder."""
    artifact = documentdb_artifact(cache)
    if artifact.installed():
        return artifact.root
    archives = await asyncio.to_thread(verified_sources, vendor)
    await apt_install(cache, versions.DOCUMENTDB_BUILD_DEBIAN_PACKAGES, log_name="documentdb")
    async with staging_for(artifact) as staging:
        if staging is not None:
            await _build(staging, archives, postgres, artifact.log)
    return artifact.root


async def _build(staging: Path, archives: dict[str, Path], pg: PostgresInstall, log: Path) -> None:
    work = staging / "build"
    sources = {
        name: await asyncio.to_thread(_unpack, archive, work) for name, archive in archives.items()
    }
    libbson = work / "libbson"
    cmake = require("cmake")
    await run_logged(
        [
            cmake,
            "-S",
            str(sources[versions.LIBBSON.name]),
            "-B",
            str(work / "libbson-build"),
            "-DENABLE_MONGOC=OFF",
            "-DENABLE_SHARED=OFF",
            "-DENABLE_STATIC=ON",
            "-DENABLE_TESTS=OFF",
            "-DENABLE_EXAMPLES=OFF",
            "-DENABLE_MAN_PAGES=OFF",
            "-DENABLE_HTML_DOCS=OFF",
            "-DENABLE_UNINSTALL=OFF",
            "-DCMAKE_BUILD_TYPE=Release",
            "-DCMAKE_POSITION_INDEPENDENT_CODE=ON",
            "-DCMAKE_C_FLAGS=-fPIC",  # linked into the extension's shared objects
            f"-DCMAKE_INSTALL_PREFIX={libbson}",
            "-DCMAKE_INSTALL_LIBDIR=lib",
        ],
        log,
    )
    jobs = f"-j{os.cpu_count() or 1}"
    await run_logged(
        [cmake, "--build", str(work / "libbson-build"), jobs, "--target", "install"], log
    )
    pkgconfig = work / "pkgconfig"
    pkgconfig.mkdir()
    (pkgconfig / "intelmathlib.pc").write_text(INTELMATHLIB_PC, encoding="utf-8")
    env = {**os.environ, "PKG_CONFIG_PATH": f"{libbson / 'lib' / 'pkgconfig'}:{pkgconfig}"}
    root = work / "root"
    # PGXS builds; no LLVM bitcode (Debian's PGXS would want clang); portable pgvector code.
    make = [require("make"), jobs, f"PG_CONFIG={pg.program('pg_config')}", "with_llvm=no"]
    documentdb = sources[versions.DOCUMENTDB.name]
    for folder, extra in (
        (sources[versions.PGVECTOR.name], ["OPTFLAGS="]),
        (sources[versions.PG_CRON.name], []),
        (documentdb / "pg_documentdb_core", []),
        (documentdb / "pg_documentdb", []),
    ):
        await run_logged([*make, *extra, "-C", str(folder)], log, env=env)
        await run_logged(
            [*make, *extra, "-C", str(folder), "install", f"DESTDIR={root}"], log, env=env
        )
    await asyncio.to_thread(_keep_loadable_files, root, staging)
    await asyncio.to_thread(shutil.rmtree, work)


def _unpack(archive: Path, into: Path) -> Path:
    """Extract a source archive; return its top folder."""
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        top = tar.getmembers()[0].name.split("/", 1)[0]
        tar.extractall(into, filter="data")
    return into / top


def _keep_loadable_files(root: Path, artifact: Path) -> None:
    """From a ``make install DESTDIR=root`` tree keep the ``.so`` and extension files only."""
    (artifact / "lib").mkdir()
    (artifact / "extension").mkdir()
    for library in root.rglob("*.so"):
        shutil.copyfile(library, artifact / "lib" / library.name)
    for control in root.rglob("extension/*"):
        if control.suffix in {".control", ".sql"}:
            shutil.copyfile(control, artifact / "extension" / control.name)


def install_into_postgres(artifact: Path, postgres: PostgresInstall) -> list[Path]:
    """Copy the built files PostgreSQL loads into its folders, where they differ; return those."""
    changed = []
    for built, target_dir in (
        (artifact / "lib", postgres.pkglibdir),
        (artifact / "extension", postgres.extension_dir),
    ):
        for source in sorted(built.iterdir()):
            target = target_dir / source.name
            if target.is_file() and filecmp.cmp(source, target, shallow=False):
                continue
            if not os.access(target_dir, os.W_OK):
                raise InstallError(
                    f"{target_dir} is not writable: PostgreSQL loads extensions only from its own "
                    "folders; run `sudo -E uv run ca4 devstack up postgres` once."
                )
            temporary = target_dir / f".{source.name}.ca4-devstack"
            shutil.copyfile(source, temporary)
            temporary.chmod(0o644)
            temporary.replace(target)  # a running server keeps the file it has mapped
            changed.append(target)
    return changed
