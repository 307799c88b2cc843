"""Loki and Alloy configuration: parsed JSON fields, bounded labels only.

Alloy's own validator cannot run here (see tests/support/alloy.py), so the compose config is
parsed by our Alloy syntax parser and read block by block.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.support import alloy
from tests.unit.observability.promql import OBSERVABILITY

pytestmark = pytest.mark.stand_in(
    "Loki and Grafana Alloy: not installed here; ran instead: their configs parsed (Alloy's by our "
    "own parser of its syntax) and read block by block"
)

HIGH_CARDINALITY = {"event_id", "session_id", "trace_id", "span_id", "gpu_uuid"}
ALLOY_CONFIG = OBSERVABILITY / "alloy" / "config.alloy"


def alloy_config() -> alloy.Block:
    return alloy.parse(ALLOY_CONFIG.read_text(encoding="utf-8"))


def component(name: str) -> alloy.Block:
    (found,) = [block for block in alloy_config().blocks if block.name == name]
    return found


def loki() -> dict[str, Any]:
    return yaml.safe_load((OBSERVABILITY / "loki" / "loki.yml").read_text())


def test_alloy_config_parses_and_every_reference_names_a_declared_component() -> None:
    config = alloy_config()
    declared = alloy.components(config)
    for block in config.walk():
        for value in block.attributes.values():
            for reference in alloy.references(value):
                owner = reference.rsplit(".", 1)[0]
                assert owner in declared, f"{block.name} refers to undeclared {owner}"


def test_the_parser_rejects_what_alloy_rejects() -> None:
    for broken in ('a "x" {\n  b = [1, 2\n}\n', 'a "x" { b = 1 c = 2 }\n', 'a "x" {\n  b = 1\n'):
        with pytest.raises(alloy.AlloySyntaxError):
            alloy.parse(broken)


def test_alloy_keeps_only_the_two_services() -> None:
    rules = component("discovery.relabel").children("rule")
    keep = [rule for rule in rules if rule.attributes.get("action") == "keep"]
    assert [rule.attributes["regex"] for rule in keep] == ["processor|worker"]


def test_alloy_parses_the_json_fields_the_services_log() -> None:
    (json_stage,) = component("loki.process").children("stage.json")
    assert {"level", "event_id", "session_id", "trace_id"} <= json_stage.attributes[
        "expressions"
    ].keys()


def test_labels_are_bounded() -> None:
    labels = alloy.stream_labels(alloy_config())
    assert labels == {"service", "level", "job"}
    assert not labels & HIGH_CARDINALITY


def test_ids_travel_as_structured_metadata_which_loki_accepts() -> None:
    (metadata,) = component("loki.process").children("stage.structured_metadata")
    assert {"event_id", "session_id", "trace_id"} <= set(metadata.attributes["values"])
    assert loki()["limits_config"]["allow_structured_metadata"] is True


def test_alloy_pushes_to_the_loki_port() -> None:
    (endpoint,) = component("loki.write").children("endpoint")
    port = loki()["server"]["http_listen_port"]
    assert endpoint.attributes["url"] == f"http://loki:{port}/loki/api/v1/push"


def test_loki_uses_tsdb_v13_single_binary_storage() -> None:
    config = loki()
    assert config["auth_enabled"] is False
    (schema,) = config["schema_config"]["configs"]
    assert (schema["store"], schema["schema"]) == ("tsdb", "v13")
