"""Container images mapped to local programs, with the image's entrypoint, CMD, env and workdir.

- ``ghcr.io/.../ca4-processor|ca4-worker:<tag>``: the workspace's entry points, with the CMD, ENV
  and WORKDIR of the service's own Dockerfile (its ``/app/.venv`` is this checkout's ``.venv``);
  the tag must be the workspace version, so the code run is the code the image would hold.
- ``apache/kafka:<tag>``: the jars of exactly that Kafka version from the dev stack's installer
  (broker plus the command-line tools' jar), laid out as the image's ``/opt/kafka`` with the
  ``bin/*.sh`` scripts the chart calls, each starting the same main class as upstream's script.
- ``prometheus/prometheus:<tag>``: the Debian binary (its version differs from the tag; the
  config and rules are the rendered ones). Go programs make their own system calls, so the
  preload library cannot move their wildcard bind: the image's default listen address
  (``:9090``) is passed as ``--web.listen-address=<pod IP>:9090`` instead.
- ``prometheus/alertmanager:<tag>``: the dev stack's build of exactly that tag (the same
  ``IMAGE_TAGS`` pin), its listen address passed the same way.
- ``curlimages/curl:<tag>``: the host's ``curl`` (Debian's, another version than the tag) with the
  system's ``/bin/sh``, ``sha256sum`` and ``cut``, what the chart's scripts for that image call
  (the image is Alpine's busybox with curl); its entrypoint is ``curl``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ca4_provision.devstack import configs, installers, versions
from ca4_provision.devstack.settings import DevstackSettings

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
APP_IMAGES = {"ca4-processor": "processor", "ca4-worker": "worker"}

# The apache/kafka image's scripts this tier provides: script -> main class (as in upstream bin/).
KAFKA_SCRIPTS = {
    "kafka-server-start.sh": "kafka.Kafka",
    "kafka-storage.sh": "kafka.tools.StorageTool",
    "kafka-topics.sh": "org.apache.kafka.tools.TopicCommand",
    "kafka-metadata-quorum.sh": "org.apache.kafka.tools.MetadataQuorumCommand",
}
KAFKA_RUN_CLASS = """#!/bin/bash
# kafka-run-class.sh of the apache/kafka image, on the dev stack's jars (tests/deploy/images.py).
base="$(cd "$(dirname "$0")/.." && pwd)"
LOG_DIR="${LOG_DIR:-$base/logs}"
mkdir -p "$LOG_DIR"
exec java ${KAFKA_HEAP_OPTS:--Xmx256M} -XX:+UseSerialGC -Djava.awt.headless=true \\
  -Dkafka.logs.dir="$LOG_DIR" -Dlog4j2.configurationFile="$base/config/log4j2.properties" \\
  ${KAFKA_OPTS:-} -cp "$base/libs/*" "$@"
"""
KAFKA_SCRIPT = """#!/bin/bash
# {script} of the apache/kafka image: {main} (tests/deploy/images.py).
{heap}exec "$(dirname "$0")/kafka-run-class.sh" {main} "$@"
"""
# Upstream's kafka-server-start.sh defaults the broker's heap to 1 GB.
KAFKA_SERVER_HEAP = 'export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx1G -Xms1G}"\n'


class UnmappedImageError(LookupError):
    """An image this tier cannot run here."""


@dataclass
class Image:
    """What a container image means on this machine."""

    reference: str
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    workdir: Path
    mounts: list[tuple[Path, str]] = field(default_factory=list)
    # Arguments that put a wildcard listener on the pod's address ({pod_ip}), for programs the
    # preload library cannot reach (Go); appended after the rendered ones.
    pod_address_args: tuple[str, ...] = ()

    def argv(
        self, command: list[str] | None, args: list[str] | None, pod_ip: str = ""
    ) -> list[str]:
        """Kubernetes' rule: command replaces ENTRYPOINT (and drops CMD), args replace CMD."""
        extra = [arg.format(pod_ip=pod_ip) for arg in self.pod_address_args]
        if command:
            return [*command, *(args or []), *extra]
        return [*self.entrypoint, *(self.cmd if args is None else args), *extra]


