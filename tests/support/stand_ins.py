"""What this machine cannot run, said in every test run's output.

A test that runs the nearest real thing in place of something the machine cannot run (no Docker
engine, no Kubernetes, no cloud, no GPU, no Grafana) carries ``@pytest.mark.stand_in("<what was
not run and why; what ran instead>")``, usually as its module's ``pytestmark``. The end of the
run lists each such text once, with how many tests ran under it, so a green run never reads as
more than it executed (the deploy tier prints its own, finer table too).
"""

from __future__ import annotations

from collections import Counter

import pytest

MARKER = "stand_in"


class StandIns:
    """Counts the tests that ran under each stand-in text and lists them at the end."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        # Reports carry user properties from xdist workers to the controller; markers do not.
        texts = dict.fromkeys(str(marker.args[0]) for marker in item.iter_markers(MARKER))
        item.user_properties.extend((MARKER, text) for text in texts)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            self.counts.update(str(text) for name, text in report.user_properties if name == MARKER)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.counts:
            return
        terminalreporter.section("not run here: stand-ins ran instead")
        for text, tests in sorted(self.counts.items()):
            terminalreporter.line(f"{tests:5d} test{'s' if tests != 1 else ' '}  {text}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(text): runs a stand-in for something this machine cannot run; the text says "
        "what was not run, why, and what ran instead (listed at the end of the run)",
    )
    config.pluginmanager.register(StandIns(), "ca4-stand-ins")
