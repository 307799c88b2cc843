"""Grafana provisioning and dashboards: well-formed, wired to the provisioned datasources."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.observability.promql import (
    DASHBOARDS,
    OBSERVABILITY,
    PROMETHEUS_UID,
    dashboard_expressions,
    iter_panels,
    load_dashboards,
    promtool,
    rule_expressions,
    substitute_grafana_variables,
)

pytestmark = pytest.mark.stand_in(
    "Grafana: not installed here (no package this machine can fetch); ran instead: its "
    "provisioning and dashboard JSON checked, every panel's PromQL parsed (and run against the "
    "real Prometheus in tests/integration/observability)"
)

PROVISIONING = OBSERVABILITY / "grafana" / "provisioning"


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    sources: dict[str, dict[str, Any]] = {}
    for path in sorted((PROVISIONING / "datasources").glob("*.yml")):
        for source in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]:
            sources[source["uid"]] = source
    return sources


def used_datasources(node: object) -> list[dict[str, str]]:
    """Every ``datasource`` object anywhere in a dashboard."""
    if isinstance(node, dict):
        found = [node["datasource"]] if isinstance(node.get("datasource"), dict) else []
        for value in node.values():
            found.extend(used_datasources(value))
        return found
    if isinstance(node, list):
        return [item for value in node for item in used_datasources(value)]
    return []


def test_every_dashboard_exists_with_a_stable_uid() -> None:
    dashboards = load_dashboards()
    assert {name: d["uid"] for name, d in dashboards.items()} == {
        "fleet": "ca4-fleet",
        "gpus": "ca4-gpus",
        "pipeline": "ca4-pipeline",
    }


@pytest.mark.parametrize("name", ["pipeline", "gpus", "fleet"])
def test_dashboard_uses_only_provisioned_datasources(name: str) -> None:
    sources = provisioned_datasources()
    dashboard = load_dashboards()[name]
    for datasource in used_datasources(dashboard):
        assert datasource["uid"] in sources, datasource
        assert datasource["type"] == sources[datasource["uid"]]["type"], datasource


@pytest.mark.parametrize("name", ["pipeline", "gpus", "fleet"])
def test_panels_have_unique_ids_titles_and_queries(name: str) -> None:
    panels = iter_panels(load_dashboards()[name])
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]
            assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()


def test_pipeline_covers_every_hop() -> None:
    exprs = " ".join(e.promql for e in dashboard_expressions() if e.dashboard == "pipeline")
    for metric in (
        "ca4_ingest_events_total",
        "ca4_publish_latency_seconds_bucket",
        "ca4_worker_end_to_end_latency_seconds_bucket",
        "ca4_worker_consumer_lag",
        "ca4_worker_dead_letters_total",
        "ca4_worker_archive_lag",
    ):
        assert metric in exprs, f"pipeline dashboard does not show {metric}"


def test_gpu_dashboard_shows_every_gauge_per_gpu_and_session() -> None:
    gpu_exprs = [e.promql for e in dashboard_expressions() if e.dashboard == "gpus"]
    for gauge in (
        "ca4_gpu_utilization_pct",
        "ca4_gpu_memory_used_mib",
        "ca4_gpu_memory_total_mib",
        "ca4_gpu_temperature_c",
        "ca4_gpu_power_draw_w",
    ):
        assert any(
            gauge in expr and "session_id" in expr and "tenant" in expr for expr in gpu_exprs
        ), gauge


def test_fleet_dashboard_shows_held_busy_idle_and_top_idle_sessions() -> None:
    panels = {panel["title"]: panel for panel in iter_panels(load_dashboards()["fleet"])}
    exprs = {
        title: " ".join(t["expr"] for t in panel["targets"]) for title, panel in panels.items()
    }
    assert "count(count by (tenant, UUID) (DCGM_FI_DEV_GPU_UTIL))" in exprs["GPUs held"]
    assert "by (tenant, project)" in exprs["Busy vs idle GPU hours by project (time range)"]
    assert (
        "topk(10, sum by (tenant, session_id, project)" in exprs["Top idle sessions (time range)"]
    )
    assert exprs["Average GPU utilisation by model"] == (
        "avg by (modelName) (avg by (tenant, UUID, modelName) (DCGM_FI_DEV_GPU_UTIL))"
    )


def test_log_panel_queries_loki_and_loki_links_trace_ids() -> None:
    panels = iter_panels(load_dashboards()["pipeline"])
    log_panels = [panel for panel in panels if panel["type"] == "logs"]
    assert log_panels
    assert all(panel["datasource"]["uid"] == "ca4-loki" for panel in log_panels)
    loki = provisioned_datasources()["ca4-loki"]
    (derived,) = loki["jsonData"]["derivedFields"]
    assert derived["datasourceUid"] in provisioned_datasources()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    line = f'{{"event": "event.stored", "trace_id": "{trace_id}", "event_id": "x"}}'
    match = re.search(derived["matcherRegex"], line)
    assert match
    assert match.group(1) == trace_id
    # Grafana expands $VAR in provisioning files; $$ keeps the literal Grafana macro.
    assert derived["url"] == "$${__value.raw}"


def test_prometheus_is_the_default_datasource() -> None:
    sources = provisioned_datasources()
    assert sources[PROMETHEUS_UID]["isDefault"] is True
    assert sum(bool(source.get("isDefault")) for source in sources.values()) == 1


def test_dashboard_provider_points_where_compose_mounts_the_json() -> None:
    (provider,) = yaml.safe_load(
        (PROVISIONING / "dashboards" / "ca4.yml").read_text(encoding="utf-8")
    )["providers"]
    compose = yaml.safe_load((OBSERVABILITY.parent / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./observability/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert DASHBOARDS.is_dir()


GPU_SERIES = re.compile(r"\b(DCGM_FI_\w+|ca4_gpu_\w+)")
GROUPING = re.compile(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)")
PER_TENANT_LABELS = {"UUID", "gpu_uuid", "session_id", "project"}


def test_per_gpu_series_are_grouped_and_matched_with_their_tenant() -> None:
    # Each tenant has its own series of a GPU UUID (and picks its own session ids and project
    # names): grouping or matching on those labels without the tenant would merge two tenants'
    # GPUs, so one tenant's reports could fake or hide another's.
    expressions = [*dashboard_expressions(), *rule_expressions()]
    checked = [expr for expr in expressions if GPU_SERIES.search(expr.promql)]
    assert checked
    for expr in checked:
        for clause in GROUPING.findall(expr.promql):
            labels = {label.strip() for label in clause.split(",")}
            if labels & PER_TENANT_LABELS:
                assert "tenant" in labels, f"{expr.origin}: ({clause}) without tenant"


# --- GPU counts while a partition changes owner ------------------------------------------------

FROZEN_OWNER = "worker-a:8001"
"""The worker a partition moved away from: it keeps exporting the last readings of the GPUs it
projected until their series TTL (900 s), beside the new owner's series of the same GPUs."""
GPU_SELECTOR = re.compile(r"\b(DCGM_FI_\w+|ca4_gpu_\w+)(\{)?")
DCGM = (
    'job="worker", tenant="acme", UUID="{uuid}", modelName="{model}", session_id="{session}", '
    'project="{project}"'
)
LEGACY = (
    'job="worker", tenant="acme", gpu_uuid="{uuid}", gpu_name="{model}", session_id="{session}"'
)
# uuid, model, session, project, utilisation; GPU-1's partition moved from worker-a to worker-b
GPUS = [
    ("GPU-1", "T4", "s1", "vision", 5),
    ("GPU-3", "T4", "s3", "vision", 80),
    ("GPU-2", "L4", "s2", "nlp", 90),
]
ACME_VISION = {"tenant": "acme", "project": "vision"}
ACME_NLP = {"tenant": "acme", "project": "nlp"}
# The output series of each panel that counts or averages GPUs, each GPU taken once.
COUNTING_PANELS: dict[tuple[str, str, str], list[dict[str, str]]] = {
    ("fleet", "GPUs held", "A"): [{}],
    ("fleet", "GPUs held idle now", "A"): [{}],
    ("fleet", "Average GPU utilisation by model", "A"): [{"modelName": "T4"}, {"modelName": "L4"}],
    ("fleet", "GPUs held by project", "A"): [ACME_VISION, ACME_NLP],
    ("fleet", "Busy vs idle GPU hours by project (time range)", "A"): [ACME_VISION, ACME_NLP],
    ("fleet", "Busy vs idle GPU hours by project (time range)", "B"): [ACME_VISION],
    ("fleet", "Top idle sessions (time range)", "A"): [
        {"tenant": "acme", "session_id": "s1", "project": "vision"}
    ],
    ("gpus", "Reporting sessions", "A"): [{}],
    ("gpus", "GPUs", "A"): [{}],
}