def split_reference(reference: str) -> tuple[str, str]:
    """``(name, tag)`` of an image reference: the last path part and the tag."""
    path, _, tag = reference.rpartition(":")
    return path.rsplit("/", 1)[-1], tag


def dockerfile_runtime(dockerfile: Path) -> tuple[list[str], dict[str, str], str]:
    """The final stage's CMD, ENV and WORKDIR of a Dockerfile."""
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    stage = text.rsplit("\nFROM ", 1)[-1]
    cmd: list[str] = []
    env: dict[str, str] = {}
    workdir = "/"
    for line in stage.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "CMD":
            cmd = list(json.loads(rest))
        elif instruction == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
        elif instruction == "WORKDIR":
            workdir = rest.strip()
    return cmd, env, workdir


class ImageMap:
    """Resolves image references to local programs, building what they need once."""

    def __init__(self, state: Path) -> None:
        self.state = state

    async def resolve(self, reference: str) -> Image:
        """The local program for an image; UnmappedImageError when there is none."""
        name, tag = split_reference(reference)
        if name in APP_IMAGES:
            return self._app(reference, APP_IMAGES[name], tag)
        if name == "kafka":
            return await self._kafka(reference, tag)
        if name == "prometheus":
            return Image(
                reference,
                ["/usr/bin/prometheus"],
                [],
                {"PATH": SYSTEM_PATH},
                Path("/"),
                pod_address_args=("--web.listen-address={pod_ip}:9090",),
            )
        if name == "alertmanager":
            if tag != versions.ALERTMANAGER_VERSION:
                raise UnmappedImageError(
                    f"{reference}: the dev stack builds {versions.ALERTMANAGER_VERSION}"
                )
            programs = await installers.install_alertmanager(DevstackSettings.from_env().cache)
            return Image(
                reference,
                [str(programs / "alertmanager")],
                [],
                {"PATH": SYSTEM_PATH},
                Path("/"),
                pod_address_args=("--web.listen-address={pod_ip}:9093",),
            )
        if name == "curl":
            curl = shutil.which("curl")
            if curl is None:
                raise UnmappedImageError(
                    f"{reference}: no curl on this machine (apt-get install curl)"
                )
            return Image(reference, [curl], [], {"PATH": SYSTEM_PATH}, Path("/"))
        raise UnmappedImageError(f"{reference}: no local program for this image")

    def _app(self, reference: str, service: str, tag: str) -> Image:
        version = importlib.metadata.version(f"ca4-{service}")
        if tag != version:
            raise UnmappedImageError(f"{reference}: the workspace builds ca4-{service} {version}")
        cmd, env, workdir = dockerfile_runtime(REPO / "services" / service / "Dockerfile")
        app = str(REPO)
        resolved = {k: v.replace("/app", app).replace("$PATH", SYSTEM_PATH) for k, v in env.items()}
        assert workdir == "/app", f"{service}'s Dockerfile: WORKDIR {workdir}, expected /app"
        return Image(reference, [], cmd, resolved, REPO)

    async def _kafka(self, reference: str, tag: str) -> Image:
        settings = DevstackSettings.from_env()
        libs = await installers.install_kafka(settings.cache, tag, with_tools=True)
        root = self.state / "images" / f"kafka-{tag}"
        (root / "bin").mkdir(parents=True, exist_ok=True)
        (root / "config").mkdir(exist_ok=True)
        if not (root / "libs").exists():
            (root / "libs").symlink_to(libs)
        (root / "config" / "log4j2.properties").write_text(configs.KAFKA_LOG4J2, "utf-8")
        scripts = {"kafka-run-class.sh": KAFKA_RUN_CLASS}
        for script, main in KAFKA_SCRIPTS.items():
            heap = KAFKA_SERVER_HEAP if main == "kafka.Kafka" else ""
            scripts[script] = KAFKA_SCRIPT.format(script=script, main=main, heap=heap)
        for script, body in scripts.items():
            path = root / "bin" / script
            path.write_text(body, encoding="utf-8")
            path.chmod(0o755)
        env = {"PATH": f"/opt/kafka/bin:{SYSTEM_PATH}", "HOME": os.environ.get("HOME", "/root")}
        return Image(reference, [], [], env, Path("/"), [(root, "/opt/kafka")])
