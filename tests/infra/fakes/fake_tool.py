"""A stand-in for terraform, ssh, kubectl, helm, ngrok, uv, curl, git and the image tools (docker,
podman, buildah) that records every call.

Installed under each tool's name (a copy whose first line points at this interpreter). Each call
appends one JSON line ``{"tool": ..., "argv": [...], "stdin": ...}`` to ``$CA4_FAKE_LOG``. ``ssh``
keeps per-host state in ``$CA4_FAKE_STATE`` so that a second bootstrap sees K3s installed (the
file holds the node's cluster: the server it was installed on with ``--cluster-init``, or the
cluster of the server it joined; ``k3s.yaml`` names that cluster's CA), and
resolves its options with the real ``ssh -G`` (``$CA4_REAL_SSH``) for the target and, as OpenSSH
does for a ProxyJump hop (``ssh -F CONFIG -W``: command-line ``-o``/``-i`` are not passed on),
for the hop: a host that would prompt for its key, or a hop without the operator's identity,
fails the call the way the real ssh would (exit 255), and the resolved policy is recorded.
``helm template`` runs the real helm (``$CA4_REAL_HELM``), so a recipe reads the chart as it
renders; ``kubectl get secret`` answers from the Secrets ``kubectl apply -f -`` applied (a
``create secret generic --dry-run=client`` manifest), else ``$CA4_FAKE_SECRETS`` (JSON:
``"namespace/name"`` -> ``{key: value}``: the cluster before the test), through the go-templates
the recipes use.

``terraform`` keeps its data dir where the real one does (``$TF_DATA_DIR``, else the stack's
``.terraform``, stood in for by ``$CA4_FAKE_STATE/stack-dot-terraform`` so no test writes into the
checkout): ``init`` records the backend there, ``output`` fails as the real one does when the dir
holds none, and otherwise answers from the state at the recorded key (``ca4/<ENV>/...``; a
backend recorded without a key is the ENV under test's, ``$CA4_ENV``): its ``environment`` output
is that ENV, and ``$CA4_FAKE_TF_OUTPUTS`` (JSON) overrides the others. ``show -json PLAN`` prints
``$CA4_FAKE_TF_PLAN``, else a plan that changes nothing. Each terraform call records the state key
it read (``state``) and the data dir (``data_dir``).
``uv run python SCRIPT`` runs SCRIPT with this interpreter (the project's checks); other ``uv``
calls are only recorded. ``aws`` fails, as the real one does, without a region.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

K3S_VERSION = os.environ.get("CA4_K3S_VERSION", "v1.33.5+k3s1")
OUTPUTS = {
    "bastion_public_ip": "203.0.113.10",
    "ssh_user": "ubuntu",
    "k3s_server_private_ips": ["10.40.10.11"],
    "k3s_agent_private_ips": ["10.40.11.21", "10.40.10.22"],
    "archive_bucket_name": "ca4-dev-archive-123456789012",
    "archive_bucket_region": "eu-west-1",
    "aws_region": "eu-west-1",
    "documentdb_endpoint": "ca4-dev.cluster-c1x2y3.eu-west-1.docdb.amazonaws.com",
    "documentdb_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!cluster-1",
}
# What ``terraform show -json PLAN`` prints without ``$CA4_FAKE_TF_PLAN``: nothing to change.
NO_CHANGES_PLAN = json.dumps(
    {"format_version": "1.2", "terraform_version": "1.11.4", "resource_changes": []}
)
# What the fake Secrets Manager holds for the master user (the app user's secret is created).
MASTER_SECRET = '{"username":"ca4admin","password":"master-pw-never-in-argv"}'
# The commit the fake git reports: the image tag is its first 12 digits.
FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"
# Where the fake cluster runs each broker: an agent, not the first server.
KAFKA_POD_NODE = "10.40.11.21"
SSH_VALUE_OPTIONS = {"-o", "-J", "-i", "-F", "-L", "-R", "-D", "-p", "-l", "-S", "-O"}
# The platform an image tool builds for without --platform: an Apple Silicon laptop's.
HOST_PLATFORM = "linux/arm64"
# What ssh -G reports, per option, that decides whether a connection can prompt or authenticate.
SSH_POLICY_KEYS = ("batchmode", "stricthostkeychecking", "userknownhostsfile", "identityfile")


def _record(tool: str, argv: list[str], stdin: str, **extra: object) -> None:
    with Path(os.environ["CA4_FAKE_LOG"]).open("a", encoding="utf-8") as log:
        log.write(json.dumps({"tool": tool, "argv": argv, "stdin": stdin, **extra}) + "\n")


def _resolved(ssh_args: list[str], host: str) -> dict[str, list[str]]:
    """The options the real ssh would use for ``host`` (``ssh -G``, no connection)."""
    out = subprocess.run(
        [os.environ["CA4_REAL_SSH"], "-G", *ssh_args, host],
        capture_output=True,
        text=True,
        check=True,
        env={"HOME": os.environ["HOME"], "PATH": "/usr/bin:/bin"},
    ).stdout
    resolved: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        resolved.setdefault(key, []).append(value)
    return {key: resolved.get(key, []) for key in (*SSH_POLICY_KEYS, "proxyjump")}


def _ssh_policy(argv: list[str], host: str) -> dict[str, dict[str, list[str]]]:
    """Resolved policy of the target and of its ProxyJump hop, as OpenSSH builds the hop."""
    option_args: list[str] = []
    config: list[str] = []
    rest = iter(argv)
    for arg in rest:
        if arg in {"-o", "-J", "-i", "-F"}:
            value = next(rest)
            option_args += [arg, value]
            if arg == "-F":
                config = ["-F", value]
        elif arg in SSH_VALUE_OPTIONS:
            next(rest)
        elif not arg.startswith("-"):
            break
    policy = {"target": _resolved(option_args, host)}
    # ssh -G prints the jump host in brackets (user@[host]); the hop resolves the bare name.
    jump = [j.replace("[", "").replace("]", "") for j in policy["target"]["proxyjump"]]
    policy["target"]["proxyjump"] = jump
    if jump:
        policy["hop"] = _resolved(config, jump[0])
    return policy


def _refusal(policy: dict[str, dict[str, list[str]]]) -> str | None:
    """Why the real ssh would stop (a host-key prompt, a hop without the identity), or None."""
    identity = os.environ.get("CA4_SSH_IDENTITY")
    for side, resolved in policy.items():
        interactive = resolved["batchmode"] != ["yes"]
        asks = resolved["stricthostkeychecking"] not in (["accept-new"], ["yes"])
        if interactive and asks:
            return f"{side}: the host-key prompt waits for an answer (non-interactive run hangs)"
        offered = {Path(f).expanduser() for f in resolved["identityfile"]}
        if identity and Path(identity) not in offered:
            return f"{side}: Permission denied (publickey): {identity} not offered"
    return None


def _tf_data_dir() -> Path:
    """Where terraform keeps its backend: ``$TF_DATA_DIR``, else the stack's own ``.terraform``."""
    found = os.environ.get("TF_DATA_DIR")
    return Path(found) if found else Path(os.environ["CA4_FAKE_STATE"]) / "stack-dot-terraform"


