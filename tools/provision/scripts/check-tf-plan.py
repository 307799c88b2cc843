"""Refuse a saved Terraform plan that deletes or replaces what holds CA4's data or runs its cluster.

Usage: terraform show -json PLAN | uv run python check-tf-plan.py [--target NAME] [--allow-replace]
       uv run python check-tf-plan.py --plan-json FILE [...]

``make ca4-apply`` applies its saved plan without a prompt, so it runs this first. A resource
change whose actions include ``delete`` (a removal, or a replacement: ``["delete", "create"]``,
``["create", "delete"]``) of a type in PROTECTED is refused, unless ``--allow-replace``
(``CA4_ALLOW_REPLACE=yes``): 1, and one line per such resource naming its address, its actions
and the attributes that force the replacement (``replace_paths``). Replacing a K3s node deletes
its data disk (``delete_on_termination``: every local-path volume on it, Kafka's log, Prometheus,
Loki) and its etcd member; an in-place update (``["update"]``) is applied as before. Only
addresses, actions and attribute names are printed, never a value: the plan's JSON holds
sensitive values in clear.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# The resource types whose deletion loses data or a running part of the cluster: the K3s nodes
# (their etcd members and data disks: Kafka's log, Prometheus, Loki) and the bastion, disks and
# their attachments, the DocumentDB cluster and its instances, the event archive, and the KMS key
# every volume, the archive and the database are encrypted with. Types the stack does not use yet
# are listed as they would be added (another database, a disk out of its instance).
PROTECTED = frozenset(
    {
        "aws_instance",
        "aws_ebs_volume",
        "aws_volume_attachment",
        "aws_docdb_cluster",
        "aws_docdb_cluster_instance",
        "aws_db_instance",
        "aws_rds_cluster",
        "aws_s3_bucket",
        "aws_kms_key",
    }
)


class RefusedError(Exception):
    """The plan must not be applied as it is; the message says why."""


def deletions(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's resource changes that delete (or replace) a managed resource of a PROTECTED
    type, in the plan's order."""
    if "format_version" not in plan:
        raise RefusedError(
            "this is not a Terraform plan's JSON (no format_version; nothing was applied)"
        )
    found = []
    for change in plan.get("resource_changes") or []:
        if change.get("mode", "managed") != "managed" or change.get("type") not in PROTECTED:
            continue
        if "delete" in (change.get("change") or {}).get("actions", []):
            found.append(change)
    return found


def describe(change: dict[str, Any]) -> str:
    """One line: the address, the actions and, for a replacement, what forces it."""
    actions = change["change"]["actions"]
    kind = "replace" if "create" in actions else "delete"
    line = f"  {change['address']}: {kind} ({', '.join(actions)})"
    forced = sorted(
        {".".join(str(step) for step in path) for path in change["change"].get("replace_paths", [])}
    )
    if forced:
        line += f", forced by {', '.join(forced)}"
    return line


def check(plan: dict[str, Any], *, allow_replace: bool) -> list[str]:
    """The lines describing what the plan deletes; raises RefusedError unless ``allow_replace``."""
    lines = [describe(change) for change in deletions(plan)]
    if lines and not allow_replace:
        raise RefusedError(
            "the plan deletes or replaces resources that hold data or run the cluster "
            "(nothing was applied):\n"
            + "\n".join(lines)
            + "\nA replaced K3s node loses its data disk (Kafka, Prometheus, Loki volumes) and "
            'its place in the cluster: see docs/provisioning.md, "Replacing a node". Change '
            "what forces it, or re-run with CA4_ALLOW_REPLACE=yes to apply the plan as it is."
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Check the plan; 1 with the list of deletions when refused."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="check-tf-plan")
    parser.add_argument("--plan-json", type=Path, help="the plan's JSON (default: stdin)")
    parser.add_argument("--allow-replace", action="store_true")
    args = parser.parse_args(argv)
    text = args.plan_json.read_text() if args.plan_json else sys.stdin.read()
    try:
        try:
            plan = json.loads(text)
        except json.JSONDecodeError as error:
            raise RefusedError(
                f"cannot read the plan's JSON: {error} (nothing was applied)"
            ) from None
        if not isinstance(plan, dict):
            raise RefusedError("cannot read the plan's JSON: not an object (nothing was applied)")
        lines = check(plan, allow_replace=args.allow_replace)
    except RefusedError as refused:
        print(f"{args.target}: {refused}", file=sys.stderr)
        return 1
    if lines:
        print(
            f"{args.target}: CA4_ALLOW_REPLACE=yes: applying a plan that deletes or replaces:\n"
            + "\n".join(lines)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
