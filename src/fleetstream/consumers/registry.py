"""Broker sources by the `type:` a YAML entry names. Modules are imported on first use, so an
operator who runs only webhooks never imports a broker client. `http` routes are served by the
shared HTTP listener and are not listed here."""

from __future__ import annotations

import importlib
from typing import Any, Final

from fleetstream.config.model import SourceConfig
from fleetstream.consumers.base import Source
from fleetstream.pipeline import SourceHandle
from fleetstream.telemetry.metrics import Telemetry

SOURCES: Final[dict[str, str]] = {
    "kafka": "fleetstream.consumers.kafka:KafkaSource",
    "amqp": "fleetstream.consumers.amqp:AmqpSource",
}


def build_source(config: SourceConfig, handle: SourceHandle, telemetry: Telemetry) -> Source:
    module_name, _, attr = SOURCES[config.type].partition(":")
    factory: Any = getattr(importlib.import_module(module_name), attr)
    source: Source = factory(config, handle, telemetry)
    return source
