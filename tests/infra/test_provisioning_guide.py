"""docs/provisioning.md says what the charts and scripts do: the names an operator types (the
Grafana admin Secret, its Service, the TLS Secret, the Terraform output of the NLB) are the ones
the charts render, and the database URL it documents reads from the primary."""

from __future__ import annotations

import base64
import importlib.util
import re
from pathlib import Path

import yaml
from ca4_auth import ApiKey, ApiKeyRing, Scope

from tests.infra.conftest import KUBE_VERSION, REPO, Rendered, chart_dir, make_default, run
from tests.infra.test_terraform import TF_ROOT, variables
from tests.support.doc_commands import run_as_bash

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
    done = run_as_bash(script, check=True, timeout=60)
    entry, key = done.stdout.splitlines()
    (tmp_path / "api-keys").write_text(entry + "\n")
    ring = ApiKeyRing.configured(
        environment="prod", inline_hashes="", keys_file=tmp_path / "api-keys"
    )
    assert ring.identify(key) == ApiKey("colab", "acme", frozenset({Scope.WRITE, Scope.READ}))


def needs_row(first_cell_holds: str) -> list[str]:
    """The cells of the "What you need" row whose first cell holds ``first_cell_holds``."""
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in section("What you need").splitlines()
        if line.startswith("| ") and first_cell_holds in line.split("|")[1]
    ]
    assert len(rows) == 1, f"no single row for {first_cell_holds!r} in What you need"
    return rows[0]


def test_what_you_need_names_the_make_and_bash_macos_lacks() -> None:
    """Apple's make 3.81 ignores .SHELLFLAGS and its bash 3.2 has no mapfile: both are named,
    with what to install, as mk/infra.mk and preflight.sh say when they refuse them."""
    make = needs_row("GNU `make` 3.82 or later")
    assert "`gmake` (`brew install make`)" in make[0]
    assert "3.81" in make[1]
    bash = needs_row("`bash` 4.4 or later")
    assert "first on `PATH`" in bash[0]
    assert "brew install bash" in bash[0]
    assert "`sha256sum`" in needs_row("`sha256sum`")[0]
    assert "brew install make, then run gmake" in (REPO / "mk" / "infra.mk").read_text()
    preflight = (REPO / "tools/provision/scripts/preflight.sh").read_text()
    assert "bash 4.4 or later first on PATH (macOS: brew install bash" in preflight


def test_uv_is_needed_from_the_first_step() -> None:
    """make ca4-apply checks the saved plan with `uv run`, which installs the workspace first."""
    uv = needs_row("`uv`")
    assert "ca4-apply" in uv[2].split(", ")
    assert "installs the workspace" in uv[1]
    assert "uv run python $(CA4_SCRIPTS)/check-tf-plan.py" in (REPO / "mk/infra.mk").read_text()


def test_the_heartbeat_is_documented_end_to_end() -> None:
    """How to turn it on (a values file as CA4_PLATFORM_VALUES), the file its URL comes from,
    its key in every list of the Secret's keys, and that the Secret is written whole."""
    receivers = needs_row("`CA4_ALERT_WEBHOOK_URL_FILE`")
    assert "`CA4_ALERT_HEARTBEAT_URL_FILE`" in receivers[0]
    heartbeat = section("Heartbeat")
    assert "CA4_PLATFORM_VALUES=" in heartbeat
    assert "heartbeat:\\n    enabled: true" in heartbeat
    assert "CA4_ALERT_HEARTBEAT_URL_FILE=" in heartbeat
    assert "CA4_ALERT_WEBHOOK_URL_FILE=" in heartbeat, "the other receivers' files again"
    assert "name a file for every enabled receiver" in heartbeat
    make = (REPO / "mk/infra.mk").read_text()
    assert "heartbeat-url=CA4_ALERT_HEARTBEAT_URL_FILE" in make
    assert "name a file for every enabled receiver" in make
    receivers_step = section("Alertmanager receivers")
    assert "`heartbeat-url` from\n   `CA4_ALERT_HEARTBEAT_URL_FILE`" in receivers_step
    assert "`smtp-password`, and\n  `heartbeat-url`" in section("6. `make ca4-platform-setup`")
    values = (chart_dir("ca4-platform") / "values.yaml").read_text()
    (existing,) = re.findall(r"^ *## @param alertmanager\.existingSecret (.*)$", values, re.M)
    assert "heartbeat-url" in existing
    assert "CA4_ALERT_HEARTBEAT_URL_FILE" in values.split("## @section Alertmanager")[1]


