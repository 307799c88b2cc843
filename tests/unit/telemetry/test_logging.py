"""Every line a service writes is one JSON object on stdout, uvicorn's own included."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_uvicorns_own_lines_join_the_json_stream_on_stdout() -> None:
    # As uvicorn runs it: its logging config first, then the app's import configures ours.
    script = textwrap.dedent(
        """
        import logging, logging.config
        from uvicorn.config import LOGGING_CONFIG
        from ca4_telemetry import configure_logging

        logging.config.dictConfig(LOGGING_CONFIG)
        configure_logging("processor")
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/healthz", "1.1", 200
        )
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )

    assert done.stderr == ""
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(line["event"], line["level"], line["service"]) for line in lines] == [
        ("Started server process [42]", "info", "processor"),
        ('127.0.0.1:5000 - "GET /healthz HTTP/1.1" 200', "info", "processor"),
        ("Exception in ASGI application", "error", "processor"),
    ]
    assert "RuntimeError: boom" in lines[2]["exception"]


def test_no_access_log_stays_off() -> None:
    """The images run uvicorn with ``--no-access-log``: routing uvicorn's loggers to the JSON
    stream must not turn a line per request back on."""
    script = textwrap.dedent(
        """
        from uvicorn.config import Config
        from ca4_telemetry import configure_logging

        Config("ca4_processor.main:app", access_log=False).configure_logging()
        configure_logging("processor")
        import logging
        access = logging.getLogger("uvicorn.access")
        print(access.hasHandlers())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"
