"""A stand-in for terraform, ssh, kubectl, helm, ngrok and uv that records every call.

Installed under each tool's name (a copy whose first line points at this interpreter). Each call
appends one JSON line ``{"tool": ..., "argv": [...], "stdin": ...}`` to ``$CA4_FAKE_LOG``. ``ssh``
keeps per-host state in ``$CA4_FAKE_STATE`` so that a second bootstrap sees K3s installed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

K3S_VERSION = os.environ.get("CA4_K3S_VERSION", "v1.33.5+k3s1")
OUTPUTS = {
    "bastion_public_ip": "203.0.113.10",
    "ssh_user": "ubuntu",
    "k3s_server_private_ips": ["10.40.10.11"],
    "k3s_agent_private_ips": ["10.40.11.21", "10.40.10.22"],
    "archive_bucket_name": "ca4-dev-archive-123456789012",
    "archive_bucket_region": "eu-west-1",
}
# Where the fake cluster runs each broker: an agent, not the first server.
KAFKA_POD_NODE = "10.40.11.21"
SSH_VALUE_OPTIONS = {"-o", "-J", "-i", "-F", "-L", "-R", "-D", "-p", "-l"}


def _record(tool: str, argv: list[str], stdin: str) -> None:
    with Path(os.environ["CA4_FAKE_LOG"]).open("a", encoding="utf-8") as log:
        log.write(json.dumps({"tool": tool, "argv": argv, "stdin": stdin}) + "\n")


def _terraform(argv: list[str]) -> None:
    if "output" in argv:
        name = argv[-1]
        value = OUTPUTS[name]
        print(json.dumps(value) if "-json" in argv else value, end="")


def _ssh(argv: list[str]) -> None:
    rest = iter(argv)
    host, command = "", []
    for arg in rest:
        if arg in SSH_VALUE_OPTIONS:
            next(rest)
        elif arg.startswith("-"):
            continue
        else:
            host, command = arg, list(rest)
            break
    remote = " ".join(command)
    state = Path(os.environ["CA4_FAKE_STATE"]) / host.replace("@", "_")
    if "k3s --version" in remote:
        if state.exists():
            print(K3S_VERSION)
    elif "INSTALL_K3S_VERSION" in remote:
        state.write_text("installed")
    elif "node-token" in remote:
        print("K10fake::server:token")
    elif "k3s.yaml" in remote:
        print(
            "apiVersion: v1\nclusters:\n- cluster:\n"
            "    server: https://127.0.0.1:6443\n  name: default"
        )


def main() -> None:
    tool = Path(sys.argv[0]).name
    argv = sys.argv[1:]
    stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    _record(tool, argv, stdin)
    if tool == "terraform":
        _terraform(argv)
    elif tool == "ssh":
        _ssh(argv)
    elif tool == "kubectl" and "--dry-run=client" in argv:
        print("apiVersion: v1\nkind: Object")
    elif tool == "kubectl" and "jsonpath={.status.hostIP}" in argv:
        print(KAFKA_POD_NODE, end="")


if __name__ == "__main__":
    main()