def test_the_quorum_check_runs_as_written(rendered: Rendered) -> None:
    """The check names the pod, the container and the script's path in the image, and a
    bootstrap address the broker listens on."""
    docs = rendered[("ca4-platform", "prod")]
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "kafka"]
    namespace = sts["metadata"]["namespace"]
    containers = sts["spec"]["template"]["spec"]["containers"]
    (container,) = [c for c in containers if c["name"] == "kafka"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "internal")
    (config,) = [d for d in docs if d["metadata"]["name"] == "kafka-config"]
    assert "/opt/kafka/bin/kafka-storage.sh" in config["data"]["start.sh"]
    command = (
        f"kubectl -n {namespace} exec kafka-0 -c {container['name']} -- "
        f"/opt/kafka/bin/kafka-metadata-quorum.sh --bootstrap-server localhost:{port} "
        "describe --status"
    )
    assert command in section("Changing `kafka.replicas`")


def test_the_topics_jobs_log_is_there_as_long_as_the_guide_says(rendered: Rendered) -> None:
    """A failed Job was deleted after 10 minutes, and `kubectl logs job/kafka-topics` with it."""
    (job,) = [
        d
        for d in rendered[("ca4-platform", "prod")]
        if d["kind"] == "Job" and d["metadata"]["name"] == "kafka-topics"
    ]
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400
    topics = section("Kafka topics and partitions")
    assert "`kubectl -n platform logs job/kafka-topics`, for a day after the\nfailure" in topics
    assert "`ttlSecondsAfterFinished: 86400`" in topics


def test_the_guide_warns_that_the_operator_key_is_one_per_environment() -> None:
    """Applying with another CA4_SSH_PUBLIC_KEY_FILE replaces the key pair, not the key on the
    running machines."""
    main = (REPO / "infra/terraform/stacks/ca4/main.tf").read_text()
    assert 'resource "aws_key_pair" "operator"' in main
    note = section("One SSH key per environment")
    assert "`aws_key_pair.operator`" in note
    assert "team's public key" in note
    assert "ssh -F .ca4/<ENV>/ssh_config ubuntu@" in note
    assert "One SSH key per environment" in needs_row("`CA4_SSH_PUBLIC_KEY_FILE`")[1]


def test_the_kafka_heap_the_guide_gives_is_the_chart_s() -> None:
    dev = yaml.safe_load((chart_dir("ca4-platform") / "values-dev.yaml").read_text())
    memory = section("Kafka memory")
    assert f"dev `{dev['kafka']['heapOpts']}`" in memory
    assert "`kafka.logCleanerDedupeBufferBytes`" in memory
    assert str(dev["kafka"]["logCleanerDedupeBufferBytes"]) in memory


ROOT_VARIABLES = variables(TF_ROOT / "stacks" / "ca4" / "variables.tf")


def test_the_terraform_variables_the_guide_names_can_be_set() -> None:
    """An operator sets the root stack's variables; the module table named the documentdb
    module's own `profiler_threshold_ms`, which no tfvars file can reach."""
    step = section("1. `make ca4-apply`")
    module_only = {
        name
        for folder in (TF_ROOT / "modules").iterdir()
        for name in variables(folder / "variables.tf")
        if name not in ROOT_VARIABLES
    }
    named = set(re.findall(r"`([a-z][a-z0-9_]+)`", step))
    assert named & module_only == set()
    exposed = {"documentdb_profiler_threshold_ms", "alert_smtp_ports", "kafka_tunnel_node_ports"}
    assert exposed <= named


