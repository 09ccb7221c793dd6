"""The decoder contract and the helpers every JSON decoder shares.

A decoder is a pure function `RawMessage -> Decoded`: no I/O, no clock reads, no global state.
It raises `DecodeError` when the message as a whole is unusable; when only some elements of a
bulk are, it returns the good events and lists the bad elements in `rejected`, each with its own
raw bytes, so they are quarantined one by one and never hold back the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from fleetstream.errors import DecodeError
from fleetstream.normalize.model import RawMessage, VehicleEvent


@dataclass(slots=True)
class Rejected:
    """One element of a message that could not be decoded, with its own bytes."""

    error: DecodeError
    raw: bytes


@dataclass(slots=True)
class Decoded:
    """What a decoder made of one message.

    `unknown_types` names each event type the decoder kept without knowing it (once per event),
    so the pipeline can count them; the events themselves are in `events` all the same.
    """

    events: list[VehicleEvent] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    unknown_types: list[str] = field(default_factory=list)


Decoder = Callable[[RawMessage], Decoded]

# Strings are skipped whole (an unterminated one runs to the end), with possessive quantifiers,
# so the scan stays linear in the size of the body whatever it contains.
_TRAILING_COMMA = re.compile(rb'("(?:\\.|[^"\\])*+(?:"|\Z))|,(\s*+[\]}])')


def _drop_trailing_comma(match: re.Match[bytes]) -> bytes:
    return match.group(1) or match.group(2)


def loads_lenient(payload: bytes) -> Any:
    """Parse JSON, accepting trailing commas before `]` or `}` (vendor examples carry them).

    The strict parser runs first; only a payload it refuses is rewritten and parsed again, so
    well-formed input pays nothing for the leniency.
    """
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as first:
        repaired = _TRAILING_COMMA.sub(_drop_trailing_comma, payload)
        if repaired == payload:
            raise DecodeError("invalid_json", f"body is not valid JSON: {first}") from None
        try:
            return orjson.loads(repaired)
        except orjson.JSONDecodeError:
            raise DecodeError("invalid_json", f"body is not valid JSON: {first}") from None


def parse_rfc3339(value: object, field_name: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime. A value without an offset is UTC."""
    if not isinstance(value, str):
        raise DecodeError("invalid_time", f"{field_name} must be an RFC 3339 string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise DecodeError("invalid_time", f"{field_name} is not RFC 3339: {value!r}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def dumps(value: Any) -> bytes:
    """Serialise one JSON element back to bytes, for the quarantine of a rejected element."""
    return orjson.dumps(value, default=str)


def scale(value: int | float, factor: str) -> float:
    """Multiply in decimal arithmetic so unit conversions are exact (0.1 m/s -> 0.36 km/h, not
    0.36000000000000004). `factor` is a decimal string such as "3.6" or "0.001". Negative zero
    comes back as 0.0."""
    return float(Decimal(repr(value)) * Decimal(factor)) + 0.0


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"
