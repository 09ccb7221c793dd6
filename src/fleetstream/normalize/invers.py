"""Decoder for INVERS OneAPI events delivered over AMQP (decoder name `invers`).

The body of one AMQP message is one JSON object `{"metadata": {...}, "data": {...}}` and becomes
exactly one `VehicleEvent`. The broker properties the AMQP source passes in `raw.metadata`
(`message_id`, `type`, `timestamp`, `correlation_id`, `headers`) repeat the envelope and stand in
for any part of `metadata` the body lacks; the body wins when both are present.

Envelope, identity and time:

- `metadata.id` (a ULID) names the event: event_id `invers:<id>`, which is also the dedupe key.
  Without it the AMQP `message_id` is used; with neither the message is refused (`missing_field`).
- `metadata.type` is the event type, falling back to the AMQP `type`; with neither, `missing_field`.
  An id or type that is present but not a string is `invalid_field`.
- `occurred_at` is `metadata.occurred_at` (RFC 3339), else the AMQP `timestamp` (a naive one counts
  as UTC), else `raw.received_at` with the attribute `time_source: "received_at"`. An
  `occurred_at` that does not parse is treated as absent, kept as the attribute
  `metadata.occurred_at` and listed in `unparsed_fields`.
- `schema_major_version` (from `metadata`, else the AMQP header of that name) and `flow_id` (from
  `metadata`, else the AMQP `correlation_id`) become attributes of the same names. Any other
  `metadata` key is kept as the attribute `metadata.<key>`, any other top-level key under its name.
- Vehicle: `vehicle.vendor_id` is `data.vehicle_id`, else `data.vehicle.id`, else, for master-data
  events only, `data.id` (there the data is the vehicle itself). A string is taken as it is, an
  integer as its decimal text; without a usable id the event is still kept with `vendor_id` None
  (a present id of another type is also listed in `unparsed_fields`). `vehicle.vin` is `data.vin`
  or `data.vehicle.vin` when it is a non-empty string, and is also the `VehicleIdentification.VIN`
  signal (without a per-signal time).

Event types and kinds: `VehicleStateRecorded` and `CentralLockStatusChanged` are `signal` events,
`VehicleChanged` (master data such as license plate and VIN) is an `admin` event. Any other type is
kept as a `signal` event whose data all stays in attributes (no property is mapped, since its
meaning in an unknown event is not known), and its type is added to `Decoded.unknown_types`.

Vehicle state properties. A property is an object holding at least `timestamp` and `value`; it is
recognised at any depth of `data` (objects only: lists are kept whole and not searched) when its
`timestamp` is RFC 3339, or when those are its only two keys. It is mapped by its own key, wherever
it sits, and every mapped signal gets the property's timestamp in `signal_times`:

    property                                   vendor unit   VSS signal (unit)
    mileage_in_kilometers                      km            TraveledDistance (m), x 1000
    position  {lat, lon}                       degrees       CurrentLocation.Latitude/Longitude
    remaining_range_in_kilometers              km            Powertrain.Range (m), x 1000
    fuel_level_in_percent (older schemas)      %             FuelSystem.RelativeLevel (%)
    state_of_charge_or_fuel_level_in_percent   %             TractionBattery.StateOfCharge.Current
                                                             (%) if electric, FuelSystem
                                                             .RelativeLevel (%) if combustion
    central_lock  LOCKED/UNLOCKED or bool      lock state    Cabin.Door.*.IsLocked (bool), every
                                                             door in `vss.ALL_DOORS`
    ignition      ON/OFF or bool               state         LowVoltageSystemState ("ON"/"OFF")

- Numbers must be finite JSON numbers (a numeric string is not read) and come out as floats;
  latitude must lie in [-90, 90] and longitude in [-180, 180]. Lock and ignition words are read
  in any case; `true` means locked and ON.
- `state_of_charge_or_fuel_level_in_percent` names a percentage whose meaning depends on the
  powertrain, so it is mapped only when `data` says which powertrain the vehicle has: a string
  (or a property holding one) under `drive_type`, `energy_type`, `propulsion_type`,
  `powertrain_type` or `fuel_type`, at any depth. `ELECTRIC`, `BEV`, `EV` and
  `BATTERY_ELECTRIC` mean electric; `COMBUSTION`, `ICE`, `PETROL`, `GASOLINE` and `DIESEL` mean
  combustion (any case, `-` or space read as `_`). Hybrids, other values, conflicting hints or no
  hint leave it unmapped: it stays an attribute, because a guessed reading would store a fuel
  level as a state of charge or the reverse. It is not listed in `unparsed_fields`.
- When two properties map to the same signal (the same key at two depths, or the fuel level under
  both names), the later timestamp wins; on a tie the one later in the document. The other stays
  an attribute.
- `driving_enabled` has no VSS signal; like every unmapped property it stays an attribute.

Attributes keep everything else, keyed by the dotted path within `data`
(`vehicle_state.door_status`, `license_plate`): every non-property field as it came (ids and the
VIN included), and every property that is not mapped, as it came (`{"timestamp": ..., "value":
...}`). A mapped property is not repeated unless it carries keys the mapping does not read (beside
`timestamp` and `value`, or beside `lat` and `lon` in a position), so nothing is dropped. A
property whose value is null is kept as an attribute and maps nothing. The keys the decoder adds
(`schema_major_version`, `flow_id`, `metadata.*`, `time_source`, `unparsed_fields`) never replace
a data field of the same name.

A property the decoder cannot read (a mapped value of the wrong type or out of range, or a
two-key property whose timestamp is not RFC 3339) never rejects the message: it is kept as an
attribute under its path and the path is listed in the attribute `unparsed_fields` (sorted); so is
`data` when it is not an object (it is then kept whole as the attribute `data`). Only a body that
is not a JSON object, a `metadata` that is not an object, or a missing or ill-typed id or type
raise `DecodeError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from fleetstream.errors import DecodeError
from fleetstream.normalize import vss
from fleetstream.normalize.base import Decoded, json_type, loads_lenient, parse_rfc3339, scale
from fleetstream.normalize.model import EventKind, JsonValue, RawMessage, VehicleEvent, VehicleRef

VENDOR: Final = "invers"

SIGNAL_TYPES: Final = frozenset({"VehicleStateRecorded", "CentralLockStatusChanged"})
ADMIN_TYPES: Final = frozenset({"VehicleChanged"})
KNOWN_TYPES: Final = SIGNAL_TYPES | ADMIN_TYPES

_KM_TO_M: Final = "1000"
_PROPERTY_KEYS: Final = frozenset({"timestamp", "value"})
_ENVELOPE: Final = frozenset({"id", "type", "occurred_at", "schema_major_version", "flow_id"})
_SOC_OR_FUEL: Final = "state_of_charge_or_fuel_level_in_percent"

Powertrain = Literal["electric", "combustion"]

_POWERTRAIN_KEYS: Final = frozenset(
    {"drive_type", "energy_type", "propulsion_type", "powertrain_type", "fuel_type"}
)
_POWERTRAINS: Final[Mapping[str, Powertrain]] = {
    "electric": "electric",
    "bev": "electric",
    "ev": "electric",
    "battery_electric": "electric",
    "combustion": "combustion",
    "ice": "combustion",
    "petrol": "combustion",
    "gasoline": "combustion",
    "diesel": "combustion",
}
_SOC_OR_FUEL_TARGETS: Final[Mapping[Powertrain, str]] = {
    "electric": vss.SOC_CURRENT,
    "combustion": vss.FUEL_RELATIVE_LEVEL,
}


class _Unparsable(Exception):
    """Raised by a converter when a property value has a form it cannot read."""


Convert = Callable[[Any], dict[str, JsonValue]]
"""Turns one property value into its signals, or raises `_Unparsable`."""


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Unparsable
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        raise _Unparsable from None
    if not math.isfinite(number):
        raise _Unparsable
    return number + 0.0


def _num(path: str, factor: str | None = None) -> Convert:
    """A number as a float, multiplied exactly by `factor` when given."""

    def convert(value: Any) -> dict[str, JsonValue]:
        number = _number(value)
        return {path: number if factor is None else scale(number, factor)}

    return convert


def _position(value: Any) -> dict[str, JsonValue]:
    if not isinstance(value, dict):
        raise _Unparsable
    lat, lon = _number(value.get("lat")), _number(value.get("lon"))
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise _Unparsable
    return {vss.LATITUDE: lat, vss.LONGITUDE: lon}


def _word(value: Any, words: Mapping[str, bool]) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        found = words.get(value.strip().lower())
        if found is not None:
            return found
    raise _Unparsable


_LOCK_PATHS: Final = tuple(vss.door_is_locked(row, side) for row, side in vss.ALL_DOORS)


def _central_lock(value: Any) -> dict[str, JsonValue]:
    return dict.fromkeys(_LOCK_PATHS, _word(value, {"locked": True, "unlocked": False}))


def _ignition(value: Any) -> dict[str, JsonValue]:
    on = _word(value, {"on": True, "off": False})
    return {vss.LOW_VOLTAGE_SYSTEM_STATE: "ON" if on else "OFF"}


_SIGNALS: Final[Mapping[str, Convert]] = {
    "mileage_in_kilometers": _num(vss.TRAVELED_DISTANCE, _KM_TO_M),
    "position": _position,
    "remaining_range_in_kilometers": _num(vss.RANGE, _KM_TO_M),
    "fuel_level_in_percent": _num(vss.FUEL_RELATIVE_LEVEL),
    "central_lock": _central_lock,
    "ignition": _ignition,
}

_VALUE_KEYS_READ: Final[Mapping[str, frozenset[str]]] = {"position": frozenset({"lat", "lon"})}
"""Properties whose object value the mapping reads only partly: the keys it reads."""


@dataclass(frozen=True, slots=True)
class _Property:
    path: str
    name: str
    body: dict[str, Any]
    at: datetime

    @property
    def value(self) -> Any:
        return self.body["value"]

    def fully_read(self) -> bool:
        """Whether the signals carry everything the property holds, so it need not be kept."""
        if self.body.keys() != _PROPERTY_KEYS:
            return False
        read = _VALUE_KEYS_READ.get(self.name)
        return read is None or (isinstance(self.value, dict) and self.value.keys() <= read)


@dataclass(slots=True)
class _Walk:
    """`data` taken apart: its properties and its other fields, each under its dotted path."""

    properties: list[_Property] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    """Every field and every unmapped property, as it came, in document order."""
    unparsed: list[str] = field(default_factory=list)


def _property_time(node: Mapping[str, Any]) -> datetime | None:
    try:
        return parse_rfc3339(node["timestamp"], "timestamp")
    except DecodeError:
        return None


def _walk(data: Mapping[str, Any], out: _Walk) -> None:
    """Collect the properties and fields of `data` in document order.

    Iterative, so the deepest body the JSON parser accepts cannot exhaust Python's stack."""
    stack: list[tuple[str, Iterator[tuple[str, Any]]]] = [("", iter(data.items()))]
    while stack:
        prefix, items = stack[-1]
        for key, value in items:
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value and _PROPERTY_KEYS <= value.keys():
                at = _property_time(value)
                if at is not None:
                    out.properties.append(_Property(path, key, value, at))
                    out.fields[path] = value
                    continue
                if value.keys() == _PROPERTY_KEYS:
                    out.fields[path] = value
                    out.unparsed.append(path)
                    continue
            if isinstance(value, dict) and value:
                stack.append((f"{path}.", iter(value.items())))
                break
            out.fields[path] = value
        else:
            stack.pop()


