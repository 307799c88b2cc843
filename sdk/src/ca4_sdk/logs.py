"""The SDK's log lines in a notebook, in whichever cell is running."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

LOGGER_NAME = "ca4_sdk"


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is when a line is logged.

    ``logging.basicConfig()`` binds the stream it finds: run under ``%%capture``, it kept the
    captured one for the rest of the kernel, and every later warning (a refused key, a full
    spool, reports left spooled) went nowhere.
    """

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        """StreamHandler sets it; it is read at each line instead."""


def show_logs(level: int = logging.INFO) -> None:
    """Show the SDK's log lines from ``level`` on (its progress at INFO, problems at WARNING)
    on the running cell's stderr; calling it again only changes the level."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    if not any(isinstance(handler, _CurrentStderr) for handler in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
        logger.addHandler(handler)
    # A root handler that prints (basicConfig's) would print each line twice; one that writes
    # a file or ships logs still gets them.
    logger.propagate = not any(
        isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
        for handler in logging.getLogger().handlers
    )