def _tf_state_key() -> str | None:
    """The state key the data dir's backend points at, None when it was never initialised."""
    backend = _tf_data_dir() / "terraform.tfstate"
    if not backend.exists():
        return None
    config = json.loads(backend.read_text())["backend"]["config"]
    return str(config.get("key") or f"ca4/{os.environ.get('CA4_ENV', 'dev')}/terraform.tfstate")


def tf_backend(key: str | None = None) -> str:
    """The data dir's record of its backend (the real one's shape), as ``init`` writes it."""
    config = {"bucket": "ca4-tfstate-test", "region": "eu-west-1"} | ({"key": key} if key else {})
    return json.dumps({"version": 3, "backend": {"type": "s3", "config": config}}, indent=2)


def _terraform(argv: list[str]) -> None:
    if "init" in argv:
        settings = dict(
            a.removeprefix("-backend-config=").split("=", 1)
            for a in argv
            if a.startswith("-backend-config=")
        )
        _tf_data_dir().mkdir(parents=True, exist_ok=True)
        (_tf_data_dir() / "terraform.tfstate").write_text(tf_backend(settings.get("key")))
    elif "show" in argv:
        print(os.environ.get("CA4_FAKE_TF_PLAN", NO_CHANGES_PLAN))
    elif "output" in argv:
        key = _tf_state_key()
        if key is None:
            print(
                '\u2502 Error: Backend initialization required, please run "terraform init"',
                file=sys.stderr,
            )
            sys.exit(1)
        outputs = {**OUTPUTS, "environment": key.split("/")[1]}
        outputs |= json.loads(os.environ.get("CA4_FAKE_TF_OUTPUTS", "{}"))
        name = argv[-1]
        if name not in outputs:
            print(f'\u2502 Error: Output "{name}" not found', file=sys.stderr)
            sys.exit(1)
        value = outputs[name]
        print(json.dumps(value) if "-json" in argv else value, end="")