def test_the_smarthost_port_is_one_the_nodes_may_reach() -> None:
    """The nodes' only SMTP egress is `alert_smtp_ports`: the guide's smarthost example uses one
    of them and says so wherever the smarthost is set."""
    ports = ROOT_VARIABLES["alert_smtp_ports"]["default"]
    example = re.search(r"CA4_ALERT_SMTP_SMARTHOST=<smtp host>:(\d+)", GUIDE)
    assert example
    assert int(example.group(1)) in ports
    assert f"`alert_smtp_ports` (default `{ports}`" in needs_row("`CA4_ALERT_SMTP_SMARTHOST`")[1]
    receivers = section("6. `make ca4-platform-setup`")
    assert "`alert_smtp_ports` (default `[587]`)" in receivers
    assert "SES interface VPC endpoint" in receivers


def test_the_tunnel_node_ports_cover_every_broker() -> None:
    """Broker N is NodePort nodePortBase + N; the security group opens kafka_tunnel_node_ports
    to the bastion: the default covers prod's brokers, and the guide gives the rule for more."""
    values = yaml.safe_load((chart_dir("ca4-platform") / "values.yaml").read_text())
    prod = yaml.safe_load((chart_dir("ca4-platform") / "values-prod.yaml").read_text())
    base = values["kafka"]["tunnel"]["nodePortBase"]
    replicas = prod["kafka"]["replicas"]
    kafka = (chart_dir("ca4-platform") / "templates" / "kafka.yaml").read_text()
    assert "nodePort: {{ add $k.tunnel.nodePortBase $i }}" in kafka
    ports = ROOT_VARIABLES["kafka_tunnel_node_ports"]["default"]
    assert ports == {"from": base, "to": base + replicas - 1}
    replicas_step = section("Changing `kafka.replicas`")
    assert "`kafka.tunnel.nodePortBase` + N" in replicas_step
    assert "`kafka_tunnel_node_ports`" in replicas_step
    assert "`to` = `nodePortBase` + `kafka.replicas` - 1" in replicas_step
    assert "`kafka_tunnel_node_ports = { from = 30094, to = 30098 }`" in replicas_step


def test_the_plain_helm_app_install_renders_as_written(helm: str) -> None:
    """Step 4 of "Installing the charts with plain Helm", placeholders filled in, as `helm
    template`: without ingress.host the prod values' TLS Secret refused the render."""
    plain = section("Installing the charts with plain Helm")
    (command,) = re.findall(r"`(helm upgrade --install ca4-app [^`]+)`", plain)
    filled = (
        command.replace("<tag>", "0a1b2c3d4e5f")
        .replace("<your archive bucket>", "acme-ca4-archive")
        .replace("<your domain>", "acme.test")
    )
    assert "<" not in filled, filled
    argv = filled.split()
    assert argv[:3] == ["helm", "upgrade", "--install"]
    result = run([helm, "template", *argv[3:], "--kube-version", KUBE_VERSION], cwd=REPO)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    (ingress,) = [d for d in docs if d["kind"] == "Ingress"]
    assert ingress["spec"]["tls"][0]["hosts"] == ["api.ca4.acme.test"]


def test_the_plain_helm_steps_make_the_ca_bundle_the_pods_mount(rendered: Rendered) -> None:
    """The prod pods mount the ConfigMap ca4-db-ca-bundle, which only `make ca4-deploy-app`
    made: after the documented steps they stayed ContainerCreating."""
    url, name, key = map(make_default, ["CA4_DB_CA_URL", "CA4_DB_CA_CONFIGMAP", "CA4_DB_CA_KEY"])
    mounted = {
        (v["configMap"]["name"], item["key"])
        for d in rendered[("ca4-app", "prod")]
        if d["kind"] == "Deployment"
        for v in d["spec"]["template"]["spec"].get("volumes", [])
        if "configMap" in v
        for item in v["configMap"].get("items", [{"key": key}])
    }
    assert (name, key) in mounted
    plain = section("Installing the charts with plain Helm")
    assert f"curl -sfL --proto '=https' -o {key} {url}" in plain
    assert f"kubectl -n app create configmap {name} --from-file={key}={key}" in plain