def rebalanced_series() -> list[dict[str, str]]:
    """Every GPU on worker-b, and GPU-1 also on worker-a, frozen at its last reading."""
    series: list[dict[str, str]] = []
    for uuid, model, session, project, util in GPUS:
        owners = ["worker-b:8001", FROZEN_OWNER] if uuid == "GPU-1" else ["worker-b:8001"]
        for owner in owners:
            dcgm = DCGM.format(uuid=uuid, model=model, session=session, project=project)
            legacy = LEGACY.format(uuid=uuid, model=model, session=session)
            at = f'instance="{owner}"'
            series += [
                {"series": f"DCGM_FI_DEV_GPU_UTIL{{{dcgm}, {at}}}", "values": f"{util}x30"},
                {"series": f"DCGM_FI_DEV_FB_USED{{{dcgm}, {at}}}", "values": "9000x30"},
                {"series": f"ca4_gpu_utilization_pct{{{legacy}, {at}}}", "values": f"{util}x30"},
            ]
    return series


def panel_target(dashboard: str, title: str, ref: str) -> str:
    """The PromQL of one panel target, as Grafana sends it with every variable at "All"."""
    (panel,) = [p for p in iter_panels(load_dashboards()[dashboard]) if p["title"] == title]
    (target,) = [t for t in panel["targets"] if t["refId"] == ref]
    return substitute_grafana_variables(str(target["expr"]))