def _ssh_target(argv: list[str]) -> tuple[str, list[str]]:
    """The destination and the remote command of an ssh command line."""
    rest = iter(argv)
    for arg in rest:
        if arg in SSH_VALUE_OPTIONS:
            next(rest)
        elif not arg.startswith("-"):
            return arg, list(rest)
    return "", []


def _ssh(argv: list[str], stdin: str) -> None:
    host, command = _ssh_target(argv)
    policy = _ssh_policy(argv, host)
    _record("ssh", argv, stdin, policy=policy)
    refusal = _refusal(policy)
    if refusal:
        print(refusal, file=sys.stderr)
        sys.exit(255)
    remote = " ".join(command)
    state = Path(os.environ["CA4_FAKE_STATE"]) / host.replace("@", "_")
    if host.split("@")[-1] in os.environ.get("CA4_FAKE_SSH_UNREACHABLE", "").split():
        print(f"ssh: connect to host {host.split('@')[-1]} port 22: Connection timed out")
        sys.exit(255)
    if "k3s --version" in remote:
        if state.exists():
            print(K3S_VERSION)
    elif "INSTALL_K3S_VERSION" in remote:
        state.write_text(_k3s_cluster(state, remote))
    elif "images ls name==" in remote:
        # `ctr images ls`: REF TYPE DIGEST SIZE PLATFORMS LABELS (SIZE holds a space)
        ref = remote.split("name==", 1)[1].split()[0]
        print("REF TYPE DIGEST SIZE PLATFORMS LABELS")
        for line in _lines(state.parent / f"{state.name}.images"):
            imported, platform = line.split()
            if imported == ref:
                manifest = "application/vnd.docker.distribution.manifest.v2+json"
                print(f"{ref} {manifest} sha256:{'0' * 64} 101.2 MiB {platform} -")
    elif "images import" in remote:
        _, ref, platform = stdin.split()
        with (state.parent / f"{state.name}.images").open("a", encoding="utf-8") as images:
            images.write(f"{ref} {platform}\n")
    elif remote == "uname -m":
        print(os.environ.get("CA4_FAKE_NODE_MACHINE", "x86_64"))
    elif "/dev/tcp/" in remote:
        # db-user.sh's probe of DocumentDB from the node the tunnel goes through
        if os.environ.get("CA4_FAKE_DB_UNREACHABLE"):
            sys.exit(124)
    elif "node-token" in remote:
        print("K10fake::server:token")
    elif "k3s.yaml" in remote:
        cluster = state.read_text() if state.exists() else "none"
        ca = base64.b64encode(f"fake-ca:{cluster}".encode()).decode()
        print(
            f"apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n"
            "    server: https://127.0.0.1:6443\n  name: default"
        )


