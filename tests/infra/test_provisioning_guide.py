"""docs/provisioning.md says what the charts and scripts do: the names an operator types (the
Grafana admin Secret, its Service, the TLS Secret, the Terraform output of the NLB) are the ones
the charts render, and the database URL it documents reads from the primary."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import yaml
from ca4_auth import ApiKey, ApiKeyRing, Scope

from tests.infra.conftest import REPO, Rendered, chart_dir

GUIDE = (REPO / "docs" / "provisioning.md").read_text()


def section(title_start: str) -> str:
    """The text of the guide's section whose heading starts with ``title_start``."""
    match = re.search(rf"^(#+) {re.escape(title_start)}.*?$", GUIDE, re.M)
    assert match, f"no section {title_start!r} in docs/provisioning.md"
    level = len(match.group(1))
    rest = GUIDE[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest[: end.start()] if end else rest


def test_documentdb_url_reads_from_the_primary() -> None:
    """The worker reads back what it has just written: a secondary may not have it yet."""
    assert "readPreference" not in GUIDE
    assert "replicaSet=rs0&retryWrites=false" in section("7. `make ca4-deploy-app`")


def test_db_user_step_tunnels_through_a_k3s_server() -> None:
    step = section("4. `make ca4-db-user`")
    assert "first K3s server" in step
    assert "via the bastion" not in step
    assert "k3s_nodes" in step
    assert "does not answer TCP" in step


def test_public_edge_steps_name_what_the_prod_chart_uses(rendered: Rendered) -> None:
    (ingress,) = [d for d in rendered[("ca4-app", "prod")] if d["kind"] == "Ingress"]
    (tls,) = ingress["spec"]["tls"]
    namespace = ingress["metadata"]["namespace"]
    edge = section("The public edge")
    assert f"kubectl -n {namespace} create secret tls {tls['secretName']}" in edge
    # The plain `terraform output` fails since each ENV has its own data dir; the script reads it.
    assert "CA4_ENV=<env> tools/provision/scripts/tf-output.sh ingress_dns_name" in edge
    assert "terraform -chdir" not in edge
    assert "CNAME" in edge
    assert "CA4_INGRESS_HOST=" in edge
    # dev: Traefik's self-signed certificate, and the documented way around it for Colab
    dev = yaml.safe_load((chart_dir("ca4-app") / "values-dev.yaml").read_text())
    assert not dev.get("ingress", {}).get("tlsSecretName")
    assert "self-signed" in edge
    assert "Colab" in edge
    assert "make dev-ngrok" in edge
    assert "`make dev-ngrok`" in section("Development mode")


def test_grafana_token_steps_name_what_the_platform_chart_renders(rendered: Rendered) -> None:
    docs = rendered[("ca4-platform", "prod")]
    (deployment,) = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "grafana"
    ]
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env["GF_SECURITY_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]
    namespace = deployment["metadata"]["namespace"]
    (secret,) = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == ref["name"]]
    assert ref["key"] in secret["data"]
    assert base64.b64decode(secret["data"][ref["key"]])
    (service,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "grafana"]
    port = service["spec"]["ports"][0]["port"]
    token = section("`CA4_GRAFANA_TOKEN`")
    user = env["GF_SECURITY_ADMIN_USER"]["value"]
    assert f"kubectl -n {namespace} get secret {ref['name']}" in token
    assert f"{{.data.{ref['key']}}}" in token
    assert f"kubectl -n {namespace} port-forward svc/grafana {port}:{port}" in token
    assert f'-u "{user}:${{pw}}"' in token
    assert '{"name": "ca4-verify", "role": "Viewer"}' in token
    assert f"http://127.0.0.1:{port}/api/serviceaccounts" in token
    assert "/tokens" in token
    assert "export CA4_GRAFANA_TOKEN=" in token


def test_the_key_making_lines_give_an_entry_both_services_accept(tmp_path: Path) -> None:
    """Step 7's two lines, run as written (key id ``colab``, tenant ``acme``), then read by the
    services' own key parser, as the pods read the Secret's keys file."""
    step = section("7. `make ca4-deploy-app`")
    make_key, make_entry = re.findall(r"`(key=\$\(python3 [^`]+|printf '%s:%s:%s[^`]+)`", step)
    script = "\n".join(
        [
            make_key,
            make_entry.replace("<key id>", "colab").replace("<tenant>", "acme"),
            'echo "$key"',
        ]
    )
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    entry, key = done.stdout.splitlines()
    (tmp_path / "api-keys").write_text(entry + "\n")
    ring = ApiKeyRing.configured(
        environment="prod", inline_hashes="", keys_file=tmp_path / "api-keys"
    )
    assert ring.identify(key) == ApiKey("colab", "acme", frozenset({Scope.WRITE, Scope.READ}))