def without_the_frozen_copy(promql: str) -> str:
    """``promql`` reading only the GPU series of the partition's current owners."""
    not_frozen = f'instance!="{FROZEN_OWNER}"'
    return GPU_SELECTOR.sub(
        lambda found: f"{found[1]}{{{not_frozen}" + (", " if found[2] else "}"), promql
    )


def test_gpu_counts_take_each_gpu_once_while_its_old_owner_still_exports_it(
    tmp_path: Path,
) -> None:
    """Each panel that counts or averages GPUs must show, with the old owner's frozen copy of
    GPU-1 present, what it shows without it (PromQL evaluated by promtool)."""
    checks = []
    for (dashboard, title, ref), expected in COUNTING_PANELS.items():
        promql = panel_target(dashboard, title, ref)
        checks.append(
            {
                "expr": f"({promql}) - ({without_the_frozen_copy(promql)})",
                "eval_time": "20m",
                "exp_samples": [
                    {
                        "labels": "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}",
                        "value": 0,
                    }
                    for labels in expected
                ],
            }
        )
    (tmp_path / "none.yml").write_text("groups: []\n", encoding="utf-8")
    suite = {
        "rule_files": ["none.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": rebalanced_series(), "promql_expr_test": checks}
        ],
    }
    path = tmp_path / "rebalanced.test.yml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    result = promtool("test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Ingest panels: the processor's series, at a resolution a percentile needs -----------------

INGEST_ROW = "Ingest (processor)"


def ingest_row_targets() -> dict[str, list[str]]:
    """The Prometheus expressions of the panels under the pipeline's ingest row, by title."""
    panels = iter_panels(load_dashboards()["pipeline"])
    rows = [index for index, panel in enumerate(panels) if panel["type"] == "row"]
    start = next(index for index in rows if panels[index]["title"] == INGEST_ROW)
    end = next((index for index in rows if index > start), len(panels))
    return {
        panel["title"]: [target["expr"] for target in panel["targets"]]
        for panel in panels[start + 1 : end]
    }


def test_ingest_panels_read_the_processors_series_only() -> None:
    # The worker's read API exports the same ca4_http_* series: without the job they mix in.
    checked = 0
    for title, exprs in ingest_row_targets().items():
        for expr in exprs:
            for metric in re.findall(r"\b(ca4_(?:ingest|publish|http)_\w+)(\{[^}]*\})?", expr):
                assert 'job="processor"' in metric[1], f"{title}: {metric[0]} without the job"
                checked += 1
    assert checked >= 8


def test_http_request_duration_uses_the_fine_histogram() -> None:
    (exprs,) = [e for title, e in ingest_row_targets().items() if title == "HTTP request duration"]
    assert exprs
    for expr in exprs:
        assert "ca4_http_request_duration_highr_seconds_bucket" in expr, expr
