"""The service catalog: for each service, how to install, configure, launch and check it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import signal
import stat
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Literal

from ca4_provision.devstack import (
    configs,
    documentdb,
    edge,
    health,
    installers,
    provisioning,
    tls,
    versions,
)
from ca4_provision.devstack.process import LaunchSpec, ServiceProcess
from ca4_provision.devstack.settings import (
    HOST,
    KAFKA_TOPIC_PARTITIONS,
    KAFKA_TOPICS,
    POSTGRES_SUPERUSER,
    S3_ACCESS_KEY_ID,
    S3_BUCKET,
    S3_SECRET_ACCESS_KEY,
    DevstackSettings,
)
from ca4_provision.devstack.tools import require

Group = Literal["infra", "app"]


class Service(ABC):
    """One supervised process of the dev stack."""

    name: ClassVar[str]
    group: ClassVar[Group] = "infra"
    stop_timeout_s: ClassVar[float] = 20.0
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    depends_on: ClassVar[tuple[str, ...]] = ()
    """Services of the same group that must be healthy before this one starts."""

    def __init__(self, settings: DevstackSettings) -> None:
        self.settings = settings

    @property
    def dir(self) -> Path:
        """This service's folder in the state dir (config and data)."""
        return self.settings.home / self.name

    @property
    def process(self) -> ServiceProcess:
        """Its PID file and log file."""
        home = self.settings.home
        return ServiceProcess(self.name, home / "run", home / "logs" / f"{self.name}.log")

    @property
    @abstractmethod
    def port(self) -> int:
        """The main TCP port."""

    @property
    @abstractmethod
    def address(self) -> str:
        """Where clients connect."""

    @property
    @abstractmethod
    def markers(self) -> list[str]:
        """Strings in the command line that identify our process (see ``process.py``)."""

    async def version(self) -> str:
        """The pinned (or, for distribution packages, installed) version."""
        return "n/a"

    def installed(self) -> bool:
        """True when nothing needs installing before a start."""
        return True

    async def install(self) -> None:  # noqa: B027 - optional hook, most services have one
        """Install the pinned build into the cache."""

    @abstractmethod
    async def prepare(self) -> LaunchSpec:
        """Write config, initialise storage, and say how to launch."""

    @abstractmethod
    async def check(self) -> None:
        """Raise :class:`~ca4_provision.devstack.health.UnhealthyError` unless healthy."""

    async def provision(self) -> str | None:
        """Idempotent setup once healthy (topics, buckets); a note about what changed."""
        return None


class Kafka(Service):
    """Apache Kafka, single-node KRaft, from the Maven Central jars."""

    name = "kafka"
    stop_timeout_s = 45.0

    @property
    def port(self) -> int:
        """The broker listener."""
        return self.settings.ports.kafka

    @property
    def address(self) -> str:
        """``127.0.0.1:9092``."""
        return self.settings.kafka_bootstrap

    @property
    def server_properties(self) -> Path:
        """The generated broker config."""
        return self.dir / "server.properties"

    @property
    def markers(self) -> list[str]:
        """The main class and our config path."""
        return ["kafka.Kafka", str(self.server_properties)]

    async def version(self) -> str:
        """The pinned Kafka version."""
        return versions.KAFKA_VERSION

    def installed(self) -> bool:
        """True once the classpath is cached."""
        return installers.kafka_artifact(self.settings.cache).installed()

    async def install(self) -> None:
        """Resolve the broker classpath with Maven."""
        await installers.install_kafka(self.settings.cache)

    def _java(self, libs: Path, *jvm_options: str) -> list[str]:
        log4j = self.dir / "log4j2.properties"
        return [
            require("java"),
            *jvm_options,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.settings.home / 'logs'}",
            "-cp",
            f"{libs}/*",
        ]

    async def prepare(self) -> LaunchSpec:
        """Write the configs and format the KRaft storage on first start."""
        libs = await installers.install_kafka(self.settings.cache)
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.server_properties.write_text(
            configs.kafka_server_properties(self.settings, data), encoding="utf-8"
        )
        (self.dir / "log4j2.properties").write_text(configs.KAFKA_LOG4J2, encoding="utf-8")
        if not (data / "meta.properties").is_file():
            await installers.run_logged(
                [
                    *self._java(libs, "-Xmx256m"),
                    "kafka.tools.StorageTool",
                    "format",
                    "--ignore-formatted",
                    "-t",
                    configs.kafka_cluster_id(),
                    "-c",
                    str(self.server_properties),
                ],
                self.process.log_file,
            )
        heap = self.settings.kafka_heap
        return LaunchSpec(
            argv=[
                *self._java(
                    libs,
                    "-Xms128m",
                    f"-Xmx{heap}",
                    "-XX:+UseSerialGC",
                    "-XX:+ExitOnOutOfMemoryError",
                ),
                "kafka.Kafka",
                str(self.server_properties),
            ],
            markers=self.markers,
        )

    async def check(self) -> None:
        """A metadata request."""
        await health.kafka_ready(self.address)

    async def provision(self) -> str | None:
        """Create the pipeline topics."""
        created = await provisioning.ensure_topics(
            self.address, KAFKA_TOPICS, partitions=KAFKA_TOPIC_PARTITIONS
        )
        return f"created topics {', '.join(created)}" if created else None


