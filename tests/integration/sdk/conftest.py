"""A private processor and worker for the SDK tests: own ports, own topic, own database.

The pipeline is shared by the module's tests (starting two apps per test would cost more than
the tests); each test uses its own session id, so tests never see each other's data. The
processor can be stopped and started again by a test (it is ours alone, so that is not
disruptive to other engineers).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
import requests

from tests.support.services import Endpoints

REPO_ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 90.0
DEV_API_KEY = "ca4-dev-key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers(url: str) -> bool:
    """True when ``url``/healthz says 200."""
    try:
        return requests.get(f"{url}/healthz", timeout=1.0).status_code == 200
    except requests.RequestException:
        return False


@dataclass
class App:
    """One uvicorn subprocess that can be stopped and started again on the same port."""

    name: str
    asgi_app: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        if self.log is None:
            self.log = self.log_path.open("ab")
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                self.asgi_app,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def start(self) -> None:
        """Start and wait for /healthz; an app that exits (Kafka restarting) is started again."""
        self.process = self._spawn()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers(self.url):
            if time.monotonic() > deadline:
                output = self.log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"{self.name} did not start on {self.url}:\n{output}")
            if self.process.poll() is not None:
                time.sleep(2.0)
                self.process = self._spawn()
            time.sleep(0.3)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None
        if self.log is not None:
            self.log.close()
            self.log = None


@dataclass(frozen=True)
class SdkPipeline:
    """The private apps and the names they use."""

    processor: App
    worker: App
    topic: str
    database: str
    mongo_url: str


@pytest.fixture(scope="module")
def sdk_wheel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SDK wheel, built as ``make dev`` and the processor image build it."""
    out = tmp_path_factory.mktemp("sdk-wheel")
    subprocess.run(
        ["uv", "build", "--package", "ca4-sdk", "--wheel", "-o", str(out)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


@pytest.fixture(scope="module")
def extra_app_env() -> dict[str, str]:
    """More ``CA4_*`` variables for the apps; a test module overrides this fixture to add some."""
    return {}


@pytest.fixture(scope="module")
def sdk_pipeline(
    services: Endpoints, tmp_path_factory: pytest.TempPathFactory, extra_app_env: dict[str, str]
) -> Iterator[SdkPipeline]:
    suffix = uuid.uuid4().hex[:10]
    topic, database = f"test-gpu-metadata-{suffix}", f"test_ca4_{suffix}"
    env = {
        **os.environ,
        "CA4_KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap_servers,
        "CA4_KAFKA_TOPIC": topic,
        "CA4_KAFKA_DLQ_TOPIC": f"{topic}.dlq",
        "CA4_KAFKA_STORE_GROUP": f"test-store-{suffix}",
        "CA4_KAFKA_ARCHIVE_GROUP": f"test-archive-{suffix}",
        "CA4_KAFKA_PROJECT_GROUP": f"test-project-{suffix}",
        "CA4_MONGO_URL": services.mongo_url,
        "CA4_MONGO_DB": database,
        "CA4_S3_ENDPOINT_URL": services.s3_endpoint_url,
        "CA4_S3_ACCESS_KEY_ID": services.s3_access_key_id,
        "CA4_S3_SECRET_ACCESS_KEY": services.s3_secret_access_key,
        "CA4_ARCHIVE_ENABLED": "false",
        "CA4_ENVIRONMENT": "dev",
        "CA4_LOG_LEVEL": "WARNING",
        **extra_app_env,
    }
    env.pop("CA4_API_KEY_HASHES", None)
    env.pop("CA4_API_KEYS_FILE", None)
    logs = tmp_path_factory.mktemp("sdk-apps")
    worker = App("worker", "ca4_worker.main:app", _free_port(), env, logs / "worker.log")
    processor = App(
        "processor", "ca4_processor.main:app", _free_port(), env, logs / "processor.log"
    )
    try:
        worker.start()
        processor.start()
        yield SdkPipeline(processor, worker, topic, database, services.mongo_url)
    finally:
        processor.stop()
        worker.stop()
