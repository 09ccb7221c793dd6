"""Decoders by the name a YAML `decoder:` entry uses. Modules are imported on first use."""

from __future__ import annotations

import importlib
from typing import Final

from fleetstream.normalize.base import Decoder

DECODERS: Final[dict[str, str]] = {
    "connectedcars-json": "fleetstream.normalize.connectedcars_json:decode",
    "carstatsviewer": "fleetstream.normalize.carstatsviewer:decode",
    "invers": "fleetstream.normalize.invers:decode",
    "mobito": "fleetstream.normalize.mobito:decode",
}


def get_decoder(name: str) -> Decoder:
    try:
        target = DECODERS[name]
    except KeyError:
        known = ", ".join(sorted(DECODERS))
        raise KeyError(f"unknown decoder {name!r}; known decoders: {known}") from None
    module_name, _, attr = target.partition(":")
    decoder: Decoder = getattr(importlib.import_module(module_name), attr)
    return decoder
