"""Terraform: formatted, parsed with python-hcl2, security rules asserted, scanned with checkov.

`terraform validate` needs the AWS provider, which cannot be downloaded here; these tests check
what can be checked offline (see docs/provisioning.md, "What CI checks").
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import hcl2
import pytest

from tests.infra.conftest import REPO, run

pytestmark = pytest.mark.stand_in(
    "terraform plan/validate: the AWS provider cannot be downloaded here; ran instead: terraform "
    "fmt, a parse of every file (python-hcl2) and checkov"
)

TF_ROOT = REPO / "infra" / "terraform"
MODULES = ["network", "security", "bastion", "k3s", "archive_bucket", "documentdb"]
TF_FILES = sorted(TF_ROOT.rglob("*.tf"))


def _clean(value: Any) -> Any:
    """python-hcl2 8 keeps HCL quotes on keys and strings; strip them and the block markers."""
    if isinstance(value, dict):
        return {
            _clean(k): _clean(v)
            for k, v in value.items()
            if k not in {"__is_block__", "__comments__"}
        }
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def load(path: Path) -> dict[str, Any]:
    """One .tf file as plain Python data."""
    with path.open(encoding="utf-8") as handle:
        return _clean(hcl2.load(handle))


def resources(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """{(type, name): body} of every resource block in a file."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for block in load(path).get("resource", []):
        for rtype, named in block.items():
            for name, body in named.items():
                found[(rtype, name)] = body
    return found


def variables(path: Path) -> dict[str, dict[str, Any]]:
    """{name: body} of every variable block in a file."""
    return {name: body for block in load(path).get("variable", []) for name, body in block.items()}


def test_terraform_fmt_check(terraform: str) -> None:
    result = run([terraform, "fmt", "-check", "-recursive", "-diff", str(TF_ROOT)])
    assert result.returncode == 0, f"terraform fmt would change files:\n{result.stdout}"


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: str(p.relative_to(TF_ROOT)))
def test_every_tf_file_parses(path: Path) -> None:
    assert isinstance(load(path), dict)


@pytest.mark.parametrize("module", MODULES)
def test_module_layout_and_documented_typed_variables(module: str) -> None:
    folder = TF_ROOT / "modules" / module
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
        assert (folder / name).is_file(), f"{module} lacks {name}"
    for name, body in variables(folder / "variables.tf").items():
        assert body.get("description"), f"{module}: variable {name} has no description"
        assert body.get("type"), f"{module}: variable {name} has no type"
    outputs = {
        n: b for blk in load(folder / "outputs.tf").get("output", []) for n, b in blk.items()
    }
    assert outputs, f"{module} has no outputs"
    for name, body in outputs.items():
        assert body.get("description"), f"{module}: output {name} has no description"


