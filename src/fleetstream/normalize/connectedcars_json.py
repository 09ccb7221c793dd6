"""Decoder for Connected Cars push data streams in JSON (decoder name `connectedcars-json`).

The body is a JSON array of vehicle and admin events; a single object counts as a bulk of one.
Each element becomes one `VehicleEvent` or one `Rejected`, independently of the others.

Where each vendor key goes:

- Envelope (`type`, `id`, `vehicleId`, `time`, `organizationKey`): the event's identity, type,
  time and `vehicle`. `organizationKey` falls back to `raw.metadata["organization"]`.
- Vehicle identity (`vin`, `fleetId`): `vehicle.vin` and `vehicle.fleet_id`, not attributes;
  a `vin` is also the `Vehicle.VehicleIdentification.VIN` signal.
- Mapped fields: a VSS signal in the VSS unit. A mapped field that is null is left out. A number
  may arrive as a numeric string; a bool never counts as a number.
- Everything else: `attributes`, as the vendor sent it. The key is the vendor's field name,
  except that `value` is stored under the event type (`{"can_engine_code": "DFBA"}`), so the
  attributes of different event types never share a key. Two exceptions: `hdop` is stored
  divided by 100, and `car_profiling` keeps `direction` and `gForce` as attributes besides the
  acceleration signal they produce.

Identity: `id` is a per-shard counter, so the event id also names the organization, the subject
and the normalised time:
vehicle events `connectedcars:{org}:{vehicleId}:{type}:{id}:{time}`, admin events
`connectedcars:{org}:{type}:{subject}:{id}:{time}`, with subject `v{vehicleId}`, `f{fleetId}` or
both joined by `/`. Known vehicle event types need a `vehicleId`, admin events a `vehicleId` or a
`fleetId`. An event of an unknown type is kept: with a `vehicleId` it gets a vehicle event id,
without one an admin-style id.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from fleetstream.errors import DecodeError
from fleetstream.normalize import vss
from fleetstream.normalize.base import (
    Decoded,
    Rejected,
    dumps,
    json_type,
    loads_lenient,
    parse_rfc3339,
    scale,
)
from fleetstream.normalize.model import JsonValue, RawMessage, VehicleEvent, VehicleRef, rfc3339

VENDOR: Final = "connectedcars"

ADMIN_TYPES: Final = frozenset(
    {
        "access_granted_to_fleet",
        "access_granted_to_vehicle",
        "access_removed_from_fleet",
        "access_removed_from_vehicle",
        "vehicle_added_to_fleet",
        "vehicle_removed_from_fleet",
        "car_service_booking",
    }
)

_ENVELOPE: Final = frozenset({"type", "id", "vehicleId", "time", "organizationKey"})
_NOT_ATTRIBUTES: Final = _ENVELOPE | {"vin", "fleetId"}
_NUMERIC = re.compile(r"[+-]?(?:\d+(\.\d*)?|(\.\d+))([eE][+-]?\d+)?")


class _WrongType(Exception):
    """Raised by a converter; the caller names the field in the `DecodeError`."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


Convert = Callable[[Any], JsonValue]
"""Turns one vendor value into the signal value, or raises `_WrongType`."""


def _invalid(field: str, expected: str, value: Any) -> DecodeError:
    return DecodeError("invalid_field", f"field {field!r} must be {expected}, got {value!r}")


def _number(value: Any) -> int | float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = _NUMERIC.fullmatch(value)
        if match is not None:
            if match.group(1) is None and match.group(2) is None and match.group(3) is None:
                return int(value)
            parsed = float(value)
            if math.isfinite(parsed):
                return parsed
    raise _WrongType("a number")


def _num(factor: str | None = None) -> Convert:
    """A number, multiplied exactly by `factor` when given. -0.0 comes out as 0.0."""
    if factor is None:

        def convert(value: Any) -> JsonValue:
            number = _number(value)
            return number + 0.0 if isinstance(number, float) else number

    else:

        def convert(value: Any) -> JsonValue:
            return scale(_number(value), factor)

    return convert


def _bool(value: Any) -> JsonValue:
    if isinstance(value, bool):
        return value
    raise _WrongType("a boolean")


def _str(value: Any) -> JsonValue:
    if isinstance(value, str):
        return value
    raise _WrongType("a string")


def _ignition(value: Any) -> JsonValue:
    return "ON" if _bool(value) else "OFF"


@dataclass(frozen=True, slots=True)
class _Rule:
    """Vendor field `field` becomes signal `target`, or attribute `target` if `attribute`."""

    field: str
    target: str
    convert: Convert
    attribute: bool = False


Fill = Callable[[Mapping[str, Any], dict[str, JsonValue], dict[str, JsonValue]], None]


@dataclass(frozen=True, slots=True)
class _Spec:
    rules: tuple[_Rule, ...] = ()
    fill: Fill | None = None
    """Custom mapping for what rules cannot say; it must not consume keys (they stay attributes)."""
    skip: frozenset[str] = _NOT_ATTRIBUTES
    """Keys that do not go to attributes: envelope, identity and the fields the rules consume."""


