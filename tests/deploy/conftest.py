"""The deploy tier's fixtures: rendered charts, the pod runner, and the prod platform running.

Everything the tier starts lives under one state folder in /var/tmp and one block of loopback
addresses (127.0.<block>.x, its own); every pod is stopped and every mount point made is removed
on the way out, whether the tests passed or not. Of the shared dev stack it uses FerretDB and
MinIO, in a database and a bucket of its own that it removes afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from ca4_provision.devstack import installers, versions
from ca4_provision.devstack.settings import DevstackSettings
from ca4_worker.persistence.s3 import S3ObjectStore

from tests.deploy import tier
from tests.deploy.cluster import LocalCluster, Manifest, Pod, PodFailedError, find, log_tail
from tests.deploy.images import ImageMap
from tests.infra.conftest import helm, rendered, template, values_args
from tests.support.services import Endpoints

__all__ = ["helm", "rendered"]

HERE = Path(__file__).resolve().parent
# Resources only: three brokers with the chart's 1 GB heaps do not fit a 2-core CI box. Not
# less than 384m: the log cleaner allocates its 128 MiB dedupe buffer in one piece at start,
# and at 256m a broker died of OutOfMemoryError there in one fresh-clone run.
PLATFORM_SETS = ["--set", "kafka.heapOpts=-Xms128m -Xmx384m"]


def render(helm_path: str, chart: str, value_set: str, *extra: str) -> list[Manifest]:
    """``helm template`` one chart with one value set, as a list of manifests."""
    code, stdout, stderr = template(helm_path, chart, *values_args(chart, value_set), *extra)
    assert code == 0, f"{chart}/{value_set} does not render:\n{stderr}"
    return [d for d in yaml.safe_load_all(stdout) if d]


@pytest.fixture(scope="session")
def state() -> Iterator[Path]:
    """The tier's working folder (pods' volumes, logs, the Kafka image layout); removed after.

    ``CA4_DEPLOY_KEEP_STATE=1`` keeps it (pod logs, hosts files, enter.sh) for debugging.
    """
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("the deploy tier runs pods in mount namespaces: run it as root with unshare")
    folder = Path(tempfile.mkdtemp(prefix="ca4-deploy-", dir="/var/tmp"))
    yield folder
    if os.environ.get("CA4_DEPLOY_KEEP_STATE") != "1":
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def claimed_block() -> Iterator[int]:
    """A block of loopback addresses (127.0.<block>.x) no other tier run on this machine holds.

    Two runs at once (two clones, or pytest-xdist workers) would otherwise start pods on the
    same addresses; each run holds a lock file for its block while it lasts.
    """
    for block in range(77, 100):
        handle = Path(f"/run/lock/ca4-deploy-tier-{block}.lock").open("a")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        try:
            yield block
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        return
    pytest.fail("every deploy tier address block (127.0.77-99.x) is held by another run")


@pytest.fixture(scope="session")
def address_block() -> Iterator[int]:
    """The run's block of loopback addresses (see claimed_block)."""
    with claimed_block() as block:
        yield block


@pytest.fixture(scope="session")
def podnet(state: Path) -> Path:
    """The preload library that gives each pod its own address (built from podnet.c)."""
    library = state / "podnet.so"
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail("the deploy tier needs a C compiler (apt-get install gcc) for podnet.c")
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", library, HERE / "podnet.c", "-ldl"],
        check=True,
    )
    return library


@dataclass
class MavenMirror:
    """The stand-in for Maven Central: a repository URL and the paths pods fetched from it."""

    url: str
    fetched: list[str] = field(default_factory=list)


