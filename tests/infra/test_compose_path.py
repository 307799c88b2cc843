"""The compose path, which cannot run here (no Docker engine), checked at its links: what the
README tells people to set, the ports ``ca4 verify`` uses, and the testcontainers fallback."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from ca4_auth import ApiKeyRing, Scope
from ca4_provision.devstack.versions import IMAGE_TAGS, JMX_EXPORTER_AGENT
from ca4_provision.verify.settings import VerifySettings

from tests.infra.conftest import REPO
from tests.support import services
from tests.support.doc_commands import run_as_bash

COMPOSE = REPO / "docker-compose.yml"

pytestmark = pytest.mark.stand_in(
    "docker compose up: no Docker engine here; ran instead: docker-compose.yml read for its "
    "published ports, required variables and Kafka listener, the README's and the compose "
    "header's key lines run by bash up to `docker compose up`, the kafka-jmx-agent one-shot's "
    "script run by sh with a stub curl, and the testcontainers Kafka fallback configured without "
    "an engine (no nginx here: the edge's nginx runs in test_compose_edge.py)"
)


def readme_compose_section() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("## With Docker")
    end = readme.index("\n## ", start + 1)
    return readme[start:end]


def test_readme_compose_instructions_name_every_variable_compose_requires() -> None:
    lines = COMPOSE.read_text(encoding="utf-8").splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert len(required) >= 4, required
    section = readme_compose_section()
    missing = {name for name in required if not re.search(rf"\b{name}=", section)}
    assert not missing, f"compose refuses to start without {sorted(missing)}; the README omits them"


def published_host_port(service: str, container_port: int) -> int:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    for mapping in compose["services"][service].get("ports", []):
        host_ip, host_port, inner = str(mapping).split(":")
        if int(inner) == container_port:
            assert host_ip == "127.0.0.1"
            return int(host_port)
    raise AssertionError(f"compose publishes no port of {service} for {container_port}")


# Each ca4 verify endpoint and the compose service (and container port) that answers it.
VERIFY_TO_COMPOSE = {
    "EDGE_API_URL": ("edge", 8002),  # the one URL notebooks use, as on K3s and with make dev
    "WORKER_URL": ("worker", 8001),
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka", 29092),  # the HOST listener, advertised on the host
    "MONGO_URL": ("mongo", 27017),
    "PROMETHEUS_URL": ("prometheus", 9090),
    "GRAFANA_URL": ("grafana", 3000),
    "LOKI_URL": ("loki", 3100),
}


@pytest.mark.parametrize("setting", sorted(VERIFY_TO_COMPOSE))
def test_ca4_verify_defaults_use_the_ports_compose_publishes(setting: str) -> None:
    default = str(VerifySettings.model_fields[setting].default)
    port = urlsplit(default if "://" in default else f"tcp://{default}").port
    assert port == published_host_port(*VERIFY_TO_COMPOSE[setting]), f"CA4_{setting}={default}"


def test_compose_kafka_advertises_the_published_host_listener() -> None:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    env = compose["services"]["kafka"]["environment"]
    host_port = published_host_port("kafka", 29092)
    assert f"HOST://127.0.0.1:{host_port}" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")


class _NoEngine:
    """Stands in for testcontainers' Docker client: configuring a container needs no engine."""

    def __init__(self, **_: object) -> None:
        pass


def test_testcontainers_kafka_fallback_configures_the_apache_image_without_an_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import testcontainers.core.container

    monkeypatch.setattr(testcontainers.core.container, "DockerClient", _NoEngine)
    kafka = services.kafka_container(host_port=39092)
    assert kafka.image.endswith(f"apache/kafka:{IMAGE_TAGS['kafka']}")
    assert kafka.ports == {"9092": 39092}
    env = kafka.env
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "HOST://localhost:39092"
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    assert listeners == {"HOST": ":9092", "CONTROLLER": ":9093"}
    voter_port = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].rsplit(":", 1)[1]
    assert listeners[env["KAFKA_CONTROLLER_LISTENER_NAMES"]] == f":{voter_port}"
    mapped = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert mapped.keys() == listeners.keys()


def _compose_header_commands() -> str:
    """The commands in docker-compose.yml's opening comment (continuation lines joined)."""
    lines = []
    for line in COMPOSE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.removeprefix("#").strip())
    start = next(i for i, line in enumerate(lines) if line.startswith("export "))
    commands = []
    for line in lines[start:]:
        if not line:
            break
        commands.append(line)
    return "\n".join(commands)


