"""Decoder for the MOBITO Connected Fleet push API over Kafka (decoder name `mobito`).

Every Kafka record value is one flat JSON object describing the latest known state of one VIN.
It becomes exactly one `VehicleEvent` of type `vehicle_status`, kind `signal`.

Identity and time:

- `vin` (required, a non-empty string) is `vehicle.vin` and the `Vehicle.VehicleIdentification.VIN`
  signal; `fleet_id` is `vehicle.fleet_id`. There is no vendor vehicle id, so the vehicle key is
  `vin:<vin>`. Without a usable `vin` the whole message is refused (`missing_vin`).
- `uuid` (required) names the message: event_id `mobito:<uuid>`, which is also the dedupe key.
  Absent or empty gives `missing_field`, a non-string `invalid_field`.
- The body carries no time of its own. `occurred_at` is the Kafka record timestamp, which the
  source passes as `raw.metadata["timestamp"]` (an aware datetime; a naive one counts as UTC).
  Without it, `occurred_at` is `raw.received_at` and the attribute `time_source` says
  `"received_at"`.

Signals. The vendor sends most values as strings; a mapped field is accepted as a JSON number or
a decimal string (`"14312.0"`, `"207"`) and comes out as a float in the VSS unit, whichever form
it arrived in. Booleans are accepted as JSON booleans or as `"true"`/`"false"` in any case.

    vendor field                   unit (vendor)   VSS signal (unit)
    latitude, longitude            degrees         CurrentLocation.Latitude/Longitude (degrees)
    heading                        degrees         CurrentLocation.Heading (degrees)
    altitude                       m               CurrentLocation.Altitude (m)
    mileage                        km              TraveledDistance (m), x 1000
    fuel_level                     %               FuelSystem.RelativeLevel (%)
    remaining_fuel                 l               FuelSystem.AbsoluteLevel (l)
    fuel_remaining_range           km              Powertrain.Range (m), x 1000
    engine_coolant_temperature     Celsius         EngineCoolant.Temperature (Celsius)
    battery_voltage                V               LowVoltageBattery.CurrentVoltage (V)
    distance_until_service         km              Service.DistanceToService (km)
    dtc_data                       "[A, B, ...]"   Diagnostics.DTCList (string[])
    tire_pressure_<row>_<side>     kPa             Chassis.Axle.Row{1,2}.Wheel.{Left,Right}
                                                   .Tire.Pressure (kPa)
    doors_<row>_<side>_is_open     bool            Cabin.Door.Row{1,2}.{Driver,Passenger}Side
                                                   .IsOpen (bool)
    vehicle_is_locked              lock state      Cabin.Door.*.IsLocked (bool), every door
    vin                            string          VehicleIdentification.VIN

Assumptions and vendor quirks:

- Distances are taken as km. `display_unit_distance` is kept as an attribute and does not change
  the conversion.
- Tyre pressures are taken as kPa. The document gives no unit, but its sample values (186 to 221,
  with targets of 214 and 234) are ordinary car tyre pressures in kPa; in bar they would be about
  2, in psi about 30. The `tire_pressure_target_*` fields have no VSS signal and stay attributes.
- Doors: the vendor names doors by left and right, VSS by driver and passenger side. `steering`
  `"LL"` (left-hand drive) puts the driver on the left, `"RL"` (right-hand drive) on the right.
  When `steering` is missing the car is taken to be left-hand drive; when it has any other value
  the car is also taken to be left-hand drive and `steering` is listed in `unparsed_fields`.
- Misspelled field names are recognised only when listed in `_ALIASES`; nothing is guessed. The
  sender's `doors_ront_right_is_open` is read as `doors_front_right_is_open`. When a message
  carries both spellings, the correct one wins and the misspelled one stays an attribute.
- `vehicle_is_locked`: `LOCKED` and `SECURED` mean locked, `UNLOCKED` unlocked, and `true`/`false`
  (strings in any case, or JSON booleans) mean what they say. The value applies to every door
  in `vss.ALL_DOORS`.
- `dtc_data` arrives as a bracketed, comma-separated string (`"[3178A, B7F34E]"`, `"[]"`); a JSON
  array of strings is accepted too.
- A mapped field that is null is left out. Numbers must be finite; the decimal comma is not read.

Attributes: every other field, under its vendor name and as it came (numeric strings stay
strings), except for these normalisations:

- `check_control_messages`: a bracketed string (`"[955 Tire pressure notification]"`) is stored
  as a list of strings, split on `", "`; a JSON array is stored as it came.
- Fields whose name ends in `_date` keep their value and, when it is a recognised date string,
  gain `<name>_iso`: `"2027-02"` stays `"2027-02"`, `"2027-02-16"` stays as it is,
  `"01.04.2027 00:00:00 UTC"` becomes `"2027-04-01T00:00:00Z"`, and an RFC 3339 timestamp is
  rewritten in UTC by `model.rfc3339` (no offset means UTC). A number, or a string of digits, in
  a `_date` field is not a date (the sample's `service_date` is `71`) and gets no `_iso`.

The keys the decoder adds (`<name>_iso`, `unparsed_fields`, `time_source`) never replace a field
of the same name that the vendor sent.

A field the decoder recognises but cannot interpret (a mapped value that does not convert, an
unknown lock state or steering, a `_date` string in no known format, a `check_control_messages`
that is not a list, a `fleet_id` that is not a string) never rejects the message: its value is
kept as an attribute under its vendor name and its name is added to the attribute
`unparsed_fields` (sorted). Only a body that is not a JSON object, or has no usable `vin` or `uuid`,
raises `DecodeError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any, Final

from fleetstream.errors import DecodeError
from fleetstream.normalize import vss
from fleetstream.normalize.base import Decoded, json_type, loads_lenient, parse_rfc3339, scale
from fleetstream.normalize.model import JsonValue, RawMessage, VehicleEvent, VehicleRef, rfc3339

VENDOR: Final = "mobito"
EVENT_TYPE: Final = "vehicle_status"

_KM_TO_M: Final = "1000"
_NUMERIC: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_DIGITS: Final = re.compile(r"[+-]?\d+(?:\.\d*)?")


class _Unparsable(Exception):
    """Raised by a converter when a vendor value has a form it cannot read."""


Convert = Callable[[Any], JsonValue]
"""Turns one vendor value into the signal value, or raises `_Unparsable`."""


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Unparsable
    if isinstance(value, str) and not _NUMERIC.fullmatch(value.strip()):
        raise _Unparsable
    try:
        parsed = float(value)
    except OverflowError:  # an integer beyond the float range
        raise _Unparsable from None
    if not math.isfinite(parsed):
        raise _Unparsable
    return parsed


def _num(factor: str | None = None) -> Convert:
    """A number as a float, multiplied exactly by `factor` when given; -0.0 comes out as 0.0."""

    def convert(value: Any) -> JsonValue:
        number = _number(value)
        return number + 0.0 if factor is None else scale(number, factor)

    return convert


_BOOLEANS: Final[Mapping[str, bool]] = {"true": True, "false": False}
_LOCK_STATES: Final[Mapping[str, bool]] = {
    "locked": True,
    "secured": True,
    "unlocked": False,
    **_BOOLEANS,
}


def _lookup(table: Mapping[str, bool], value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        found = table.get(value.strip().lower())
        if found is not None:
            return found
    raise _Unparsable


def _flag(value: Any) -> JsonValue:
    return _lookup(_BOOLEANS, value)


def _bracketed(value: Any, separator: str) -> list[str]:
    """A list written as `[a, b, c]` (Java's List.toString), split on `separator`."""
    if not isinstance(value, str):
        raise _Unparsable
    text = value.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise _Unparsable
    inner = text[1:-1]
    return inner.split(separator) if inner.strip() else []


def _code_list(value: Any) -> JsonValue:
    if isinstance(value, list):
        if all(isinstance(item, str) for item in value):
            return list(value)
        raise _Unparsable
    codes = [code.strip() for code in _bracketed(value, ",")]
    if not all(codes):
        raise _Unparsable
    return codes


_SIGNALS: Final[Mapping[str, tuple[str, Convert]]] = {
    "latitude": (vss.LATITUDE, _num()),
    "longitude": (vss.LONGITUDE, _num()),
    "heading": (vss.HEADING, _num()),
    "altitude": (vss.ALTITUDE, _num()),
    "mileage": (vss.TRAVELED_DISTANCE, _num(_KM_TO_M)),
    "fuel_level": (vss.FUEL_RELATIVE_LEVEL, _num()),
    "remaining_fuel": (vss.FUEL_ABSOLUTE_LEVEL, _num()),
    "fuel_remaining_range": (vss.RANGE, _num(_KM_TO_M)),
    "engine_coolant_temperature": (vss.COOLANT_TEMPERATURE, _num()),
    "battery_voltage": (vss.LOW_VOLTAGE_BATTERY_VOLTAGE, _num()),
    "distance_until_service": (vss.DISTANCE_TO_SERVICE, _num()),
    "dtc_data": (vss.DTC_LIST, _code_list),
    "tire_pressure_front_left": (vss.tire_pressure(1, "Left"), _num()),
    "tire_pressure_front_right": (vss.tire_pressure(1, "Right"), _num()),
    "tire_pressure_rear_left": (vss.tire_pressure(2, "Left"), _num()),
    "tire_pressure_rear_right": (vss.tire_pressure(2, "Right"), _num()),
}

# vendor door field -> (VSS row, the vendor's side)
_DOORS: Final[Mapping[str, tuple[int, str]]] = {
    "doors_front_left_is_open": (1, "left"),
    "doors_front_right_is_open": (1, "right"),
    "doors_rear_left_is_open": (2, "left"),
    "doors_rear_right_is_open": (2, "right"),
}
_LOCK: Final = "vehicle_is_locked"
_LOCK_PATHS: Final = tuple(vss.door_is_locked(row, side) for row, side in vss.ALL_DOORS)

# steering code -> the vendor side the driver sits on
_DRIVER_SIDES: Final[Mapping[str, str]] = {"LL": "left", "RL": "right"}
_DEFAULT_DRIVER_SIDE: Final = "left"

_ALIASES: Final[Mapping[str, str]] = {"doors_ront_right_is_open": "doors_front_right_is_open"}
"""Misspellings the sender is known to use, mapped to the field name they stand for."""

_MAPPED: Final = frozenset({*_SIGNALS, *_DOORS, _LOCK})
_IDENTITY: Final = frozenset({"vin", "uuid", "fleet_id"})

_CHECK_CONTROL: Final = "check_control_messages"
_YEAR_MONTH: Final = re.compile(r"(\d{4})-(\d{2})")
_DAY: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_DOTTED_UTC: Final = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4}) (\d{1,2}):(\d{2}):(\d{2}) UTC")
_TIMESTAMP: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:[Zz]|[+-]\d{2}:\d{2})?"
)