def test_the_plain_helm_steps_make_the_namespaces_the_platform_leaves_out(helm: str) -> None:
    """namespaces.create=false drops monitoring as well as app: the guide makes both, with the
    labels the chart gives them."""
    result = run(
        [
            *[helm, "template", "ca4-platform", str(chart_dir("ca4-platform"))],
            *["--namespace", "platform", "--kube-version", KUBE_VERSION],
            *["--show-only", "templates/namespaces.yaml"],
        ]
    )
    assert result.returncode == 0, result.stderr
    namespaces = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert {d["metadata"]["name"] for d in namespaces} == {"app", "monitoring"}
    plain = section("Installing the charts with plain Helm")
    assert "for ns in app monitoring; do" in plain
    for namespace in namespaces:
        for label, value in namespace["metadata"]["labels"].items():
            if label.startswith("pod-security.kubernetes.io/"):
                assert f"{label}={value}" in plain, label


def test_the_rewind_step_runs_without_the_pods_database_url() -> None:
    """`ca4 rewind` on the laptop reads the worker's settings, which refuse the prod URL (its CA
    bundle is in the pods only): the runbook unsets it, and quotes the line the command prints."""
    step = section("The database lost or restored").split("\n2. ")[1].split("\n3. ")[0]
    assert step.index("`unset CA4_MONGO_URL`") < step.index("`uv run ca4 rewind")
    assert "CA4_KAFKA_BOOTSTRAP_SERVERS" in step
    config = (REPO / "services/worker/src/ca4_worker/core/config.py").read_text()
    assert 'f"CA4_MONGO_URL: tlsCAFile={ca_files[-1]} does not exist: ' in config
    quoted = (
        "`error: invalid settings: CA4_MONGO_URL:\n   tlsCAFile=/etc/ca4/db-ca/global-bundle.pem"
    )
    assert quoted in step


def test_the_documented_documentdb_url_is_one_the_deploy_accepts() -> None:
    """Step 7 says how to read the app user's secret and build the URL from it: the user lives
    in `admin` (ca4 db-user), so the URL says authSource=admin, and make ca4-deploy-app's own
    check (check-app-secrets.py, prod) accepts it as written."""
    step = section("7. `make ca4-deploy-app`")
    assert (
        "`aws secretsmanager get-secret-value --region <region> --secret-id "
        "ca4/<ENV>/app-db-user --query SecretString --output text`"
    ) in step
    db_user_sh = (REPO / "tools/provision/scripts/db-user.sh").read_text()
    assert 'app_secret="${CA4_APP_DB_SECRET:-ca4/${CA4_ENV}/app-db-user}"' in db_user_sh
    assert 'app="{\\"username\\":\\"ca4app\\",\\"password\\":' in db_user_sh
    assert '{"username": "ca4app", "password": "<64 hex\ndigits>"}' in step
    assert 'client["admin"]' in (REPO / "tools/provision/src/ca4_provision/db_user.py").read_text()
    (url,) = set(re.findall(r"`(mongodb://<user>[^`]*)`", GUIDE))
    assert url.endswith("&authSource=admin"), url
    filled = (
        url.replace("<user>", "ca4app")
        .replace("<password>", "0" * 64)
        .replace("<endpoint>", "ca4-prod.cluster-c0ffee.eu-west-1.docdb.amazonaws.com")
    )
    spec = importlib.util.spec_from_file_location(
        "check_app_secrets", REPO / "tools/provision/scripts/check-app-secrets.py"
    )
    assert spec is not None
    assert spec.loader is not None
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    ca_file = f"{make_default('CA4_DB_CA_MOUNT_DIR')}/{make_default('CA4_DB_CA_KEY')}"
    check.check_mongo_url(filled, env="prod", ca_file=ca_file)