@pytest.fixture(scope="session")
async def maven_mirror(state: Path) -> AsyncIterator[MavenMirror]:
    """What ``kafka.metrics.agent.repositoryUrl`` names for an air-gapped cluster: a local HTTP
    server with Maven's layout, holding the JMX exporter javaagent that the dev stack's pinned
    download fetched from Maven Central and checked against its sha256 (``versions.py``)."""
    pinned = versions.JMX_EXPORTER_AGENT
    jar = await installers.install_download(DevstackSettings.from_env().cache, pinned)
    served = state / "mirror"
    (served / "maven2" / pinned.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(jar, served / "maven2" / pinned.path)
    mirror = MavenMirror("")

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            mirror.fetched.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=served))
    mirror.url = f"http://127.0.0.1:{server.server_address[1]}/maven2"
    thread = threading.Thread(target=server.serve_forever, name="maven-mirror", daemon=True)
    thread.start()
    try:
        yield mirror
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Platform:
    """ca4-platform's Kafka running here: the cluster, its brokers and the topics Job."""

    cluster: LocalCluster
    docs: list[Manifest]
    brokers: list[Pod]
    topics_job: Pod
    seconds_to_quorum: float


async def start_quorum(cluster: LocalCluster, brokers: list[Pod]) -> None:
    """Start the brokers together (the chart's Parallel policy) and wait for all to be ready.

    A quorum that does not form fails with every broker's log tail and the listeners on Kafka's
    ports: one broker's tail rarely says why the others will not vote for it.
    """
    await asyncio.gather(*(cluster.start(b) for b in brokers))
    try:
        await asyncio.gather(*(cluster.wait_ready(b, within_s=150) for b in brokers))
    except PodFailedError as stuck:
        raise PodFailedError(f"{stuck}\n{quorum_diagnosis(brokers)}") from stuck


def quorum_diagnosis(brokers: list[Pod]) -> str:
    """Every broker's log tail, and every listener on Kafka's ports (any address, wildcards too)."""
    ports = {str(p["containerPort"]) for b in brokers for p in b.container.get("ports", [])}
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=False)
    on_ports = [
        line for line in listening.stdout.splitlines() if any(f":{port} " in line for port in ports)
    ]
    parts = [f"listening on {', '.join(sorted(ports))}:", *(on_ports or ["(nothing)"])]
    for broker in brokers:
        parts.append(f"--- {broker.name} ({broker.address}):\n{log_tail(broker.log, 15)}")
    return "\n".join(parts)


@contextlib.asynccontextmanager
async def running_platform(
    helm: str, value_set: str, state: Path, podnet: Path, block: int, mirror: MavenMirror
) -> AsyncIterator[Platform]:
    """Render ca4-platform with a value set, start its Kafka StatefulSet (each broker's init
    container fetches the metrics javaagent from the mirror), run its topics Job."""
    agent_from = ("--set", f"kafka.metrics.agent.repositoryUrl={mirror.url}")
    docs = render(helm, "ca4-platform", value_set, *PLATFORM_SETS, *agent_from)
    folder = state / value_set
    cluster = LocalCluster(
        folder,
        list(docs),
        ImageMap(folder),
        podnet,
        stand_ins=tier.stand_ins(),
        address_block=block,
    )
    try:
        began = asyncio.get_running_loop().time()
        brokers = cluster.plan(find(docs, "StatefulSet", "kafka"))
        await start_quorum(cluster, brokers)
        seconds = asyncio.get_running_loop().time() - began
        tier.TIMINGS[f"{value_set}: {len(brokers)} broker(s) ready"] = seconds
        job = await cluster.run_job(find(docs, "Job", "kafka-topics"))
        yield Platform(cluster, docs, brokers, job, seconds)
    finally:
        await cluster.close()


@pytest.fixture(scope="session")
async def platforms(
    helm: str, state: Path, podnet: Path, address_block: int, maven_mirror: MavenMirror
) -> AsyncIterator[dict[str, Platform]]:
    """ca4-platform under prod values (three brokers) and dev values (one), started together;
    dev gets a block of addresses of its own (the two render the same names)."""
    async with contextlib.AsyncExitStack() as stack:
        dev_block = stack.enter_context(claimed_block())
        # Both finish entering (or fail) before anything unwinds: no half-started set leaks.
        started = await asyncio.gather(
            stack.enter_async_context(
                running_platform(helm, "prod", state, podnet, address_block, maven_mirror)
            ),
            stack.enter_async_context(
                running_platform(helm, "dev", state, podnet, dev_block, maven_mirror)
            ),
            return_exceptions=True,
        )
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        prod, dev = (outcome for outcome in started if isinstance(outcome, Platform))
        yield {"prod": prod, "dev": dev}