def _iso_date(value: str) -> str:
    """The normalised form of a vendor date string, or `_Unparsable`."""
    text = value.strip()
    try:
        if match := _YEAR_MONTH.fullmatch(text):
            date(int(match.group(1)), int(match.group(2)), 1)
            return text
        if _DAY.fullmatch(text):
            return date.fromisoformat(text).isoformat()
        if match := _DOTTED_UTC.fullmatch(text):
            day, month, year, hour, minute, second = (int(part) for part in match.groups())
            return rfc3339(datetime(year, month, day, hour, minute, second, tzinfo=UTC))
        if _TIMESTAMP.fullmatch(text):
            return rfc3339(parse_rfc3339(text.upper(), "date"))
    except (ValueError, DecodeError):
        pass
    raise _Unparsable


def _identity(body: Mapping[str, Any]) -> tuple[str, str]:
    vin = body.get("vin")
    if not isinstance(vin, str) or not vin.strip():
        got = "" if vin is None else f" (got {vin!r})"
        raise DecodeError(
            "missing_vin",
            f"MOBITO message has no vin{got}; it cannot be attributed to a vehicle",
        )
    uuid = body.get("uuid")
    if uuid is None or uuid == "":
        raise DecodeError("missing_field", "MOBITO message has no uuid to identify it by")
    if not isinstance(uuid, str):
        raise DecodeError("invalid_field", f"field 'uuid' must be a string, got {uuid!r}")
    return vin, uuid


