"""The worker, configured as the prod chart configures it, reaches a TLS MongoDB endpoint.

A dev stack of its own (own CA4_DEVSTACK_HOME and ports: the shared stack is never touched) runs
PostgreSQL and FerretDB with ``ca4 devstack up ferretdb --tls``. The worker's environment comes
from ``helm template`` of ca4-app with values-prod.yaml; its CA4_MONGO_URL is the documented
DocumentDB form (``tls=true&tlsCAFile=<the chart's mount path>&retryWrites=false``). The probe
runs in its own mount namespace (``unshare --mount``) where the dev stack's CA sits exactly where
the chart mounts the CA bundle, under an overlay of /etc, so the host's /etc is never changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.conftest import REPO, helm, pod_spec, template, values_args
from tests.infra.test_links import pod_env
from tests.support.ports import free_port

__all__ = ["helm"]  # the session fixture that builds or finds helm

pytestmark = [pytest.mark.mongo, pytest.mark.slow]

CA4 = str(Path(sys.executable).parent / "ca4")
#: Stores one event with the worker's own settings, store and client: what the pod would do.
PROBE = """
import asyncio, json
from ca4_worker.core.config import Settings
from ca4_worker.persistence.database import connect
from ca4_worker.persistence.events import MongoEventStore
from tests.unit.worker.factories import positioned

async def main() -> None:
    settings = Settings()
    client = connect(settings.mongo_url)
    try:
        database = client[settings.mongo_db]
        event = positioned(0, 1)
        outcome = await MongoEventStore(database, topic="gpu-metadata").append([event])
        found = await database["events"].find_one({"_id": event.event_id})
        print(json.dumps({"stored": len(outcome.stored), "found": found is not None}))
    finally:
        await client.close()

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Its own PostgreSQL + FerretDB serving TLS; yields what ``ca4 devstack env`` exports."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("this test needs root and unshare (CI runs as root): mount namespaces")
    home = tmp_path_factory.mktemp("tls-devstack")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CA4_DEVSTACK_")},
        "CA4_DEVSTACK_HOME": str(home),
        "CA4_DEVSTACK_MONGO_PORT": str(free_port()),
        "CA4_DEVSTACK_MONGO_TLS_PORT": str(free_port()),
        "CA4_DEVSTACK_POSTGRES_PORT": str(free_port()),
        "CA4_DEVSTACK_FERRETDB_DEBUG_PORT": str(free_port()),
    }
    up = subprocess.run(
        [CA4, "devstack", "up", "ferretdb", "--tls"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        printed = subprocess.run(
            [CA4, "devstack", "env"], env=env, capture_output=True, text=True, check=True
        ).stdout
        exported = dict(line.removeprefix("export ").split("=", 1) for line in printed.splitlines())
        yield {k: v.strip("'") for k, v in exported.items()}
    finally:
        subprocess.run(
            [CA4, "devstack", "down", "--purge", "--yes"],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def prod_worker(helm: str) -> tuple[dict[str, str], Path]:
    """The prod worker's environment and the path its CA bundle is mounted at."""
    code, stdout, stderr = template(helm, "ca4-app", *values_args("ca4-app", "prod"))
    assert code == 0, stderr
    docs = [d for d in yaml.safe_load_all(stdout) if d]
    worker = next(
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"]["app.kubernetes.io/name"] == "worker"
    )
    spec = pod_spec(worker)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = spec["containers"][0]["volumeMounts"]
    ca_mount = next(m for m in mounts if "configMap" in volumes[m["name"]])
    key = volumes[ca_mount["name"]]["configMap"]["items"][0]["path"]
    return pod_env(docs, worker), Path(ca_mount["mountPath"]) / key


def run_probe(
    tmp_path: Path, env: dict[str, str], ca_path: Path, ca_source: Path | None
) -> subprocess.CompletedProcess[str]:
    """The probe in a mount namespace; ``ca_source`` (a CA file) is bound at ``ca_path``."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    steps = [
        f"mount -t tmpfs tmpfs {overlay}",
        f"mkdir {overlay}/upper {overlay}/work",
        f"mount -t overlay overlay -o lowerdir=/etc,upperdir={overlay}/upper,"
        f"workdir={overlay}/work /etc",
    ]
    if ca_source is not None:
        bundle = tmp_path / "bundle"
        bundle.mkdir()
        shutil.copy(ca_source, bundle / ca_path.name)
        steps += [f"mkdir -p {ca_path.parent}", f"mount --bind {bundle} {ca_path.parent}"]
    steps.append(f'exec {sys.executable} -c "$CA4_TEST_PROBE"')
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-ec", " && ".join(steps)],
        env={**env, "CA4_TEST_PROBE": PROBE, "PATH": os.environ["PATH"]},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def prod_env(
    prod_worker: tuple[dict[str, str], Path], tls_stack: dict[str, str], tmp_path: Path
) -> dict[str, Any]:
    """The rendered worker env with its Secrets filled in: a DocumentDB-style TLS URL."""
    env, ca_path = prod_worker
    keys = tmp_path / "api-keys"
    keys.write_text(f"ops:{'ab' * 32}:platform:read:all\n")
    host = tls_stack["CA4_DEVSTACK_MONGO_TLS_URL"].split("/?", 1)[0]
    secrets = {
        "CA4_API_KEYS_FILE": str(keys),
        "CA4_MONGO_URL": f"{host}/ca4?tls=true&tlsCAFile={ca_path}&retryWrites=false",
    }
    return {name: secrets.get(name, value) for name, value in env.items()}


def test_prod_worker_stores_an_event_over_tls_with_the_mounted_ca(
    prod_worker: tuple[dict[str, str], Path], tls_stack: dict[str, str], tmp_path: Path
) -> None:
    env = prod_env(prod_worker, tls_stack, tmp_path)
    assert env["CA4_ENVIRONMENT"] == "prod"
    ca_path = prod_worker[1]
    assert ca_path == Path("/etc/ca4/db-ca/global-bundle.pem")
    result = run_probe(tmp_path, env, ca_path, Path(tls_stack["CA4_DEVSTACK_MONGO_TLS_CA_FILE"]))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {"stored": 1, "found": True}
    assert not ca_path.exists(), "the host's /etc was changed"


def test_prod_worker_without_the_ca_bundle_fails_clearly(
    prod_worker: tuple[dict[str, str], Path], tls_stack: dict[str, str], tmp_path: Path
) -> None:
    env = prod_env(prod_worker, tls_stack, tmp_path)
    result = run_probe(tmp_path, env, prod_worker[1], ca_source=None)
    assert result.returncode != 0
    assert f"tlsCAFile={prod_worker[1]}" in result.stderr, result.stderr[-3000:]
    assert "does not exist" in result.stderr, result.stderr[-3000:]