def _spec(*rules: _Rule, fill: Fill | None = None) -> _Spec:
    return _Spec(rules, fill, _NOT_ATTRIBUTES | {rule.field for rule in rules})


def _value(target: str, convert: Convert) -> _Spec:
    return _spec(_Rule("value", target, convert))


_G: Final = repr(vss.STANDARD_GRAVITY_M_S2)
_PROFILE_AXES: Final[dict[str, tuple[str, str]]] = {
    "acceleration": (vss.ACCELERATION_LONGITUDINAL, _G),
    "brake": (vss.ACCELERATION_LONGITUDINAL, "-" + _G),
    "turn_left": (vss.ACCELERATION_LATERAL, _G),
    "turn_right": (vss.ACCELERATION_LATERAL, "-" + _G),
}


def _profiling(
    element: Mapping[str, Any], signals: dict[str, JsonValue], _: dict[str, JsonValue]
) -> None:
    """`gForce` in g along the axis and sign that the `direction` prefix names."""
    g_force = element.get("gForce")
    direction = element.get("direction")
    force = None
    if g_force is not None:
        try:
            force = _number(g_force)
        except _WrongType as wrong:
            raise _invalid("gForce", wrong.expected, g_force) from None
    if direction is None:
        return
    if not isinstance(direction, str):
        raise _invalid("direction", "a string", direction)
    axis = _PROFILE_AXES.get(direction) or _PROFILE_AXES.get(direction.rpartition("_")[0])
    if axis is None or force is None:
        return
    path, factor = axis
    signals[path] = scale(force, factor)


_KM_TO_M: Final = "1000"
_UNMAPPED: Final = _spec()

_SPECS: Final[dict[str, _Spec]] = {
    "can_ambient_air_temperature_celsius": _value(vss.AIR_TEMPERATURE, _num()),
    "can_engine_coolant_temperature_celsius": _value(vss.COOLANT_TEMPERATURE, _num()),
    "can_fuel_level_liters": _value(vss.FUEL_ABSOLUTE_LEVEL, _num()),
    "can_fuel_level_percent": _value(vss.FUEL_RELATIVE_LEVEL, _num()),
    "can_high_voltage_battery_charge_percent": _value(vss.SOC_DISPLAYED, _num()),
    "can_high_voltage_battery_temperature_celsius": _value(vss.BATTERY_TEMPERATURE_AVERAGE, _num()),
    "can_mil_lamp": _value(vss.MIL_ON, _bool),
    "can_next_service_days": _value(vss.TIME_TO_SERVICE, _num(str(vss.SECONDS_PER_DAY))),
    "can_next_service_km": _value(vss.DISTANCE_TO_SERVICE, _num()),
    "can_odometer_km": _value(vss.TRAVELED_DISTANCE, _num(_KM_TO_M)),
    "can_odometer10_km": _value(vss.TRAVELED_DISTANCE, _num(_KM_TO_M)),
    "daily_can_odometer_km": _value(vss.TRAVELED_DISTANCE, _num(_KM_TO_M)),
    "car_odometer_km": _value(vss.TRAVELED_DISTANCE, _num(_KM_TO_M)),
    "can_range_total_km": _value(vss.RANGE, _num(_KM_TO_M)),
    "can_vehicle_speed_kph": _value(vss.SPEED, _num()),
    "can_vin": _value(vss.VIN, _str),
    "car_battery_voltage": _value(vss.LOW_VOLTAGE_BATTERY_VOLTAGE, _num()),
    "car_ignition": _value(vss.LOW_VOLTAGE_SYSTEM_STATE, _ignition),
    "gps_position": _spec(
        _Rule("latitude", vss.LATITUDE, _num()),
        _Rule("longitude", vss.LONGITUDE, _num()),
        _Rule("speed", vss.SPEED, _num()),
        _Rule("direction", vss.HEADING, _num()),
        _Rule("eph", vss.HORIZONTAL_ACCURACY, _num()),
        _Rule("hdop", "hdop", _num("0.01"), attribute=True),
    ),
    "car_profiling": _spec(fill=_profiling),
    **dict.fromkeys(
        (
            "calc_vehicle_idle",
            "can_adblue_remaining_distance_km",
            "can_distance_with_mil_on_km",
            "can_dtc",
            "can_engine_code",
            "can_exceeded_oil_change_days",
            "can_exceeded_oil_change_km",
            "can_last_oil_change_days",
            "can_last_oil_change_km",
            "can_last_service_at_date",
            "can_last_service_at_odometer",
            "can_last_service_days",
            "can_last_service_km",
            "can_next_oil_change_30days",
            "can_next_oil_change_days",
            "can_next_oil_change_km",
            "can_next_service_30days",
            "can_oil_change_interval_fixed_days",
            "can_oil_change_interval_fixed_km",
            "can_oil_change_interval_variable_days",
            "can_oil_change_interval_variable_km",
            "can_oil_change_type_is_fixed",
            "can_oil_degradation_percent",
            "can_service_interval_days",
            "can_service_interval_km",
            "car_roadworthy_inspection_date",
            "gpio_battery_external_disconnect",
            "service_reminder_lead",
            *ADMIN_TYPES,
        ),
        _UNMAPPED,
    ),
}