class _Mapper:
    """Collects the signals and attributes of one message."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self.body = body
        self.signals: dict[str, JsonValue] = {}
        self.attributes: dict[str, JsonValue] = {}
        self.derived: dict[str, JsonValue] = {}
        self.unparsed: list[str] = []
        self.door_sides = self._door_sides(body.get("steering"))

    def _door_sides(self, steering: Any) -> Mapping[str, str]:
        """Vendor side (`left`/`right`) -> VSS side, from the steering position."""
        driver = _DEFAULT_DRIVER_SIDE
        if steering is not None:
            code = steering.strip().upper() if isinstance(steering, str) else ""
            if code in _DRIVER_SIDES:
                driver = _DRIVER_SIDES[code]
            else:
                self.unparsed.append("steering")
        passenger = "right" if driver == "left" else "left"
        return {driver: "DriverSide", passenger: "PassengerSide"}

    def field(self, key: str, value: Any) -> None:
        name = _ALIASES.get(key, key)
        if name != key and name in self.body:
            name = key  # the correctly spelled field is present and wins
        if name in _MAPPED:
            if value is not None:
                self._signal(key, name, value)
            return
        self.attributes[key] = value
        if key == _CHECK_CONTROL:
            self._check_control(key, value)
        elif key.endswith("_date"):
            self._date(key, value)

    def _signal(self, key: str, name: str, value: Any) -> None:
        try:
            if name in _SIGNALS:
                path, convert = _SIGNALS[name]
                self.signals[path] = convert(value)
            elif name in _DOORS:
                row, side = _DOORS[name]
                self.signals[vss.door_is_open(row, self.door_sides[side])] = _flag(value)
            else:
                locked = _lookup(_LOCK_STATES, value)
                self.signals.update(dict.fromkeys(_LOCK_PATHS, locked))
        except _Unparsable:
            self.attributes[key] = value
            self.unparsed.append(key)

    def _check_control(self, key: str, value: Any) -> None:
        if isinstance(value, list):
            return
        try:
            self.attributes[key] = _bracketed(value, ", ")
        except _Unparsable:
            self.unparsed.append(key)

    def _date(self, key: str, value: Any) -> None:
        if not isinstance(value, str) or _DIGITS.fullmatch(value.strip()):
            return
        try:
            self.derived[f"{key}_iso"] = _iso_date(value)
        except _Unparsable:
            self.unparsed.append(key)

    def fleet_id(self, value: Any) -> str | None:
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return value
        self.attributes["fleet_id"] = value
        self.unparsed.append("fleet_id")
        return None


def decode(raw: RawMessage) -> Decoded:
    """Decode one MOBITO Kafka record value; see the module docstring for the mapping."""
    body = loads_lenient(raw.payload)
    if not isinstance(body, dict):
        raise DecodeError("not_an_object", f"body must be a JSON object, got a {json_type(body)}")
    vin, uuid = _identity(body)
    mapper = _Mapper(body)
    fleet_id = mapper.fleet_id(body.get("fleet_id"))
    for key, value in body.items():
        if key not in _IDENTITY:
            mapper.field(key, value)
    mapper.signals[vss.VIN] = vin
    attributes = mapper.attributes
    for key, value in mapper.derived.items():
        attributes.setdefault(key, value)
    if mapper.unparsed:
        attributes.setdefault("unparsed_fields", sorted(mapper.unparsed))

    stamp = raw.metadata.get("timestamp")
    if isinstance(stamp, datetime):
        occurred_at = (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).astimezone(UTC)
    else:
        occurred_at = raw.received_at
        attributes.setdefault("time_source", "received_at")

    event = VehicleEvent(
        event_id=f"{VENDOR}:{uuid}",
        vendor=VENDOR,
        source=raw.source,
        type=EVENT_TYPE,
        kind="signal",
        vehicle=VehicleRef(vendor_id=None, vin=vin, fleet_id=fleet_id),
        occurred_at=occurred_at,
        received_at=raw.received_at,
        signals=mapper.signals,
        attributes=attributes,
    )
    return Decoded(events=[event])