def _k3s_cluster(state: Path, remote: str) -> str:
    """The cluster a K3s install puts the node in: the one of the server ``--server`` names,
    which must run K3s (else the join fails, as the real one does), or its own new one."""
    if "--server=https://" not in remote:
        return state.name.split("_", 1)[1]
    server = remote.split("--server=https://", 1)[1].split(":", 1)[0]
    joined = state.parent / f"{state.name.split('_', 1)[0]}_{server}"
    if not joined.exists():
        print(f"[ERROR] cannot join https://{server}:6443: connection refused", file=sys.stderr)
        sys.exit(1)
    return joined.read_text()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _image_tool(argv: list[str]) -> None:
    """docker/podman/buildah: build (or bud) records the image and the platform it was built for
    (``--platform``, else the host's, ``$CA4_FAKE_BUILD_PLATFORM`` when a builder ignores the
    flag); inspect prints it (``--format``); save and push write a tiny archive naming both."""
    built = Path(os.environ["CA4_FAKE_STATE"]) / "built-images"
    images = dict(line.split() for line in _lines(built))
    if argv[:2] in (["image", "inspect"], ["inspect", "--type"]):
        if argv[-1] not in images:
            print(f"Error: No such image: {argv[-1]}", file=sys.stderr)
            sys.exit(1)
        if "--format" in argv:
            print(images[argv[-1]])
        return
    if argv[0] in {"build", "bud"}:
        platform = argv[argv.index("--platform") + 1] if "--platform" in argv else HOST_PLATFORM
        platform = os.environ.get("CA4_FAKE_BUILD_PLATFORM", platform)
        images[argv[argv.index("-t") + 1]] = "/".join(platform.split("/")[:2])
        built.write_text("".join(f"{ref} {plat}\n" for ref, plat in images.items()))
    elif argv[0] == "save":
        ref = argv[-1]
        Path(argv[argv.index("-o") + 1]).write_text(f"docker-archive {ref} {images[ref]}\n")
    elif argv[0] == "push":
        ref = argv[1]
        Path(argv[-1].split(":")[1]).write_text(f"docker-archive {ref} {images[ref]}\n")


def _aws(argv: list[str], stdin: str) -> None:
    """secretsmanager get-secret-value / create-secret, the app secret kept in the state dir;
    ``$CA4_FAKE_AWS_ERROR`` is the error code reading the app secret fails with."""
    if "--region" not in argv and not (
        os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    ):
        print(
            'You must specify a region. You can also configure your region by running "aws '
            'configure".',
            file=sys.stderr,
        )
        sys.exit(253)
    app_secret = Path(os.environ["CA4_FAKE_STATE"]) / "app-db-secret"
    if "get-secret-value" in argv:
        secret_id = argv[argv.index("--secret-id") + 1]
        if secret_id.startswith("arn:"):
            print(MASTER_SECRET)
        elif os.environ.get("CA4_FAKE_AWS_ERROR"):
            code = os.environ["CA4_FAKE_AWS_ERROR"]
            print(
                f"An error occurred ({code}) when calling the GetSecretValue operation: "
                "fake refusal",
                file=sys.stderr,
            )
            sys.exit(254)
        elif app_secret.exists():
            print(app_secret.read_text())
        else:
            print("An error occurred (ResourceNotFoundException)", file=sys.stderr)
            sys.exit(254)
    elif "create-secret" in argv:
        app_secret.write_text(stdin)


def _git(argv: list[str]) -> None:
    if "rev-parse" in argv:
        print(FAKE_COMMIT[:12])
    elif "status" in argv:
        print(os.environ.get("CA4_FAKE_GIT_STATUS", ""), end="")


def _curl(argv: list[str]) -> None:
    """``curl -o FILE URL``: FILE gets ``$CA4_FAKE_DOWNLOADS/<last path segment of URL>``."""
    target = Path(argv[argv.index("-o") + 1])
    name = argv[-1].rstrip("/").rsplit("/", 1)[-1]
    source = Path(os.environ["CA4_FAKE_DOWNLOADS"]) / name
    if not source.exists():
        print(f"curl: (22) The requested URL returned error: 404 ({argv[-1]})", file=sys.stderr)
        sys.exit(22)
    target.write_bytes(source.read_bytes())


