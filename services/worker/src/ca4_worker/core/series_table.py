"""Gauge series kept rendered in Prometheus' text format, for label sets that rarely change.

``prometheus_client`` renders every sample at every scrape: it sorts each sample's labels,
escapes every value and formats the number. A GPU's series carry eleven labels and a worker
holds about forty series per GPU, so rendering them that way dominated ``/metrics``
(docs/architecture.md, "GPU series on /metrics"). A GPU's labels change only with its session
or host, so a :class:`SeriesTable` renders each line when its value is set, and a scrape joins
the lines. It renders exactly what ``generate_latest`` renders for the same samples (a unit
test compares the bytes), and is a ``Collector`` too, for anything that reads metrics through
``prometheus_client``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_format_value = cast(Callable[[float], str], floatToGoString)
"""How ``generate_latest`` writes a value (Go's float format)."""


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


@dataclass
class _Family:
    name: str
    documentation: str
    header: str
    lines: dict[tuple[str, ...], tuple[float, str]] = field(default_factory=dict)
    """Each series' value and rendered line, by its label values."""


class SeriesTable(Collector):
    """Gauge families that share one set of label names; each series is set for every family
    at once (:meth:`put`) and rendered then."""

    def __init__(self, label_names: Sequence[str], families: Iterable[tuple[str, str]]) -> None:
        """``families``: each gauge's name and help text, in the order they are exposed."""
        self._label_names = tuple(label_names)
        # The text format sorts labels by name.
        self._sorted = sorted(range(len(self._label_names)), key=lambda i: self._label_names[i])
        self._families = {
            name: _Family(
                name,
                documentation,
                f"# HELP {name} {_escape_help(documentation)}\n# TYPE {name} gauge\n",
            )
            for name, documentation in families
        }

    def put(self, labels: tuple[str, ...], values: Mapping[str, float | None]) -> None:
        """Set the series ``labels`` of each family named in ``values`` (``None`` removes it)."""
        label_text = ",".join(
            f'{self._label_names[i]}="{_escape_label_value(labels[i])}"' for i in self._sorted
        )
        for name, value in values.items():
            lines = self._families[name].lines
            if value is None:
                lines.pop(labels, None)
            else:
                number = float(value)
                lines[labels] = (number, f"{name}{{{label_text}}} {_format_value(number)}\n")

    def remove(self, labels: tuple[str, ...]) -> None:
        """Remove the series ``labels`` from every family."""
        for family in self._families.values():
            family.lines.pop(labels, None)

    def exposition(self) -> str:
        """Every family in Prometheus' text format, as ``generate_latest`` writes it."""
        parts: list[str] = []
        for family in self._families.values():
            parts.append(family.header)
            parts.extend(line for _, line in list(family.lines.values()))
        return "".join(parts)

    def collect(self) -> Iterable[Metric]:
        """The same samples as metric families (``prometheus_client``'s collector protocol)."""
        for family in self._families.values():
            metric = GaugeMetricFamily(family.name, family.documentation, labels=self._label_names)
            for labels, (value, _) in list(family.lines.items()):
                metric.add_metric(labels, value)
            yield metric