@pytest.mark.parametrize("where", ["README", "docker-compose.yml"])
def test_the_documented_key_lines_make_a_keys_file_both_services_accept(
    where: str, tmp_path: Path
) -> None:
    """Runs the setup lines up to ``docker compose up`` (no Docker engine here, so neither it
    nor the ``ca4 verify`` after it is run), then reads the keys file as both services do."""
    if where == "README":
        section = readme_compose_section()
        script = section.split("```bash\n", 1)[1].split("```", 1)[0]
    else:
        script = _compose_header_commands()
        assert 'CA4_GRAFANA_PASSWORD="$GRAFANA_ADMIN_PASSWORD"' in script  # verify's login
        script = script.replace("<8+ characters>", "ca4dev-secret").replace("<yours>", "pw")
    runnable = "\n".join(
        line
        for line in script.splitlines()
        if not line.startswith(("docker compose", "uv run ca4", "CA4_GRAFANA_USER", "  uv run"))
    )
    done = run_as_bash(
        f"{runnable}\nprintf '%s' \"$CA4_API_KEY\"", cwd=tmp_path, check=True, timeout=60
    )
    key = done.stdout

    ring = ApiKeyRing.configured(
        environment="prod", inline_hashes="", keys_file=tmp_path / ".api-keys"
    )
    identified = ring.identify(key)
    assert identified is not None
    assert identified.tenant == "me"
    assert identified.scopes == {Scope.WRITE, Scope.READ}


def test_compose_kafka_keeps_its_log_on_the_data_volume() -> None:
    """Unset, the apache/kafka image logs to /tmp/kraft-combined-logs in the container, and
    every re-creation (``docker compose down``, a changed setting) emptied Kafka."""
    kafka = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]["kafka"]
    mounts = dict(volume.split(":", 1)[::-1] for volume in kafka["volumes"])
    assert mounts[kafka["environment"]["KAFKA_LOG_DIRS"]] == "kafka-data"


def _jmx_agent_script(agent_dir: Path, pinned: str) -> str:
    """The one-shot's script as the container's shell gets it (compose's ``$$`` is ``$``),
    with the volume at ``agent_dir`` and ``pinned`` for the sha256 it checks against."""
    [_, _, script] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"][
        "kafka-jmx-agent"
    ]["command"]
    assert JMX_EXPORTER_AGENT.sha256 in script
    assert JMX_EXPORTER_AGENT.url in script
    return (
        script.replace("$$", "$")
        .replace("/agent/", f"{agent_dir}/")
        .replace(JMX_EXPORTER_AGENT.sha256, pinned)
    )


@pytest.mark.parametrize(
    ("present", "served", "ok"),
    [
        (None, b"the agent", True),
        (b"the ag", b"the agent", True),  # a download cut short, from an earlier run
        (b"the agent", None, True),  # nothing fetched again
        (None, b"a proxy's error page", False),
    ],
    ids=["fresh", "truncated", "already-there", "wrong-file"],
)
def test_compose_jmx_agent_one_shot_keeps_only_the_pinned_jar(
    tmp_path: Path, present: bytes | None, served: bytes | None, ok: bool
) -> None:
    agent, bin_dir = tmp_path / "agent", tmp_path / "bin"
    agent.mkdir()
    bin_dir.mkdir()
    jar = agent / "jmx_prometheus_javaagent.jar"
    if present is not None:
        jar.write_bytes(present)
    fetches = tmp_path / "fetches"
    curl = bin_dir / "curl"  # stands in for Maven Central: writes the -o file
    curl.write_text(
        '#!/bin/sh\necho "$@" >> "$FETCHES"\nwhile [ "$1" != -o ]; do shift; done\n'
        'printf %s "$SERVED" > "$2"\n'
    )
    curl.chmod(0o755)
    script = _jmx_agent_script(agent, hashlib.sha256(b"the agent").hexdigest())

    done = subprocess.run(
        ["sh", "-c", script],
        env={
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "FETCHES": str(fetches),
            "SERVED": (served or b"").decode(),
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert (done.returncode == 0) is ok, done.stderr
    assert sorted(path.name for path in agent.iterdir()) == (
        ["jmx_prometheus_javaagent.jar"] if ok else []
    )
    if ok:
        assert jar.read_bytes() == b"the agent"
    assert fetches.exists() is (served is not None)