def test_the_make_settings_of_the_helm_steps_are_documented_with_their_defaults() -> None:
    """CA4_IMAGE_REGISTRY (the images' name, for ca4-images and ca4-deploy-app) and
    CA4_HELM_TIMEOUT (Helm's --wait) were read by the targets and named nowhere."""
    assert f"`CA4_HELM_TIMEOUT` (default `{make_default('CA4_HELM_TIMEOUT')}`)" in GUIDE
    images = (REPO / "tools/provision/scripts/images.sh").read_text()
    registry = re.search(r'^REGISTRY="\$\{CA4_IMAGE_REGISTRY:-([^}]+)\}"$', images, re.M)
    assert registry
    assert "image.registry='$(CA4_IMAGE_REGISTRY)'" in (REPO / "mk/infra.mk").read_text()
    step = section("3. `make ca4-images`")
    assert f"`CA4_IMAGE_REGISTRY` (default\n`{registry[1]}`)" in step
    assert "(the deploy passes it as `image.registry`)" in step


def test_the_smtp_password_file_is_asked_for_only_with_a_user(rendered: Rendered) -> None:
    """The chart reads the SMTP password only when the email receiver has a user
    (CA4_ALERT_SMTP_USERNAME): the guide listed the file as always needed in prod."""
    helpers = (chart_dir("ca4-platform") / "templates" / "_helpers.tpl").read_text()
    assert re.search(
        r"if \$r\.email\.authUsername -}}\n.*\n.*auth_password_file.*smtp-password", helpers
    )
    needed = needs_row("`CA4_ALERT_WEBHOOK_URL_FILE`")[0]
    assert (
        "`CA4_ALERT_SMTP_PASSWORD_FILE` when `CA4_ALERT_SMTP_USERNAME` is set (without a user "
        "Alertmanager sends no SMTP AUTH and reads no password)"
    ) in needed
    assert "`smtp-password` from `CA4_ALERT_SMTP_PASSWORD_FILE` (only with" in GUIDE


README = (REPO / "README.md").read_text()


def test_the_pre_tenancy_upgrade_rebuilds_the_projections_on_k3s(rendered: Rendered) -> None:
    """docs/architecture.md asks for one `ca4 replay --rebuild-projections` after the
    pre-tenancy upgrade; the README's upgrade section, where the guide points, lacked it. On
    K3s it runs in a worker pod (the database is in the VPC), with the consumers stopped (the
    rebuild refuses otherwise) and --yes (kubectl exec has no terminal)."""
    assert "(`ca4 replay --rebuild-projections`)" in (REPO / "docs/architecture.md").read_text()
    assert 'the README\'s "Upgrading from a pre-tenancy release"' in GUIDE
    start = README.index("### Upgrading from a pre-tenancy release")
    upgrade = README[start : README.index("\n## ", start)]
    (worker,) = [
        d
        for d in rendered[("ca4-app", "prod")]
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-worker")
    ]
    name = worker["metadata"]["name"]
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    runbook = section("The database lost or restored")
    replay = "python -c 'import typer; from ca4_worker.cli import replay; typer.run(replay)'"
    assert replay in runbook.replace("\n   ", " ")
    lines = [
        f"kubectl -n app set env deployment/{name} CA4_CONSUMERS_ENABLED=false",
        f"kubectl -n app rollout status deployment/{name}",
        f"kubectl -n app exec deploy/{name} -c {container['name']} -- {replay} "
        "--rebuild-projections --yes",
        f"kubectl -n app set env deployment/{name} CA4_CONSUMERS_ENABLED-",
    ]
    found = [upgrade.index(line) for line in lines]
    assert found == sorted(found)
    cli = (REPO / "services/worker/src/ca4_worker/cli.py").read_text()
    assert '"--rebuild-projections/--apply-only"' in cli
    assert "yes: YesOption = False" in cli[cli.index("def replay(") :]
