"""GPU series are rendered when set, and must read exactly as prometheus_client renders them."""

from __future__ import annotations

import math

from ca4_worker.core.series_table import SeriesTable
from prometheus_client import CollectorRegistry, Gauge, generate_latest

LABELS = ("gpu", "UUID", "modelName", "Hostname", "tenant")
AWKWARD_LABELS = [
    ("0", "GPU-1", "Tesla T4", "host", "acme"),
    ("1", 'GPU-"quoted"', "back\\slash", "new\nline", "ünïcødé ✓"),
    ("2", "", "", "", ""),
]
VALUES = [0.0, 1.0, 0.1, -3.0, 1234567.0, 1e21, 12345678.9, float("inf"), math.nan]


def _filled_table_and_gauges() -> tuple[SeriesTable, CollectorRegistry]:
    """The same samples in a table and in prometheus_client gauges of a fresh registry."""
    families = [("DCGM_FI_DEV_GPU_UTIL", 'GPU utilization (in %).\nA "help" \\ text'), ("x", "y")]
    table = SeriesTable(LABELS, families)
    registry = CollectorRegistry()
    gauges = {name: Gauge(name, help_, LABELS, registry=registry) for name, help_ in families}
    for index, labels in enumerate(AWKWARD_LABELS):
        for offset, value in enumerate(VALUES):
            series = (*labels[:-1], f"{labels[-1]}{offset}")
            first = VALUES[(index + offset) % len(VALUES)]
            table.put(series, {"DCGM_FI_DEV_GPU_UTIL": first, "x": value})
            gauges["DCGM_FI_DEV_GPU_UTIL"].labels(*series).set(first)
            gauges["x"].labels(*series).set(value)
    return table, registry


def test_the_rendered_lines_are_what_prometheus_client_writes_for_the_same_gauges() -> None:
    table, registry = _filled_table_and_gauges()

    assert table.render() == generate_latest(registry)
    assert table.exposition().encode() == generate_latest(registry)
    assert table.exposition().encode() == generate_latest(table)


def test_a_series_set_to_none_or_removed_is_gone_from_every_family() -> None:
    table, registry = _filled_table_and_gauges()
    gauges = {metric.name: metric for metric in registry.collect()}
    first, second = AWKWARD_LABELS[0], (*AWKWARD_LABELS[1][:-1], f"{AWKWARD_LABELS[1][-1]}0")
    first = (*first[:-1], f"{first[-1]}0")

    table.put(first, {"x": None})
    table.remove(second)

    lines = table.exposition().splitlines()
    assert not any('tenant="acme0"' in line and line.startswith("x{") for line in lines)
    assert any('tenant="acme0"' in line for line in lines)
    assert not any('tenant="ünïcødé ✓0"' in line for line in lines)
    assert len(lines) == sum(len(metric.samples) + 2 for metric in gauges.values()) - 3


def test_a_family_without_series_still_has_its_help_and_type() -> None:
    table = SeriesTable(LABELS, [("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).")])

    assert table.exposition() == (
        "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).\n# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"
    )
