"""Loki and Promtail configuration: parsed JSON fields, bounded labels only."""

from __future__ import annotations

from typing import Any

import yaml

from tests.unit.observability.promql import OBSERVABILITY

HIGH_CARDINALITY = {"event_id", "session_id", "trace_id", "span_id", "gpu_uuid"}


def promtail() -> dict[str, Any]:
    return yaml.safe_load((OBSERVABILITY / "promtail" / "promtail.yml").read_text())


def loki() -> dict[str, Any]:
    return yaml.safe_load((OBSERVABILITY / "loki" / "loki.yml").read_text())


def stages() -> list[dict[str, Any]]:
    (job,) = promtail()["scrape_configs"]
    return list(job["pipeline_stages"])


def test_promtail_keeps_only_the_two_services() -> None:
    (job,) = promtail()["scrape_configs"]
    keep = [rule for rule in job["relabel_configs"] if rule.get("action") == "keep"]
    assert [rule["regex"] for rule in keep] == ["processor|worker"]


def test_promtail_parses_the_json_fields_the_services_log() -> None:
    (json_stage,) = [stage["json"] for stage in stages() if "json" in stage]
    assert {"level", "event_id", "session_id", "trace_id"} <= json_stage["expressions"].keys()


def test_labels_are_bounded() -> None:
    labels: set[str] = set()
    for stage in stages():
        labels |= set(stage.get("labels", {}) or {})
    (job,) = promtail()["scrape_configs"]
    labels |= {rule["target_label"] for rule in job["relabel_configs"] if "target_label" in rule}
    assert labels == {"service", "level", "job"}
    assert not labels & HIGH_CARDINALITY


def test_ids_travel_as_structured_metadata_which_loki_accepts() -> None:
    (metadata,) = [
        stage["structured_metadata"] for stage in stages() if "structured_metadata" in stage
    ]
    assert {"event_id", "session_id", "trace_id"} <= set(metadata)
    assert loki()["limits_config"]["allow_structured_metadata"] is True


def test_promtail_pushes_to_the_loki_port() -> None:
    (client,) = promtail()["clients"]
    port = loki()["server"]["http_listen_port"]
    assert client["url"] == f"http://loki:{port}/loki/api/v1/push"


def test_loki_uses_tsdb_v13_single_binary_storage() -> None:
    config = loki()
    assert config["auth_enabled"] is False
    (schema,) = config["schema_config"]["configs"]
    assert (schema["store"], schema["schema"]) == ("tsdb", "v13")
