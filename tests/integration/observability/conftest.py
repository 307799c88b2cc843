"""The processor and worker on 127.0.0.1:8000/8001, where the dev-stack Prometheus scrapes them.

If something already serves ``/healthz`` there (``ca4 devstack start processor`` or ``make dev``)
it is reused; otherwise the apps are started as uvicorn subprocesses and stopped afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.support.services import Endpoints

REPO_ROOT = Path(__file__).resolve().parents[3]
APPS = {"processor": ("ca4_processor.main:app", 8000), "worker": ("ca4_worker.main:app", 8001)}
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Pipeline:
    """Where the running apps and Prometheus answer."""

    processor_url: str
    worker_url: str
    prometheus_url: str
    mongo_db: str
    endpoints: Endpoints


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def app_env(services: Endpoints, mongo_db: str) -> dict[str, str]:
    return {
        **os.environ,
        "CA4_MONGO_DB": mongo_db,
        "CA4_KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap_servers,
        "CA4_MONGO_URL": services.mongo_url,
        "CA4_S3_ENDPOINT_URL": services.s3_endpoint_url,
        "CA4_S3_ACCESS_KEY_ID": services.s3_access_key_id,
        "CA4_S3_SECRET_ACCESS_KEY": services.s3_secret_access_key,
    }


@pytest.fixture(scope="session")
def pipeline(services: Endpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    assert services.prometheus_url, "CA4_PROMETHEUS_URL is not set: run `ca4 devstack env`"
    logs = tmp_path_factory.mktemp("apps")
    # A worker we start gets its own database, so nothing other tests left behind can matter.
    mongo_db = os.environ.get("CA4_MONGO_DB", "ca4")
    if not answers("http://127.0.0.1:8001"):
        mongo_db = f"test_obs_{uuid.uuid4().hex[:10]}"
    started: list[subprocess.Popen[bytes]] = []
    log_files: list[IO[bytes]] = []
    try:
        for name, (asgi_app, port) in APPS.items():
            url = f"http://127.0.0.1:{port}"
            if answers(url):
                continue
            log = (logs / f"{name}.log").open("wb")
            log_files.append(log)
            started.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        asgi_app,
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                    ],
                    cwd=REPO_ROOT,
                    env=app_env(services, mongo_db),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            deadline = time.monotonic() + START_TIMEOUT_S
            while not answers(url):
                if started[-1].poll() is not None or time.monotonic() > deadline:
                    output = (logs / f"{name}.log").read_text(errors="replace")[-3000:]
                    pytest.fail(f"{name} did not start on {url}:\n{output}")
                time.sleep(0.5)
        yield Pipeline(
            processor_url="http://127.0.0.1:8000",
            worker_url="http://127.0.0.1:8001",
            prometheus_url=services.prometheus_url,
            mongo_db=mongo_db,
            endpoints=services,
        )
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for log in log_files:
            log.close()
