"""Logging setup: fleetstream's own events and libraries' standard-library logs alike."""

from __future__ import annotations

import subprocess
import sys

import orjson

SCRIPT = """
import logging, structlog
from fleetstream.telemetry.logging import configure_logging
configure_logging("info", "json")
structlog.get_logger("fleetstream").info("own_event", key=1)
logging.getLogger("asyncpg.pool").warning("pool trouble %s", "here")
logging.getLogger("asyncpg.pool").info("too chatty")
"""


def test_library_warnings_are_json_lines_and_info_is_dropped() -> None:
    """A library's stdlib warning is rendered as a JSON line next to fleetstream's own
    events; its info lines stay out."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30, check=True
    )
    lines = [orjson.loads(line) for line in done.stderr.splitlines()]

    expected = [
        ("own_event", "info", None),
        ("pool trouble here", "warning", "asyncpg.pool"),
    ]
    assert expected == [(line["event"], line["level"], line.get("logger")) for line in lines]
