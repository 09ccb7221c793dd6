"""Every config file shipped under config/ is valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from fleetstream.config.loader import load_config

CONFIGS = sorted((Path(__file__).parents[2] / "config").glob("*.yaml"))
REQUIRED_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def test_configs_exist() -> None:
    """The project ships the embedded default and the Kafka and AMQP examples."""
    assert {"example.yaml", "mobito-kafka.yaml", "invers-amqp.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates(path: Path) -> None:
    """The file loads once the variables it requires are set (defaults cover the rest)."""
    text = path.read_text(encoding="utf-8")
    required = set(REQUIRED_VARIABLE.findall(text))
    config = load_config(path, environ={name: "value" for name in required})

    written = [(s["type"], s["name"]) for s in yaml.safe_load(text)["sources"]]
    assert written == [(s.type, s.name) for s in config.sources]