def _port_forward(argv: list[str]) -> None:
    """Announce the stub port ``$CA4_FAKE_FORWARDS`` maps the Service to, then hold it open."""
    service = next(a for a in argv if a.startswith("svc/"))
    ports = json.loads(os.environ["CA4_FAKE_FORWARDS"])
    if service not in ports:
        print(f'error: services "{service[4:]}" not found', file=sys.stderr)
        sys.exit(1)
    pids = Path(os.environ["CA4_FAKE_STATE"]) / "port-forward.pids"
    with pids.open("a", encoding="utf-8") as out:
        out.write(f"{os.getpid()}\n")
    remote = next(a for a in argv if a.startswith(":"))[1:]
    print(f"Forwarding from 127.0.0.1:{ports[service]} -> {remote}", flush=True)
    time.sleep(3600)


def _exec(argv: list[str]) -> None:
    """kubectl exec: the Kafka console consumer or the worker's database lookup, answered from
    the event the stub processor accepted (``$CA4_FAKE_STATE/accepted.json``)."""
    accepted = Path(os.environ["CA4_FAKE_STATE"]) / "accepted.json"
    event = json.loads(accepted.read_text()) if accepted.exists() else None
    command = " ".join(argv)
    if "kafka-console-consumer.sh" in command:
        if event is not None:
            body = json.dumps({"event_id": event["event_id"]})
            print(f"Offset:{event['offset']}\t{body}")
    elif "pymongo" in command:
        found = None
        if event is not None:
            found = {"_id": event["event_id"], "partition": 0, "offset": event["offset"]}
        print(json.dumps(found))


def _from_files(argv: list[str]) -> dict[str, dict[str, str]]:
    """``kubectl create secret|configmap --from-file=[KEY=]PATH``: what the object would hold, read
    while the recipe's files exist, so tests can check it (this log is the tests' only)."""
    files: dict[str, str] = {}
    for arg in argv:
        if not arg.startswith("--from-file="):
            continue
        key, _, path = arg.removeprefix("--from-file=").rpartition("=")
        source = Path(path)
        if source.is_dir():
            files |= {f.name: f.read_text() for f in sorted(source.iterdir()) if f.is_file()}
        else:
            files[key or source.name] = source.read_text()
    return {"files": files} if files else {}


def _helm_template(argv: list[str]) -> None:
    """Render with the real helm: the recipes read the receivers and Secrets from the chart."""
    real = os.environ.get("CA4_REAL_HELM")
    if not real:
        return
    result = subprocess.run([real, *argv], capture_output=True, text=True, check=False)
    print(result.stdout, end="")
    print(result.stderr, end="", file=sys.stderr)
    sys.exit(result.returncode)


def _applied_secrets() -> Path:
    """The Secrets ``kubectl apply`` wrote: JSON, ``"namespace/name"`` -> ``{key: value}``."""
    return Path(os.environ["CA4_FAKE_STATE"]) / "applied-secrets.json"


def _dry_run(argv: list[str], extra: dict[str, object]) -> None:
    """``kubectl create ... --dry-run=client -o yaml``: a Secret's manifest (JSON, which is YAML;
    the values as they are, not base64), for ``kubectl apply -f -`` to store; anything else a
    stand-in object."""
    if argv[argv.index("create") + 1 : argv.index("create") + 3] != ["secret", "generic"]:
        print("apiVersion: v1\nkind: Object")
        return
    namespace = argv[argv.index("-n") + 1] if "-n" in argv else "default"
    name = argv[argv.index("generic") + 1]
    data = extra.get("files", {})
    metadata = {"name": name, "namespace": namespace}
    print(json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "data": data}))


