"""Grafana provisioning and dashboards: well-formed, wired to the provisioned datasources."""

from __future__ import annotations

import re
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
    rule_expressions,
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
    assert "count(DCGM_FI_DEV_GPU_UTIL)" in exprs["GPUs held"]
    assert "by (tenant, project)" in exprs["Busy vs idle GPU hours by project (time range)"]
    assert (
        "topk(10, sum by (tenant, session_id, project)" in exprs["Top idle sessions (time range)"]
    )
    assert exprs["Average GPU utilisation by model"] == "avg by (modelName) (DCGM_FI_DEV_GPU_UTIL)"


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