def _strings_under(walk: _Walk, keys: frozenset[str]) -> Iterator[str]:
    """String values of fields or properties whose own key is one of `keys`."""
    for path, value in walk.fields.items():
        name = path.rpartition(".")[2]
        if name not in keys:
            continue
        inner = value["value"] if isinstance(value, dict) and "value" in value else value
        if isinstance(inner, str):
            yield inner


def _powertrain(walk: _Walk) -> Powertrain | None:
    found = {
        _POWERTRAINS.get(text.strip().lower().replace("-", "_").replace(" ", "_"))
        for text in _strings_under(walk, _POWERTRAIN_KEYS)
    }
    if len(found) == 1:
        return found.pop()
    return None


def _convert(prop: _Property, powertrain: Powertrain | None) -> dict[str, JsonValue] | None:
    """The property's signals; None when it maps to nothing. Raises `_Unparsable`."""
    if prop.value is None:
        return None
    if prop.name == _SOC_OR_FUEL:
        target = _SOC_OR_FUEL_TARGETS.get(powertrain) if powertrain else None
        return None if target is None else _num(target)(prop.value)
    convert = _SIGNALS.get(prop.name)
    return None if convert is None else convert(prop.value)


@dataclass(slots=True)
class _Signals:
    values: dict[str, JsonValue] = field(default_factory=dict)
    times: dict[str, datetime] = field(default_factory=dict)
    owners: dict[str, _Property] = field(default_factory=dict)


