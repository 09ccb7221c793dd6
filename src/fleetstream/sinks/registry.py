"""Sinks by the `type:` a YAML entry names. Modules are imported on first use."""

from __future__ import annotations

import importlib
from typing import Any, Final

from fleetstream.config.model import SinkConfig
from fleetstream.sinks.base import Sink

SINKS: Final[dict[str, str]] = {
    "sqlite": "fleetstream.sinks.sqlite:SqliteSink",
    "memory": "fleetstream.sinks.memory:MemorySink",
    "postgres": "fleetstream.sinks.postgres:PostgresSink",
    "jsonl": "fleetstream.sinks.jsonl:JsonlSink",
    "kafka": "fleetstream.sinks.kafka:KafkaSink",
}


def build_sink(config: SinkConfig) -> Sink:
    module_name, _, attr = SINKS[config.type].partition(":")
    factory: Any = getattr(importlib.import_module(module_name), attr)
    sink: Sink = factory(config)
    return sink