class Postgres(Service):
    """PostgreSQL from the distribution with the DocumentDB extension: FerretDB's storage."""

    name = "postgres"
    # SIGINT is PostgreSQL's "fast" shutdown: it ends sessions, checkpoints and exits, where
    # SIGTERM ("smart") would wait for FerretDB's pooled connections to close on their own.
    stop_signal = signal.SIGINT
    stop_timeout_s = 60.0

    @property
    def install_dirs(self) -> documentdb.PostgresInstall:
        """The distribution's PostgreSQL folders."""
        return documentdb.PostgresInstall.debian()

    @property
    def port(self) -> int:
        """The SQL listener."""
        return self.settings.ports.postgres

    @property
    def address(self) -> str:
        """``postgres://postgres@127.0.0.1:5433/postgres``."""
        return self.settings.postgres_url

    @property
    def cluster_dir(self) -> Path:
        """Where the cluster's config and data live: beside the other services, unless the
        server's user cannot enter that folder (a clone in a 0700 temp dir or home); then in
        :data:`UNREACHABLE_HOME_FALLBACK`, one folder per dev stack home."""
        owner = server_user()
        if owner is None or _blocked_folder(owner, self.dir) is None:
            return self.dir
        key = hashlib.sha256(str(self.dir).encode()).hexdigest()[:16]
        return UNREACHABLE_HOME_FALLBACK / key

    @property
    def config_file(self) -> Path:
        """The generated ``postgresql.conf`` (outside the data dir, rewritten on every start)."""
        return self.cluster_dir / "postgresql.conf"

    @property
    def data(self) -> Path:
        """The cluster's data dir, owned by the user the server runs as."""
        return self.cluster_dir / "data"

    @property
    def markers(self) -> list[str]:
        """Our config path on its command line."""
        return ["postgres", f"config_file={self.config_file}"]

    async def version(self) -> str:
        """PostgreSQL's major version and the pinned DocumentDB commit."""
        return f"{versions.POSTGRES_MAJOR} + documentdb {versions.DOCUMENTDB.commit}"

    def installed(self) -> bool:
        """True once PostgreSQL is installed and the extensions are built."""
        built = documentdb.documentdb_artifact(self.settings.cache).installed()
        return built and self.install_dirs.installed()

    async def install(self) -> None:
        """``apt-get install postgresql-15``; build DocumentDB and its libraries once."""
        await self._built()

    async def _built(self) -> Path:
        if not self.install_dirs.installed():
            await installers.apt_install(
                self.settings.cache, [versions.POSTGRES_DEBIAN_PACKAGE], log_name="postgres"
            )
        return await documentdb.build_documentdb(
            self.settings.cache, self.settings.vendor, self.install_dirs
        )

    async def prepare(self) -> LaunchSpec:
        """Put the extensions where PostgreSQL loads them, ``initdb`` once, write the config."""
        pg = self.install_dirs
        built = await self._built()
        await asyncio.to_thread(documentdb.install_into_postgres, built, pg)
        owner = server_user()
        self.cluster_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        self.data.mkdir(parents=True, exist_ok=True, mode=0o700)
        if owner is not None:
            _give_to(owner, self.data)
        if not (self.data / "PG_VERSION").is_file():
            await installers.run_logged(
                [
                    str(pg.program("initdb")),
                    f"--pgdata={self.data}",
                    f"--username={POSTGRES_SUPERUSER}",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                self.process.log_file,
                cwd=self.cluster_dir,
                user=owner.pw_name if owner else None,
            )
        self.config_file.write_text(configs.postgresql_conf(self.settings), encoding="utf-8")
        self.config_file.chmod(0o644)
        return LaunchSpec(
            argv=[
                str(pg.program("postgres")),
                "-D",
                str(self.data),
                "-c",
                f"config_file={self.config_file}",
            ],
            markers=self.markers,
            cwd=self.cluster_dir,
            user=owner.pw_name if owner else None,
        )

    async def check(self) -> None:
        """A ``SELECT 1`` through psql."""
        await health.postgres_ready(self.address, self.install_dirs.program("psql"))

    async def provision(self) -> str | None:
        """``CREATE EXTENSION documentdb CASCADE`` unless it exists."""
        return await provisioning.ensure_documentdb(
            self.address, psql_program=self.install_dirs.program("psql")
        )


def server_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: as root it runs as Debian's ``postgres`` user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(POSTGRES_SUPERUSER)
    except KeyError:
        raise installers.InstallError(
            f"no `{POSTGRES_SUPERUSER}` user to run PostgreSQL as (Debian's postgresql package "
            "creates it); create one with `useradd --system postgres`."
        ) from None


UNREACHABLE_HOME_FALLBACK = Path("/var/lib/ca4-devstack")
"""PostgreSQL's folder when the dev stack home is out of the server user's reach (root only)."""


def _blocked_folder(owner: pwd.struct_passwd, path: Path) -> Path | None:
    """The first of ``path`` and its parents that ``owner`` cannot enter, if any."""
    for folder in (path, *path.parents):
        if not folder.exists():
            continue
        mode = folder.stat()
        if mode.st_uid != owner.pw_uid and not mode.st_mode & stat.S_IXOTH:
            return folder
    return None


def _give_to(owner: pwd.struct_passwd, data: Path) -> None:
    """Hand the data dir to the server's user, and fail early if it cannot reach it."""
    os.chown(data, owner.pw_uid, owner.pw_gid)
    blocked = _blocked_folder(owner, data.parent)
    if blocked is not None:
        raise installers.InstallError(
            f"PostgreSQL runs as {owner.pw_name}, which cannot enter {blocked}: allow it "
            f"(chmod o+x {blocked}) or set CA4_DEVSTACK_HOME to a folder it can reach."
        )


class FerretDB(Service):
    """FerretDB v2: the MongoDB wire protocol in front of PostgreSQL with DocumentDB."""

    name = "ferretdb"
    depends_on = ("postgres",)

    @property
    def port(self) -> int:
        """The MongoDB wire protocol listener."""
        return self.settings.ports.mongo

    @property
    def address(self) -> str:
        """``mongodb://127.0.0.1:27017``."""
        return self.settings.mongo_url

    @property
    def markers(self) -> list[str]:
        """Our state dir and the PostgreSQL flag (v1, on SQLite, had the same state dir)."""
        return ["ferretdb", f"--state-dir={self.dir / 'state'}", "--postgresql-url="]

    async def version(self) -> str:
        """The pinned FerretDB version."""
        return versions.FERRETDB_VERSION

    def installed(self) -> bool:
        """True once the binary is cached."""
        return installers.ferretdb_artifact(self.settings.cache).installed()

    async def install(self) -> None:
        """``go install`` FerretDB."""
        await installers.install_ferretdb(self.settings.cache)

    async def prepare(self) -> LaunchSpec:
        """Create the state dir (FerretDB keeps a little state there, its data is in PostgreSQL)."""
        binary = await installers.install_ferretdb(self.settings.cache)
        state = self.dir / "state"
        state.mkdir(parents=True, exist_ok=True)
        listeners = [f"--listen-addr={HOST}:{self.port}"]
        if self.settings.tls:
            # Server TLS only: a --listen-tls-ca-file would demand client certificates.
            files = await tls.ensure_certificates(self.settings.tls_dir)
            listeners += [
                f"--listen-tls={HOST}:{self.settings.ports.mongo_tls}",
                f"--listen-tls-cert-file={files.cert}",
                f"--listen-tls-key-file={files.key}",
            ]
        return LaunchSpec(
            argv=[
                str(binary),
                f"--postgresql-url={self.settings.postgres_url}",
                f"--state-dir={state}",
                *listeners,
                f"--debug-addr={HOST}:{self.settings.ports.ferretdb_debug}",
                "--no-auth",
                "--telemetry=disable",
                # WARN logs every failed command in full; errors and panics are what matter here.
                "--log-level=error",
            ],
            markers=self.markers,
            env={"FERRETDB_TELEMETRY": "disable", "DO_NOT_TRACK": "1"},
        )

    async def check(self) -> None:
        """A ``ping`` and a real query with a deadline (a wedged database still pings)."""
        await health.mongo_ready(self.address)


class MinIO(Service):
    """MinIO single-drive server: the S3 archive."""

    name = "minio"

    @property
    def port(self) -> int:
        """The S3 API listener."""
        return self.settings.ports.s3

    @property
    def address(self) -> str:
        """``http://127.0.0.1:9000``."""
        return self.settings.s3_endpoint_url

    @property
    def markers(self) -> list[str]:
        """Our data dir on its command line."""
        return ["minio", "server", str(self.dir / "data")]

    async def version(self) -> str:
        """The pinned MinIO pseudo-version."""
        return versions.MINIO_VERSION

    def installed(self) -> bool:
        """True once the binary is cached."""
        return installers.minio_artifact(self.settings.cache).installed()

    async def install(self) -> None:
        """``go install`` MinIO."""
        await installers.install_minio(self.settings.cache)

    async def prepare(self) -> LaunchSpec:
        """Create the data dir."""
        binary = await installers.install_minio(self.settings.cache)
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        return LaunchSpec(
            argv=[
                str(binary),
                "server",
                str(data),
                "--address",
                f"{HOST}:{self.port}",
                "--console-address",
                f"{HOST}:{self.settings.ports.s3_console}",
                "--quiet",
            ],
            markers=self.markers,
            env={
                "MINIO_ROOT_USER": S3_ACCESS_KEY_ID,
                "MINIO_ROOT_PASSWORD": S3_SECRET_ACCESS_KEY,
                "MINIO_BROWSER": "off",
                "MINIO_UPDATE": "off",
            },
        )

    async def check(self) -> None:
        """MinIO's readiness endpoint."""
        await health.http_ok(f"{self.address}/minio/health/ready")

    async def provision(self) -> str | None:
        """Create the archive bucket."""
        created = await provisioning.ensure_bucket(
            self.address,
            S3_BUCKET,
            access_key_id=S3_ACCESS_KEY_ID,
            secret_access_key=S3_SECRET_ACCESS_KEY,
        )
        return f"created bucket {S3_BUCKET}" if created else None


class Alertmanager(Service):
    """Alertmanager built from its pinned Go module, with the shared routing tree."""

    name = "alertmanager"

    @property
    def port(self) -> int:
        """The web and API listener."""
        return self.settings.ports.alertmanager

    @property
    def address(self) -> str:
        """``http://127.0.0.1:9094``."""
        return self.settings.alertmanager_url

    @property
    def config_file(self) -> Path:
        """The generated ``alertmanager.yml``."""
        return self.dir / "alertmanager.yml"

    @property
    def markers(self) -> list[str]:
        """Our config path on its command line."""
        return ["alertmanager", f"--config.file={self.config_file}"]

    async def version(self) -> str:
        """The pinned Alertmanager version."""
        return versions.ALERTMANAGER_VERSION

    def installed(self) -> bool:
        """True once the build is cached."""
        return installers.alertmanager_artifact(self.settings.cache).installed()

    async def install(self) -> None:
        """Build Alertmanager and amtool."""
        await installers.install_alertmanager(self.settings.cache)

    async def prepare(self) -> LaunchSpec:
        """Render the config and check it with amtool before the server reads it."""
        programs = await installers.install_alertmanager(self.settings.cache)
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(configs.alertmanager_config(self.settings), encoding="utf-8")
        await installers.run_logged(
            [str(programs / "amtool"), "check-config", str(self.config_file)],
            self.process.log_file,
        )
        return LaunchSpec(
            argv=[
                str(programs / "alertmanager"),
                f"--config.file={self.config_file}",
                f"--storage.path={data}",
                f"--web.listen-address={HOST}:{self.port}",
                # One instance: no gossip listener (it would take port 9094 on every address).
                "--cluster.listen-address=",
            ],
            markers=self.markers,
            cwd=self.dir,
        )

    async def check(self) -> None:
        """``/-/ready``."""
        await health.http_ok(f"{self.address}/-/ready")


class Prometheus(Service):
    """Prometheus from the distribution package, with our own config and data dir."""

    name = "prometheus"

    @property
    def port(self) -> int:
        """The web listener."""
        return self.settings.ports.prometheus

    @property
    def address(self) -> str:
        """``http://127.0.0.1:9090``."""
        return self.settings.prometheus_url

    @property
    def config_file(self) -> Path:
        """The generated ``prometheus.yml``."""
        return self.dir / "prometheus.yml"

    @property
    def markers(self) -> list[str]:
        """Our config path on its command line."""
        return ["prometheus", f"--config.file={self.config_file}"]

    async def version(self) -> str:
        """What the installed package reports."""
        binary = installers.prometheus_binary()
        return await installers.prometheus_version(binary) if binary else "not installed"

    def installed(self) -> bool:
        """True when the ``prometheus`` binary is on the machine."""
        return installers.prometheus_binary() is not None

    async def install(self) -> None:
        """``apt-get install prometheus`` (as root) or a hint."""
        await installers.install_prometheus(self.settings.cache)

    async def prepare(self) -> LaunchSpec:
        """Render the scrape config."""
        binary = await installers.install_prometheus(self.settings.cache)
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(configs.prometheus_config(self.settings), encoding="utf-8")
        return LaunchSpec(
            argv=[
                str(binary),
                f"--config.file={self.config_file}",
                f"--storage.tsdb.path={data}",
                "--storage.tsdb.retention.time=3d",
                f"--web.listen-address={HOST}:{self.port}",
                "--web.enable-lifecycle",
            ],
            markers=self.markers,
            cwd=self.dir,
        )

    async def check(self) -> None:
        """``/-/ready``."""
        await health.http_ok(f"{self.address}/-/ready")


class App(Service):
    """One of our own ASGI services, run by uvicorn from the current virtual environment."""

    group = "app"
    stop_timeout_s = 15.0
    asgi_app: ClassVar[str]

    @property
    def address(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{HOST}:{self.port}"

    @property
    def markers(self) -> list[str]:
        """The ASGI app and its port on the command line."""
        return ["uvicorn", self.asgi_app, f"--port {self.port}"]

    async def version(self) -> str:
        """The workspace checkout."""
        return "workspace"

    async def prepare(self) -> LaunchSpec:
        """Point the app at this stack through the ``CA4_*`` variables."""
        return LaunchSpec(
            argv=[
                sys.executable,
                "-m",
                "uvicorn",
                self.asgi_app,
                "--host",
                HOST,
                "--port",
                str(self.port),
            ],
            markers=self.markers,
            env=self.settings.client_env(),
            cwd=self.settings.repo_root,
        )

    async def check(self) -> None:
        """``/healthz``."""
        await health.http_ok(f"{self.address}/healthz")


class Processor(App):
    """The ingest API (``ca4_processor.main:app``)."""

    name = "processor"
    asgi_app = "ca4_processor.main:app"

    @property
    def port(self) -> int:
        """The HTTP listener."""
        return self.settings.ports.processor


class Worker(App):
    """The consumer and read API (``ca4_worker.main:app``)."""

    name = "worker"
    asgi_app = "ca4_worker.main:app"

    @property
    def port(self) -> int:
        """The HTTP listener."""
        return self.settings.ports.worker


class Edge(App):
    """The dev edge (``ca4_provision.devstack.edge``): one URL routing each path to the processor
    or the worker by the chart's ``ingress.routes``, as the cluster ingress does. The URL a
    notebook uses (``ngrok http 127.0.0.1:8002`` exposes it)."""

    name = "edge"
    asgi_app = "ca4_provision.devstack.edge:from_env"
    depends_on = ("processor", "worker")

    @property
    def port(self) -> int:
        """The HTTP listener."""
        return self.settings.ports.edge

    async def prepare(self) -> LaunchSpec:
        """uvicorn with the edge factory, its upstreams the processor and worker of this stack."""
        spec = await super().prepare()
        upstreams = {
            f"CA4_EDGE_{kind.name.upper()}_URL": kind(self.settings).address
            for kind in (Processor, Worker)
        }
        return LaunchSpec(
            argv=[*spec.argv, "--factory", *edge.UVICORN_FLAGS],
            markers=spec.markers,
            env={**spec.env, **upstreams},
            cwd=spec.cwd,
        )

    async def check(self) -> None:
        """The edge's own health path (no app behind it is asked)."""
        await health.http_ok(f"{self.address}{edge.HEALTH_PATH}")


SERVICE_TYPES: tuple[type[Service], ...] = (
    Kafka,
    Postgres,
    FerretDB,
    MinIO,
    Alertmanager,
    Prometheus,
    Processor,
    Worker,
    Edge,
)
SERVICE_NAMES = tuple(kind.name for kind in SERVICE_TYPES)


def catalog(settings: DevstackSettings) -> dict[str, Service]:
    """Every service, keyed by name, in start order."""
    return {kind.name: kind(settings) for kind in SERVICE_TYPES}