def _apply(stdin: str) -> None:
    """``kubectl apply -f -``: a Secret from ``_dry_run`` is what ``get secret`` answers next."""
    try:
        manifest = json.loads(stdin)
    except json.JSONDecodeError:
        return
    if manifest.get("kind") != "Secret":
        return
    store = _applied_secrets()
    secrets = json.loads(store.read_text()) if store.exists() else {}
    metadata = manifest["metadata"]
    secrets[f"{metadata['namespace']}/{metadata['name']}"] = manifest["data"]
    store.write_text(json.dumps(secrets))


def _get_secret(argv: list[str]) -> None:
    """``kubectl -n NS get secret NAME --ignore-not-found -o go-template=...``: the Secret's name
    and key names, or one key's decoded value, as the recipes' templates print them."""
    namespace = argv[argv.index("-n") + 1] if "-n" in argv else "default"
    name = argv[argv.index("secret") + 1]
    secrets = json.loads(os.environ.get("CA4_FAKE_SECRETS", "{}"))
    if _applied_secrets().exists():
        secrets |= json.loads(_applied_secrets().read_text())
    data: dict[str, str] | None = secrets.get(f"{namespace}/{name}")
    if data is None:
        if "--ignore-not-found" not in argv:
            print(f'Error from server (NotFound): secrets "{name}" not found', file=sys.stderr)
            sys.exit(1)
        return
    template = argv[argv.index("-o") + 1].removeprefix("go-template=")
    if "base64decode" in template:  # {{with index . "KEY"}}{{base64decode .}}{{end}}
        key = template.split("index . ", 1)[1].split('"')[1]
        print(data.get(key, ""), end="")
    else:  # {{.metadata.name}} then one key name per line
        print(name)
        for key in sorted(data):
            print(key)


def _uv(argv: list[str], stdin: str) -> None:
    """``uv run python SCRIPT ARGS``: the project's own check, run for real (its packages are
    this interpreter's); anything else ``uv`` runs is only recorded."""
    if argv[:2] == ["run", "python"]:
        result = subprocess.run([sys.executable, *argv[2:]], input=stdin, text=True, check=False)
        sys.exit(result.returncode)


def main() -> None:
    tool = Path(sys.argv[0]).name
    argv = sys.argv[1:]
    stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    if tool == "ssh":
        _ssh(argv, stdin)
        return
    extra: dict[str, object] = {}
    if tool == "kubectl":
        extra.update(_from_files(argv))
    elif tool == "terraform":
        extra = {"state": _tf_state_key(), "data_dir": str(_tf_data_dir())}
    elif tool == "aws":
        extra = {"region": argv[argv.index("--region") + 1] if "--region" in argv else None}
    _record(tool, argv, stdin, **extra)
    if tool == "terraform":
        _terraform(argv)
    elif tool == "helm" and argv[:1] == ["template"]:
        _helm_template(argv)
    elif tool == "kubectl" and "get" in argv and "secret" in argv:
        _get_secret(argv)
    elif tool == "kubectl" and "--dry-run=client" in argv:
        _dry_run(argv, extra)
    elif tool == "kubectl" and argv[-2:] == ["-f", "-"] and "apply" in argv:
        _apply(stdin)
    elif tool == "curl":
        _curl(argv)
    elif tool == "git":
        _git(argv)
    elif tool == "aws":
        _aws(argv, stdin)
    elif tool == "uv":
        _uv(argv, stdin)
    elif tool in {"docker", "podman", "buildah"}:
        _image_tool(argv)
    elif tool == "kubectl" and "port-forward" in argv:
        _port_forward(argv)
    elif tool == "kubectl" and "exec" in argv:
        _exec(argv)
    elif tool == "kubectl" and "jsonpath={.status.hostIP}" in argv:
        print(KAFKA_POD_NODE, end="")
    elif tool == "kubectl" and "jsonpath={.spec.replicas}" in argv:
        print(os.environ.get("FAKE_KAFKA_BROKERS", "1"), end="")


if __name__ == "__main__":
    main()