def test_root_stack_pins_exact_versions_and_s3_backend() -> None:
    versions = load(TF_ROOT / "stacks" / "ca4" / "versions.tf")["terraform"][0]
    assert versions["required_version"].startswith("~> 1.11.")
    aws = versions["required_providers"][0]["aws"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", aws["version"]), "root stack must pin aws exactly"
    backend = versions["backend"][0]["s3"]
    assert backend == {"encrypt": True, "use_lockfile": True}


def test_inputs_are_validated() -> None:
    root = variables(TF_ROOT / "stacks" / "ca4" / "variables.tf")
    for name in (
        "environment",
        "aws_region",
        "operator_cidrs",
        "ssh_public_key",
        "archive_bucket_name",
    ):
        assert root[name].get("validation"), f"root variable {name} has no validation block"
    assert "0.0.0.0/" in json.dumps(root["operator_cidrs"]["validation"])
    bucket = variables(TF_ROOT / "modules" / "archive_bucket" / "variables.tf")["bucket_name"]
    assert bucket.get("validation")


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_env_tfvars(env: str) -> None:
    values = load(TF_ROOT / "envs" / f"{env}.tfvars")
    assert values["environment"] == env
    declared = variables(TF_ROOT / "stacks" / "ca4" / "variables.tf")
    assert set(values) <= set(declared), f"unknown variables in {env}.tfvars"
    assert "operator_cidrs" not in values, "operator CIDRs come from CA4_OPERATOR_CIDR, not a file"


# -- security groups ---------------------------------------------------------------------------

SG = resources(TF_ROOT / "modules" / "security" / "main.tf")
INGRESS = {n: b for (t, n), b in SG.items() if t == "aws_vpc_security_group_ingress_rule"}
EGRESS = {n: b for (t, n), b in SG.items() if t == "aws_vpc_security_group_egress_rule"}


def test_bastion_ssh_only_from_operator_cidrs() -> None:
    bastion_rules = {
        n: b
        for n, b in INGRESS.items()
        if "aws_security_group.bastion.id" in b["security_group_id"]
    }
    assert set(bastion_rules) == {"bastion_ssh"}
    rule = bastion_rules["bastion_ssh"]
    assert (rule["from_port"], rule["to_port"], rule["ip_protocol"]) == (22, 22, "tcp")
    assert rule["for_each"] == "${toset(var.operator_cidrs)}"


def test_only_the_https_ingress_is_open_to_cidrs() -> None:
    cidr_rules = {n for n, b in INGRESS.items() if "cidr_ipv4" in b}
    assert cidr_rules == {"bastion_ssh", "ingress_https"}
    https = INGRESS["ingress_https"]
    assert (https["from_port"], https["to_port"]) == (443, 443)
    assert "aws_security_group.ingress.id" in https["security_group_id"]


def test_k3s_nodes_reachable_only_from_vpc_groups() -> None:
    node_rules = {
        n: b
        for n, b in INGRESS.items()
        if "aws_security_group.k3s_nodes.id" in b["security_group_id"]
    }
    assert node_rules
    for name, rule in node_rules.items():
        assert "cidr_ipv4" not in rule, f"{name}: K3s nodes accept no CIDR, only security groups"
        assert "referenced_security_group_id" in rule
    # The processor is only reachable through the ingress: 443 to Traefik from the NLB group only.
    https = node_rules["nodes_https_from_ingress"]
    assert "aws_security_group.ingress.id" in https["referenced_security_group_id"]
    assert (https["from_port"], https["to_port"]) == (443, 443)


SG_VARIABLES = variables(TF_ROOT / "modules" / "security" / "variables.tf")


def rule_ports(rule: dict[str, Any]) -> list[int]:
    """The ports a rule opens; a rule made per port of a list variable (for_each), with the
    variable's default."""
    if str(rule["from_port"]).isdigit():
        return list(range(int(rule["from_port"]), int(rule["to_port"]) + 1))
    (listed,) = re.findall(r"var\.(\w+)", rule["for_each"])
    assert rule["from_port"] == rule["to_port"] == "${tonumber(each.value)}"
    return [int(port) for port in SG_VARIABLES[listed]["default"]]


def test_no_rule_opens_service_or_kafka_ports() -> None:
    for name, rule in {**INGRESS, **EGRESS}.items():
        if "from_port" not in rule or "cidr_ipv4" not in rule:
            continue
        ports = rule_ports(rule)
        for port in (8000, 8001, 9092, 9093, 9094, 27017, 6443):
            assert port not in ports, f"{name} opens port {port} to a CIDR"


def internet_egress(group: str) -> dict[str, list[int]]:
    """{rule: ports} of a security group's egress rules to 0.0.0.0/0."""
    return {
        name: rule_ports(rule)
        for name, rule in EGRESS.items()
        if f"aws_security_group.{group}.id" in rule["security_group_id"]
        and rule.get("cidr_ipv4") == "0.0.0.0/0"
    }


def test_nodes_and_bastion_reach_ubuntu_s_apt_mirrors_over_http() -> None:
    """Ubuntu 24.04's EC2 images fetch packages from http:// mirrors (signed packages): with 443
    alone out, `apt-get update` hangs on the nodes and the bastion."""
    for group, rule in (("k3s_nodes", "nodes_http"), ("bastion", "bastion_http")):
        assert internet_egress(group)[rule] == [80], group
        assert "apt mirrors; packages are signed" in EGRESS[rule]["description"]
    assert "OS package updates" not in EGRESS["bastion_https"]["description"]


def test_nodes_reach_the_alert_smtp_relay() -> None:
    """values-prod.yaml turns the email receiver on and the guide's smarthost is <host>:587:
    Alertmanager's SMTP left the nodes on no port."""
    smtp = internet_egress("k3s_nodes")["nodes_smtp"]
    assert smtp == [587]
    assert EGRESS["nodes_smtp"]["for_each"] == (
        "${toset([for port in var.alert_smtp_ports : tostring(port)])}"
    )
    assert "CA4_ALERT_SMTP_SMARTHOST" in EGRESS["nodes_smtp"]["description"]
    assert "<smtp host>:587" in (REPO / "docs" / "provisioning.md").read_text()
    assert SG_VARIABLES["alert_smtp_ports"]["validation"]


# module variable -> the root stack's variable that sets it
ROOT_EXPOSED = {
    ("security", "alert_smtp_ports"): "alert_smtp_ports",
    ("security", "kafka_tunnel_node_ports"): "kafka_tunnel_node_ports",
    ("documentdb", "profiler_threshold_ms"): "documentdb_profiler_threshold_ms",
}


@pytest.mark.parametrize(("module", "name"), ROOT_EXPOSED, ids=[".".join(k) for k in ROOT_EXPOSED])
def test_module_settings_an_operator_changes_are_root_variables(module: str, name: str) -> None:
    """An operator sets the root stack's variables (envs/<ENV>.tfvars, CA4_TF_VAR_FILES); a module
    variable the root does not pass keeps its default whatever the operator writes."""
    root_name = ROOT_EXPOSED[(module, name)]
    inner = variables(TF_ROOT / "modules" / module / "variables.tf")[name]
    outer = variables(TF_ROOT / "stacks" / "ca4" / "variables.tf")[root_name]
    assert outer["type"] == inner["type"]
    assert outer["default"] == inner["default"]
    inner_checks = [v["condition"].replace(f"var.{name}", "X") for v in inner["validation"]]
    outer_checks = [v["condition"].replace(f"var.{root_name}", "X") for v in outer["validation"]]
    assert inner_checks, f"{module}.{name} has no validation"
    assert outer_checks == inner_checks
    stack = load(TF_ROOT / "stacks" / "ca4" / "main.tf")["module"]
    (call,) = [blk[module] for blk in stack if module in blk]
    assert call[name] == f"${{var.{root_name}}}"


def test_documentdb_only_from_nodes() -> None:
    rule = INGRESS["documentdb_from_nodes"]
    assert rule["from_port"] == 27017
    assert "aws_security_group.k3s_nodes.id" in rule["referenced_security_group_id"]


def test_every_rule_has_a_description() -> None:
    for name, rule in {**INGRESS, **EGRESS}.items():
        assert rule.get("description"), name


# -- instances, bucket, database ---------------------------------------------------------------


def test_instances_require_imdsv2_and_encrypted_volumes() -> None:
    for module in ("bastion", "k3s"):
        for (rtype, name), body in resources(TF_ROOT / "modules" / module / "main.tf").items():
            if rtype != "aws_instance":
                continue
            assert body["metadata_options"][0]["http_tokens"] == "required", f"{module}.{name}"
            assert body["root_block_device"][0]["encrypted"] is True, f"{module}.{name}"
            assert body["associate_public_ip_address"] is False, f"{module}.{name}"


def test_node_role_scoped_to_archive_bucket() -> None:
    data = load(TF_ROOT / "modules" / "k3s" / "main.tf")["data"]
    docs = {
        n: b
        for blk in data
        for t, named in blk.items()
        for n, b in named.items()
        if t == "aws_iam_policy_document"
    }
    for statement in docs["archive"]["statement"]:
        for resource in statement["resources"]:
            assert "var.archive_bucket_arn" in resource or "var.kms_key_arn" in resource
            assert resource != "*"


BUCKET = resources(TF_ROOT / "modules" / "archive_bucket" / "main.tf")


def test_bucket_blocks_public_access() -> None:
    block = BUCKET[("aws_s3_bucket_public_access_block", "this")]
    for flag in (
        "block_public_acls",
        "block_public_policy",
        "ignore_public_acls",
        "restrict_public_buckets",
    ):
        assert block[flag] is True, flag


def test_bucket_versioned_encrypted_tls_only_with_lifecycle() -> None:
    versioning = BUCKET[("aws_s3_bucket_versioning", "this")]
    assert versioning["versioning_configuration"][0]["status"] == "Enabled"
    sse = BUCKET[("aws_s3_bucket_server_side_encryption_configuration", "this")]["rule"][0]
    assert sse["apply_server_side_encryption_by_default"][0]["sse_algorithm"] == "aws:kms"
    assert sse["bucket_key_enabled"] is True
    rules = {r["id"]: r for r in BUCKET[("aws_s3_bucket_lifecycle_configuration", "this")]["rule"]}
    assert {"archive-tiering", "abort-incomplete-uploads"} <= set(rules)
    assert rules["archive-tiering"]["noncurrent_version_expiration"]
    assert BUCKET[("aws_s3_bucket", "this")]["force_destroy"] == "${var.force_destroy}"
    policy = json.dumps(load(TF_ROOT / "modules" / "archive_bucket" / "main.tf")["data"])
    assert "aws:SecureTransport" in policy


def test_bucket_kept_by_default() -> None:
    root = variables(TF_ROOT / "stacks" / "ca4" / "variables.tf")
    assert root["archive_force_destroy"]["default"] is False


def test_documentdb_tls_private_encrypted() -> None:
    docdb = resources(TF_ROOT / "modules" / "documentdb" / "main.tf")
    params = {
        p["name"]: p["value"]
        for p in docdb[("aws_docdb_cluster_parameter_group", "this")]["parameter"]
    }
    assert params["tls"] == "enabled"
    cluster = docdb[("aws_docdb_cluster", "this")]
    # Profiler logs exported from a cluster whose profiler is off would stay empty.
    if "profiler" in cluster["enabled_cloudwatch_logs_exports"]:
        assert params["profiler"] == "enabled"
        assert params["profiler_threshold_ms"] == "${tostring(var.profiler_threshold_ms)}"
    if "audit" in cluster["enabled_cloudwatch_logs_exports"]:
        assert params["audit_logs"] == "enabled"
    assert cluster["storage_encrypted"] is True
    assert cluster["manage_master_user_password"] is True
    assert "var.private_subnet_ids" in docdb[("aws_docdb_subnet_group", "this")]["subnet_ids"]


def test_prod_can_be_torn_down_twice() -> None:
    """A second prod teardown failed: the final snapshot's fixed name was taken by the first
    one's, and deletion protection (NLB and DocumentDB) could not be turned off but by editing
    the stack."""
    cluster = resources(TF_ROOT / "modules" / "documentdb" / "main.tf")[
        ("aws_docdb_cluster", "this")
    ]
    assert "timestamp()" in cluster["final_snapshot_identifier"]
    assert "final_snapshot_identifier" in str(cluster["lifecycle"])
    stack = (TF_ROOT / "stacks" / "ca4" / "main.tf").read_text()
    assert "coalesce(var.deletion_protection, local.is_prod)" in stack
    assert stack.count("= local.deletion_protection") == 2


# -- ca4-apply's plan check: every resource that holds data is protected -----------------------

# AWS resource types whose deletion loses data or a running part of the cluster: a prefix matches
# the family (aws_docdb_cluster, aws_docdb_cluster_instance; aws_db_instance, ...).
DATA_TYPE_PREFIXES = (
    "aws_instance",
    "aws_ebs_volume",
    "aws_volume_attachment",
    "aws_docdb_cluster",
    "aws_db_instance",
    "aws_rds_cluster",
    "aws_s3_bucket",
    "aws_kms_key",
    "aws_efs_file_system",
    "aws_dynamodb_table",
    "aws_elasticache_",
    "aws_msk_cluster",
)
# What holds no data of its own, though named like what does: its deletion loses nothing.
NOT_DATA = re.compile(r"aws_s3_bucket_.+|aws_docdb_cluster_parameter_group|aws_docdb_subnet_group")


def test_plan_check_protects_every_resource_type_that_holds_data() -> None:
    """`make ca4-apply` applies a saved plan without a prompt after check-tf-plan.py refused any
    delete or replace of PROTECTED types: a data-holding type added to the stack must be listed
    there, or its replacement would go through unasked."""
    spec = importlib.util.spec_from_file_location(
        "check_tf_plan", REPO / "tools" / "provision" / "scripts" / "check-tf-plan.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    used = {rtype for path in TF_FILES for rtype, _ in resources(path)}
    holding = {t for t in used if t.startswith(DATA_TYPE_PREFIXES) and not NOT_DATA.match(t)}
    assert {"aws_instance", "aws_docdb_cluster", "aws_s3_bucket", "aws_kms_key"} <= holding
    assert holding <= module.PROTECTED, sorted(holding - module.PROTECTED)


def test_k3s_data_disk_is_inline_so_resizing_it_replaces_the_node() -> None:
    """The data disk is an ebs_block_device of aws_instance (ForceNew in the AWS provider: a new
    volume_size replaces the node and deletes the disk), which is why ca4-apply refuses such a
    plan and docs/provisioning.md resizes it in place. A disk moved out into aws_ebs_volume
    would need the guide changed with it."""
    (node,) = [
        body
        for (rtype, _), body in resources(TF_ROOT / "modules" / "k3s" / "main.tf").items()
        if rtype == "aws_instance"
    ]
    (disk,) = node["ebs_block_device"]
    assert disk["volume_size"] == "${var.data_volume_size_gb}"
    assert disk["delete_on_termination"] is True


# -- checkov -----------------------------------------------------------------------------------

SKIP_COMMENT = re.compile(r"#checkov:skip=(CKV2?_[A-Z0-9_]+)(:?)(.*)")


@pytest.fixture(scope="session")
def checkov_report(
    checkov_cmd: list[str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One checkov run over infra/terraform for the whole session (it takes ~40 s)."""
    out = tmp_path_factory.mktemp("checkov")
    result = run(
        [
            *checkov_cmd,
            "-d",
            str(TF_ROOT),
            "--framework",
            "terraform",
            "--skip-download",
            "--quiet",
            "--compact",
            "-o",
            "json",
            "--output-file-path",
            str(out),
        ],
        timeout=900,
    )
    report = out / "results_json.json"
    if not report.exists():
        pytest.fail(
            f"checkov produced no report (exit {result.returncode}):\n{result.stderr[-3000:]}"
        )
    data = json.loads(report.read_text())
    return data[0] if isinstance(data, list) else data


def test_checkov_no_failed_checks(checkov_report: dict[str, Any]) -> None:
    failed = checkov_report["results"]["failed_checks"]
    summary = [f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in failed]
    assert not failed, "checkov failures:\n" + "\n".join(summary)
    assert checkov_report["summary"]["passed"] > 100


def test_checkov_skips_are_justified() -> None:
    for path in TF_FILES:
        for line in path.read_text().splitlines():
            match = SKIP_COMMENT.search(line)
            if match:
                reason = f"{path}: checkov skip {match.group(1)} needs a written reason"
                assert match.group(2) == ":", reason
                assert len(match.group(3).strip()) >= 30, reason


def _variable_block(path: Path, name: str) -> str:
    """The text of ``variable "name" { ... }`` in ``path`` (the house layout: it ends at the
    first ``}`` at the start of a line)."""
    match = re.search(rf'^variable "{name}" {{\n.*?^}}\n', path.read_text(), re.M | re.S)
    assert match, f"no variable {name} in {path}"
    return match.group(0)


ROOT_VALUES = {
    "alert_smtp_ports": {
        "[587, 465, 25]": True,
        "[]": True,
        "[0]": False,
        "[70000]": False,
        "[587.5]": False,
        "[80]": False,  # the nodes' HTTP rule: AWS refuses a second, InvalidPermission.Duplicate
        "[443]": False,
        "null": True,  # the default (nullable = false), not "Iteration over null value"
    },
    "documentdb_profiler_threshold_ms": {"500": True, "50": True, "49": False, "500.5": False},
}
ROOT_CASES = [(name, value) for name, values in ROOT_VALUES.items() for value in values]


@pytest.mark.parametrize(("name", "value"), ROOT_CASES, ids=[f"{n}={v}" for n, v in ROOT_CASES])
def test_terraform_itself_accepts_and_refuses_the_root_variables_values(
    name: str, value: str, terraform: str, tmp_path: Path
) -> None:
    """The variable's own block, in a configuration of nothing else, planned by the real
    terraform (no provider needed) with the value an operator might write."""
    (tmp_path / "main.tf").write_text(
        _variable_block(TF_ROOT / "stacks" / "ca4" / "variables.tf", name)
    )
    initialised = run([terraform, "init", "-input=false", "-no-color"], cwd=tmp_path)
    assert initialised.returncode == 0, initialised.stderr
    planned = run(
        [terraform, "plan", "-input=false", "-no-color", "-var", f"{name}={value}"], cwd=tmp_path
    )
    said = planned.stdout + planned.stderr
    assert (planned.returncode == 0) is ROOT_VALUES[name][value], said
    if not ROOT_VALUES[name][value]:
        assert "Invalid value for variable" in said, said
