"""The committed configuration reference matches the config models."""

from __future__ import annotations

from pathlib import Path

from fleetstream.config.model import FleetstreamConfig
from fleetstream.config.reference import _nested, render

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_committed_reference_is_current() -> None:
    """docs/configuration.md equals what the generator renders now (regenerate if this fails:
    `python -m fleetstream.config.reference`)."""
    assert render() == DOC.read_text(encoding="utf-8")


def test_every_field_is_documented() -> None:
    """Every config field of every model reachable from the root has a description."""
    undocumented = []
    pending: list[type] = [FleetstreamConfig]
    seen: set[type] = set()
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            if not field.description and name != "type":
                undocumented.append(f"{model.__name__}.{name}")
            pending.extend(_nested(field.annotation))
    assert [] == sorted(undocumented)