def _integer_text(value: Any) -> str | None:
    """The decimal form of an integer id sent as a JSON number or a string of digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return str(int(value))
    return None


def _id_field(element: Mapping[str, Any], field: str, required: bool) -> str | None:
    value = element.get(field)
    if value is None:
        if required:
            raise DecodeError("missing_field", f"missing field {field!r}")
        return None
    text = _integer_text(value)
    if text is None:
        raise DecodeError("invalid_field", f"field {field!r} must be an integer, got {value!r}")
    return text


def _decode_element(
    element: Any, raw: RawMessage, default_org: str | None
) -> tuple[VehicleEvent, bool]:
    event_type = element.get("type")
    if event_type is None:
        raise DecodeError("missing_field", "missing field 'type'")
    if not isinstance(event_type, str) or not event_type:
        raise DecodeError("invalid_field", f"field 'type' must be a string, got {event_type!r}")
    spec = _SPECS.get(event_type)
    is_admin = event_type in ADMIN_TYPES
    counter = _id_field(element, "id", required=True)
    time = element.get("time")
    if time is None:
        raise DecodeError("missing_field", "missing field 'time'")
    occurred_at = parse_rfc3339(time, "time")

    organization = element.get("organizationKey")
    if organization is None or organization == "":
        organization = default_org
    elif not isinstance(organization, str):
        raise DecodeError(
            "invalid_field", f"field 'organizationKey' must be a string, got {organization!r}"
        )
    vehicle_id = _id_field(element, "vehicleId", required=spec is not None and not is_admin)
    fleet_id = _id_field(element, "fleetId", required=False)
    vin = element.get("vin")
    if vin is not None and not isinstance(vin, str):
        raise DecodeError("invalid_field", f"field 'vin' must be a string, got {vin!r}")

    signals: dict[str, JsonValue] = {}
    attributes: dict[str, JsonValue] = {}
    active = spec or _UNMAPPED
    for rule in active.rules:
        value = element.get(rule.field)
        if value is None:
            continue
        try:
            converted = rule.convert(value)
        except _WrongType as wrong:
            raise _invalid(rule.field, wrong.expected, value) from None
        (attributes if rule.attribute else signals)[rule.target] = converted
    if active.fill is not None:
        active.fill(element, signals, attributes)
    skip = active.skip
    for key, value in element.items():
        if key not in skip:
            attributes[event_type if key == "value" else key] = value
    if vin is None:
        vin = signals.get(vss.VIN)
    else:
        signals.setdefault(vss.VIN, vin)

    org = organization or ""
    time_text = rfc3339(occurred_at)
    if vehicle_id is not None and not is_admin:
        event_id = f"{VENDOR}:{org}:{vehicle_id}:{event_type}:{counter}:{time_text}"
    else:
        subject = "/".join(
            f"{prefix}{value}" for prefix, value in (("v", vehicle_id), ("f", fleet_id)) if value
        )
        if is_admin and not subject:
            raise DecodeError("missing_field", "missing field 'vehicleId' or 'fleetId'")
        event_id = f"{VENDOR}:{org}:{event_type}:{subject}:{counter}:{time_text}"

    event = VehicleEvent(
        event_id=event_id,
        vendor=VENDOR,
        source=raw.source,
        type=event_type,
        kind="admin" if is_admin else "signal",
        vehicle=VehicleRef(
            vendor_id=vehicle_id, vin=vin, fleet_id=fleet_id, organization=organization
        ),
        occurred_at=occurred_at,
        received_at=raw.received_at,
        signals=signals,
        attributes=attributes,
    )
    return event, spec is not None


def decode(raw: RawMessage) -> Decoded:
    """Decode one Connected Cars JSON bulk; see the module docstring for the mapping."""
    body = loads_lenient(raw.payload)
    if isinstance(body, dict):
        elements: list[Any] = [body]
    elif isinstance(body, list):
        elements = body
    else:
        raise DecodeError(
            "not_an_array", f"body must be a JSON array of events, got a {json_type(body)}"
        )
    default_org = raw.metadata.get("organization")
    if not isinstance(default_org, str) or not default_org:
        default_org = None
    out = Decoded()
    for index, element in enumerate(elements):
        if not isinstance(element, dict):
            error = DecodeError(
                "not_an_object",
                f"element {index}: must be a JSON object, got a {json_type(element)}",
            )
            out.rejected.append(Rejected(error, dumps(element)))
            continue
        try:
            event, known = _decode_element(element, raw, default_org)
        except DecodeError as failure:
            where = f"element {index} (type {element.get('type')!r})"
            error = DecodeError(failure.reason, f"{where}: {failure.message}")
            out.rejected.append(Rejected(error, dumps(element)))
            continue
        out.events.append(event)
        if not known:
            out.unknown_types.append(event.type)
    return out
