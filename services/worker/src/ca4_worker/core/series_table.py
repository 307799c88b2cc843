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
    header: bytes
    lines: dict[tuple[str, ...], tuple[float, bytes]] = field(default_factory=dict)
    """Each series' value and rendered line, by its label values. Lines are kept in UTF-8: a
    ``str`` with one character beyond U+FFFF in a label takes four bytes for every character."""


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
                f"# HELP {name} {_escape_help(documentation)}\n# TYPE {name} gauge\n".encode(),
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
                line = f"{name}{{{label_text}}} {_format_value(number)}\n"
                lines[labels] = (number, line.encode())

    def remove(self, labels: tuple[str, ...]) -> None:
        """Remove the series ``labels`` from every family."""
        for family in self._families.values():
            family.lines.pop(labels, None)

    def render(self) -> bytes:
        """Every family in Prometheus' text format, as ``generate_latest`` writes it."""
        parts: list[bytes] = []
        for family in self._families.values():
            parts.append(family.header)
            parts.extend(line for _, line in list(family.lines.values()))
        return b"".join(parts)

    def exposition(self) -> str:
        """:meth:`render` as text."""
        return self.render().decode()

    def collect(self) -> Iterable[Metric]:
        """The same samples as metric families (``prometheus_client``'s collector protocol)."""
        for family in self._families.values():
            metric = GaugeMetricFamily(family.name, family.documentation, labels=self._label_names)
            for labels, (value, _) in list(family.lines.items()):
                metric.add_metric(labels, value)
            yield metric
