"""``ca4_sdk.show_logs``: the SDK's lines on the running cell's stderr."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import ca4_sdk
import pytest

LOGGER = logging.getLogger("ca4_sdk")


@pytest.fixture(autouse=True)
def restore_the_logger() -> Iterator[None]:
    handlers, level, propagate = list(LOGGER.handlers), LOGGER.level, LOGGER.propagate
    root = list(logging.getLogger().handlers)
    yield
    logging.getLogger().handlers[:] = root
    LOGGER.handlers[:] = handlers
    LOGGER.setLevel(level)
    LOGGER.propagate = propagate


def test_lines_reach_the_cell_that_runs_not_a_captured_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``logging.basicConfig()`` in a ``%%capture`` cell kept the captured stream for the rest
    of the kernel: a refused key's warning in a later cell showed nowhere."""
    captured, later = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", captured)  # the %%capture cell
    ca4_sdk.show_logs()
    monkeypatch.setattr("sys.stderr", later)  # a later cell

    LOGGER.warning("ca4: the API refused the key")
    LOGGER.info("ca4: delivered 1 report")

    assert captured.getvalue() == ""
    assert later.getvalue() == (
        "WARNING:ca4_sdk:ca4: the API refused the key\nINFO:ca4_sdk:ca4: delivered 1 report\n"
    )


def test_calling_it_again_changes_the_level_and_prints_each_line_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    logging.basicConfig()  # a root handler too, as notebooks often have
    ca4_sdk.show_logs()
    ca4_sdk.show_logs(logging.WARNING)

    LOGGER.info("not shown")
    LOGGER.warning("shown once")

    assert out.getvalue() == "WARNING:ca4_sdk:shown once\n"


def test_a_root_handler_that_writes_a_file_still_gets_the_lines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    # The file alone, as a script that logs to a file has it (pytest adds its own for the test).
    to_file = logging.FileHandler(tmp_path / "run.log")
    logging.getLogger().handlers[:] = [to_file]
    ca4_sdk.show_logs()

    LOGGER.warning("kept in the file too")

    to_file.close()
    assert (tmp_path / "run.log").read_text() == "kept in the file too\n"