def _map_properties(walk: _Walk) -> _Signals:
    """Map every recognised property, the latest one winning per signal; consume what is read."""
    out = _Signals()
    powertrain = _powertrain(walk)
    # A stable sort by time: a later property, or an equal one later in the document, wins.
    for prop in sorted(walk.properties, key=lambda p: p.at):
        try:
            signals = _convert(prop, powertrain)
        except _Unparsable:
            walk.unparsed.append(prop.path)
            continue
        for path, value in (signals or {}).items():
            out.values[path] = value
            out.times[path] = prop.at
            out.owners[path] = prop
    for prop in {id(p): p for p in out.owners.values()}.values():
        if prop.fully_read():
            del walk.fields[prop.path]
    return out


def _text(value: Any, field_name: str) -> str | None:
    """A non-empty string, or None when absent or empty; another type is `invalid_field`."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise DecodeError("invalid_field", f"{field_name} must be a string, got {value!r}")
    return value


def _required(
    metadata: Mapping[str, Any], transport: Mapping[str, Any], key: str, amqp_key: str
) -> str:
    found = _text(metadata.get(key), f"metadata.{key}") or _text(
        transport.get(amqp_key), f"AMQP {amqp_key}"
    )
    if found is None:
        raise DecodeError(
            "missing_field",
            f"INVERS event has no metadata.{key} and no AMQP {amqp_key} to take it from",
        )
    return found


def _vehicle_id(walk: _Walk, admin: bool) -> str | None:
    paths = ("vehicle_id", "vehicle.id", "id") if admin else ("vehicle_id", "vehicle.id")
    for path in paths:
        value = walk.fields.get(path)
        if value is None or value == "":
            continue
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        walk.unparsed.append(path)
        return None
    return None


def _vin(walk: _Walk) -> str | None:
    for path in ("vin", "vehicle.vin"):
        value = walk.fields.get(path)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _occurred_at(value: Any, walk: _Walk, attributes: dict[str, JsonValue]) -> datetime | None:
    """`metadata.occurred_at` parsed; one that does not parse is kept, listed, and not used."""
    if value is None:
        return None
    try:
        return parse_rfc3339(value, "metadata.occurred_at")
    except DecodeError:
        attributes.setdefault("metadata.occurred_at", value)
        walk.unparsed.append("metadata.occurred_at")
        return None


def _utc(stamp: datetime) -> datetime:
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).astimezone(UTC)


def _header(transport: Mapping[str, Any], name: str) -> Any:
    headers = transport.get("headers")
    if not isinstance(headers, Mapping):
        return None
    value = headers.get(name)
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return value


def decode(raw: RawMessage) -> Decoded:
    """Decode one INVERS OneAPI event; see the module docstring for the mapping."""
    body = loads_lenient(raw.payload)
    if not isinstance(body, dict):
        raise DecodeError("not_an_object", f"body must be a JSON object, got a {json_type(body)}")
    metadata = body.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise DecodeError(
            "invalid_field", f"metadata must be a JSON object, got a {json_type(metadata)}"
        )
    transport = raw.metadata
    event_id = _required(metadata, transport, "id", "message_id")
    event_type = _required(metadata, transport, "type", "type")
    known = event_type in KNOWN_TYPES
    admin = event_type in ADMIN_TYPES
    kind: EventKind = "admin" if admin else "signal"

    walk = _Walk()
    data = body.get("data")
    if isinstance(data, dict):
        _walk(data, walk)
    elif data is not None:
        walk.fields["data"] = data
        walk.unparsed.append("data")
    signals = _map_properties(walk) if known else _Signals()
    vendor_id = _vehicle_id(walk, admin)
    vin = _vin(walk)
    if vin is not None:
        signals.values[vss.VIN] = vin

    attributes: dict[str, JsonValue] = dict(walk.fields)
    occurred_at: datetime | None = None
    for key, value in metadata.items():
        if key == "occurred_at":
            occurred_at = _occurred_at(value, walk, attributes)
        elif key not in _ENVELOPE:
            attributes.setdefault(f"metadata.{key}", value)
    for key, value in body.items():
        if key not in ("metadata", "data"):
            attributes.setdefault(key, value)

    version = metadata.get("schema_major_version")
    if version is None:
        version = _header(transport, "schema_major_version")
    if version is not None:
        attributes.setdefault("schema_major_version", version)
    flow_id = metadata.get("flow_id")
    if flow_id is None:
        flow_id = _text(transport.get("correlation_id"), "AMQP correlation_id")
    if flow_id is not None:
        attributes.setdefault("flow_id", flow_id)

    if occurred_at is None:
        stamp = transport.get("timestamp")
        if isinstance(stamp, datetime):
            occurred_at = _utc(stamp)
        else:
            occurred_at = raw.received_at
            attributes.setdefault("time_source", "received_at")
    if walk.unparsed:
        attributes.setdefault("unparsed_fields", sorted(walk.unparsed))

    event = VehicleEvent(
        event_id=f"{VENDOR}:{event_id}",
        vendor=VENDOR,
        source=raw.source,
        type=event_type,
        kind=kind,
        vehicle=VehicleRef(vendor_id=vendor_id, vin=vin),
        occurred_at=occurred_at,
        received_at=raw.received_at,
        signals=signals.values,
        attributes=attributes,
        signal_times=signals.times,
    )
    return Decoded(events=[event], unknown_types=[] if known else [event_type])
