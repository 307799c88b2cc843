"""Where the PromQL of the dashboards and alert rules lives, shared by unit and integration tests.

Grafana variables are replaced by concrete values (``$__rate_interval`` by ``1m``, multi-value
variables by ``.*``) so the expressions can be sent to a real Prometheus as they would be by
Grafana.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
OBSERVABILITY = REPO_ROOT / "observability"
DASHBOARDS = OBSERVABILITY / "grafana" / "dashboards"
RULES = OBSERVABILITY / "prometheus" / "rules"
PROMETHEUS_UID = "ca4-prometheus"

_GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "15m",
    "${tenant}": ".*",
    "$tenant": ".*",
    "${session_id}": ".*",
    "$session_id": ".*",
    "${gpu_uuid}": ".*",
    "$gpu_uuid": ".*",
}
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*\w+\)$")


@dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it comes from."""

    origin: str
    promql: str
    dashboard: str | None = None


def substitute_grafana_variables(expr: str) -> str:
    """The expression as Grafana would send it with every variable set to "All"."""
    for variable, value in _GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON in the repo, by file stem."""
    return {
        path.stem: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS.glob("*.json"))
    }


def iter_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """All panels, including those nested in collapsed rows."""
    panels: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_expressions() -> list[Expression]:
    """PromQL of every Prometheus panel target and query variable, variables substituted."""
    found: list[Expression] = []
    for name, dashboard in load_dashboards().items():
        for panel in iter_panels(dashboard):
            for target in panel.get("targets", []):
                if target.get("datasource", {}).get("uid") != PROMETHEUS_UID:
                    continue
                found.append(
                    Expression(
                        origin=f"{name}: {panel['title']} [{target['refId']}]",
                        promql=substitute_grafana_variables(target["expr"]),
                        dashboard=name,
                    )
                )
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") != "query":
                continue
            match = _LABEL_VALUES.match(variable["definition"])
            assert match, f"{name}: variable {variable['name']} is not a label_values() query"
            found.append(
                Expression(
                    origin=f"{name}: variable {variable['name']}",
                    promql=substitute_grafana_variables(match["selector"]),
                    dashboard=name,
                )
            )
    return found


def rule_expressions() -> list[Expression]:
    """The ``expr`` of every alert and recording rule."""
    found: list[Expression] = []
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule["record"]
                found.append(Expression(origin=f"{path.name}: {name}", promql=rule["expr"]))
    return found


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run promtool (Debian's package) with ``args``; the caller checks the result."""
    binary = shutil.which("promtool")
    assert binary, "promtool not found: install it (Debian: apt-get install -y prometheus)"
    return subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, check=False, timeout=60
    )