@pytest.fixture(scope="session")
def platform(platforms: dict[str, Platform]) -> Platform:
    """ca4-platform under prod values: three brokers and the topics Job."""
    return platforms["prod"]


@pytest.fixture(scope="session")
def dev_platform(platforms: dict[str, Platform]) -> Platform:
    """ca4-platform under dev values: one broker and the topics Job."""
    return platforms["dev"]


@dataclass
class App:
    """The prod ca4-app's processor, worker and reader running here, with the key they were
    given."""

    cluster: LocalCluster
    processor: Pod
    worker: Pod
    reader: Pod
    api_key: str
    database: str
    bucket: str
    seconds_to_ready: dict[str, float]

    def url(self, pod: Pod, path: str) -> str:
        """A URL on a pod's http port."""
        return f"http://{pod.address}:{pod.port('http')}{path}"


@pytest.fixture(scope="session")
async def app(helm: str, platform: Platform, services: Endpoints) -> AsyncIterator[App]:
    """Render ca4-app with prod values, provide its Secret and CA ConfigMap, start its pods.

    The database and the bucket get names of their own (``--set``, as an operator names them) so
    nothing the shared dev stack holds is read or overwritten; both are removed afterwards.
    """
    suffix = secrets.token_hex(4)
    database, bucket = f"ca4_deploy_{suffix}", f"ca4-deploy-{suffix}"
    docs = render(
        helm,
        "ca4-app",
        "prod",
        *("--set", f"config.mongo.db={database}", "--set", f"config.s3.bucket={bucket}"),
        *("--set", f"config.s3.endpointUrl={services.s3_endpoint_url}"),
    )
    api_key = secrets.token_urlsafe(24)
    cluster = platform.cluster
    cluster.add(docs)
    cluster.add(tier.operator_objects(api_key, services.mongo_url))
    objects = S3ObjectStore(
        bucket=bucket,
        endpoint_url=services.s3_endpoint_url,
        region="eu-west-1",
        access_key_id=services.s3_access_key_id,
        secret_access_key=services.s3_secret_access_key,
    )
    async with objects:
        await objects.ensure_bucket()  # Terraform's job in prod
        processor = cluster.plan(find(docs, "Deployment", "ca4-app-processor"), replicas=1)[0]
        worker = cluster.plan(find(docs, "Deployment", "ca4-app-worker"), replicas=1)[0]
        reader = cluster.plan(find(docs, "Deployment", "ca4-app-reader"), replicas=1)[0]
        pods = (processor, worker, reader)
        instance_profile = tier.instance_profile_credentials(services)
        # The reader's NetworkPolicy lets it reach the database alone, which the tier cannot
        # enforce: its Kafka and S3 are a closed port instead, so reaching for them fails.
        walled = {
            "CA4_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "CA4_S3_ENDPOINT_URL": "http://127.0.0.1:1",
        }
        env = {reader.name: walled}
        try:
            await asyncio.gather(
                *(cluster.start(p, {**instance_profile, **env.get(p.name, {})}) for p in pods)
            )
            ready = await asyncio.gather(*(cluster.wait_ready(p) for p in pods))
            tier.TIMINGS["prod: processor, worker and reader ready"] = max(ready)
            yield App(
                cluster,
                *pods,
                api_key,
                database,
                bucket,
                {"processor": ready[0], "worker": ready[1], "reader": ready[2]},
            )
        finally:
            await asyncio.gather(*(cluster.stop(p) for p in pods))
            await tier.remove_stand_in_data(services, database, bucket)


def python_client(*args: str) -> list[str]:
    """The argv of a client from clients.py, run by this interpreter."""
    return [sys.executable, "-m", "tests.deploy.clients", *args]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what the tier executed and what it only checked, with why."""
    if tier.RESULTS:
        terminalreporter.write_sep("=", "deploy tier: executed vs only checked")
        terminalreporter.write_line(tier.table())
        for what, seconds in tier.TIMINGS.items():
            terminalreporter.write_line(f"{what}: {seconds:.1f} s")
