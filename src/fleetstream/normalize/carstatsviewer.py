"""Decoder for the Car Stats Viewer webhook, API 2.x.

The app POSTs one JSON object per request. It never names the vehicle, so the webhook route does:
the source puts the route's vehicle into `RawMessage.metadata["vehicle"]`. Only major version 2
is readable (`apiVersion` arrives as a number or a string); 1.x is refused, and newer 2.x minor
versions are read as 2.x, with keys this module does not know kept as attributes.

One body yields up to three kinds of event, all under vendor `carstatsviewer`:

`realtime_state` (kind `signal`), from the top-level 2.0 keys when `timestamp` is present.
    event_id `carstatsviewer:<vehicle>:state:<timestamp>`. Vendor units and their conversion:
    `alt` m, `ambientTemperature` Celsius, `lat`/`lon` degrees (unchanged); `batteryLevel` Wh
    -> kWh; `power` mW with negative meaning charging -> W with positive meaning into the
    battery; `speed` m/s -> km/h; `stateOfCharge` 0..1 -> %; `chargePortConnected` bool;
    `ignitionState` -> LowVoltageSystemState; `selectedGear` P/D/N/R -> 126/127/0/-1. An
    ignition state or gear outside those lists stays an attribute under its vendor name.
    Attributes: `apiVersion`, `appVersion` and unknown top-level keys, as they came.

`driving_point` (kind `signal`), one per `drivingPoints[]` element (API 2.1).
    event_id `carstatsviewer:<vehicle>:point:<driving_point_epoch_time>`. Signals: `alt`, `lat`,
    `lon`, `state_of_charge` (0..1 -> %). Attributes, unconverted and under vendor names:
    `distance_delta` (metres driven since the previous point), `energy_delta` (Wh used since the
    previous point), `point_marker_type` (1 = drive started, 2 = drive ended), and unknown keys.

`charging_session` (kind `entity`), one per `chargingSessions[]` element (API 2.1).
    event_id `carstatsviewer:<vehicle>:charging_session:<charging_session_id>`. The app sends a
    session again after merging it with a later one; the re-sent version replaces the stored
    one. `version` is the first 16 hex digits of the SHA-256 of the session serialised with
    sorted keys, so an identical re-send is a duplicate and a changed session a new version.
    occurred_at is the latest of `end_epoch_time`, `start_epoch_time` and the charging points'
    times, so versions of a growing session order by time. Signals: `lat`, `lon` when given.
    Attributes are the row a sink stores in its charging_sessions table:

        session_id                   int    charging_session_id
        start_time                   str    RFC 3339 UTC, or None
        end_time                     str    RFC 3339 UTC, or None while the session is open
        charge_duration_secs         float  chargeTime (ms) / 1000, or None
        charged_energy_kwh           float  charged_energy (Wh) / 1000, or None
        charged_soc_percent          float  charged_soc (0..1) x 100, or None
        outside_temperature_celsius  float  outside_temp (Celsius), or None
        charging_points              list   one object per chargingPoints[] element:
            time               str         charging_point_epoch_time as RFC 3339 UTC
            power_w            float|None  -power (mW) / 1000, positive = into the battery
            energy_delta_kwh   float|None  energy_delta (Wh) / 1000
            soc_percent        float|None  state_of_charge (0..1) x 100
            point_marker_type  int|None    1 = session started, 2 = session ended
            plus any key of the point this module does not know, under its vendor name

    plus any session key this module does not know, under its vendor name (a vendor key that
    collides with one of the names above is shadowed by the canonical value).

Errors: a body that is not a JSON object, has no usable `apiVersion`, lacks the vehicle, or
carries no `timestamp`, `drivingPoints` or `chargingSessions` raises `DecodeError`. A bad part
is quarantined on its own as `Rejected`: the real-time keys (the body without the two arrays),
one driving point, or one charging session; the rest of the body still decodes. Nulls count as
absent. Every converted number is a float, and negative zero becomes 0.0.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson

from fleetstream.errors import DecodeError
from fleetstream.normalize import vss
from fleetstream.normalize.base import Decoded, Rejected, dumps, loads_lenient, scale
from fleetstream.normalize.model import (
    EventKind,
    JsonValue,
    RawMessage,
    VehicleEvent,
    VehicleRef,
    from_epoch_ms,
    rfc3339,
)

VENDOR: Final = "carstatsviewer"
SUPPORTED_MAJOR: Final = 2

JsonObject = Mapping[str, Any]

IGNITION_STATES: Final[Mapping[str, str]] = {
    "Undefined": "UNDEFINED",
    "Locked": "LOCK",
    "Off": "OFF",
    "Accessory": "ACC",
    "On": "ON",
    "Started": "START",
}
GEARS: Final[Mapping[str, int]] = {"P": 126, "D": 127, "N": 0, "R": -1}

# (vendor key, VSS path, decimal factor into the VSS unit or None when the units already agree)
_STATE_NUMBERS: Final = (
    ("alt", vss.ALTITUDE, None),
    ("ambientTemperature", vss.AIR_TEMPERATURE, None),
    ("batteryLevel", vss.SOC_CURRENT_ENERGY, "0.001"),
    ("lat", vss.LATITUDE, None),
    ("lon", vss.LONGITUDE, None),
    ("power", vss.BATTERY_CURRENT_POWER, "-0.001"),
    ("speed", vss.SPEED, "3.6"),
    ("stateOfCharge", vss.SOC_CURRENT, "100"),
)
_POINT_NUMBERS: Final = (
    ("alt", vss.ALTITUDE, None),
    ("lat", vss.LATITUDE, None),
    ("lon", vss.LONGITUDE, None),
    ("state_of_charge", vss.SOC_CURRENT, "100"),
)
_POSITION: Final = (("lat", vss.LATITUDE, None), ("lon", vss.LONGITUDE, None))

_ARRAY_KEYS: Final = frozenset({"drivingPoints", "chargingSessions"})
_VERSION_KEYS: Final = frozenset({"apiVersion", "appVersion"})
_STATE_KEYS: Final = frozenset(
    {key for key, _, _ in _STATE_NUMBERS}
    | _VERSION_KEYS
    | {"chargePortConnected", "ignitionState", "selectedGear", "timestamp"}
)
_POINT_KEYS: Final = frozenset(
    {key for key, _, _ in _POINT_NUMBERS}
    | {"distance_delta", "driving_point_epoch_time", "energy_delta", "point_marker_type"}
)
_SESSION_KEYS: Final = frozenset(
    {
        "chargeTime",
        "charged_energy",
        "charged_soc",
        "chargingPoints",
        "charging_session_id",
        "end_epoch_time",
        "lat",
        "lon",
        "outside_temp",
        "start_epoch_time",
    }
)
_CHARGING_POINT_KEYS: Final = frozenset(
    {
        "charging_point_epoch_time",
        "charging_session_id",
        "energy_delta",
        "point_marker_type",
        "power",
        "state_of_charge",
    }
)

_VERSION_TEXT: Final = re.compile(r"(\d{1,9})(?:\.\d{1,9}){0,3}")


@dataclass(frozen=True, slots=True)
class _Route:
    """What the transport knows about the message: the vehicle, the source and the arrival."""

    vehicle_id: str
    source: str
    received_at: datetime
    vehicle: VehicleRef = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "vehicle", VehicleRef(vendor_id=self.vehicle_id))

    def event(
        self,
        *,
        type_: str,
        kind: EventKind,
        id_part: str,
        occurred_at: datetime,
        signals: dict[str, JsonValue],
        attributes: dict[str, JsonValue],
        version: str | None = None,
    ) -> VehicleEvent:
        return VehicleEvent(
            event_id=f"{VENDOR}:{self.vehicle_id}:{id_part}",
            vendor=VENDOR,
            source=self.source,
            type=type_,
            kind=kind,
            vehicle=self.vehicle,
            occurred_at=occurred_at,
            received_at=self.received_at,
            signals=signals,
            attributes=attributes,
            version=version,
        )


def decode(raw: RawMessage) -> Decoded:
    """Decode one Car Stats Viewer webhook POST body into canonical events."""
    vehicle_id = raw.metadata.get("vehicle")
    if not isinstance(vehicle_id, str) or not vehicle_id:
        raise DecodeError(
            "missing_vehicle",
            "the Car Stats Viewer payload does not name its vehicle and the webhook route "
            f"gave none (metadata['vehicle'] is {vehicle_id!r})",
        )
    body = loads_lenient(raw.payload)
    if not isinstance(body, dict):
        raise DecodeError("not_an_object", f"body must be a JSON object, got {type(body).__name__}")
    _check_version(body.get("apiVersion"))
    points = body.get("drivingPoints")
    sessions = body.get("chargingSessions")
    if body.get("timestamp") is None and points is None and sessions is None:
        raise DecodeError(
            "missing_field",
            "body has neither timestamp nor drivingPoints nor chargingSessions: nothing to decode",
        )

    route = _Route(vehicle_id, raw.source, raw.received_at)
    decoded = Decoded()
    state = {key: value for key, value in body.items() if key not in _ARRAY_KEYS}
    if any(value is not None for key, value in state.items() if key not in _VERSION_KEYS):
        try:
            decoded.events.append(_state_event(state, route))
        except DecodeError as exc:
            decoded.rejected.append(Rejected(exc, dumps(state)))
    if points is not None:
        _decode_each(points, "drivingPoints", _point_event, route, decoded)
    if sessions is not None:
        _decode_each(sessions, "chargingSessions", _session_event, route, decoded)
    return decoded


def _check_version(value: object) -> None:
    if value is None:
        raise DecodeError("missing_field", "apiVersion is missing")
    text: str | None = None
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = repr(value)
    match = _VERSION_TEXT.fullmatch(text) if text is not None else None
    if match is None:
        raise DecodeError("invalid_version", f"apiVersion {_show(value)} is not a version number")
    major = int(match.group(1))
    if major < SUPPORTED_MAJOR:
        raise DecodeError(
            "unsupported_version",
            f"received apiVersion {value!r}, but only Car Stats Viewer webhook API 2.x is "
            "supported; API 1.x is deprecated and incompatible: upgrade the Car Stats Viewer "
            "app (0.25.0 or newer sends API 2.x)",
        )
    if major > SUPPORTED_MAJOR:
        raise DecodeError(
            "unsupported_version",
            f"received apiVersion {value!r}, but only Car Stats Viewer webhook API 2.x is "
            f"supported; API {major}.x is a newer, incompatible major version that this "
            "decoder cannot read yet",
        )


def _decode_each(
    items: object,
    name: str,
    build: Callable[[JsonObject, _Route], VehicleEvent],
    route: _Route,
    decoded: Decoded,
) -> None:
    """Decode every element of one array, quarantining bad elements one by one."""
    if not isinstance(items, list):
        error = DecodeError("invalid_value", f"{name} must be an array, got {_show(items)}")
        decoded.rejected.append(Rejected(error, dumps(items)))
        return
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise DecodeError("not_an_object", f"must be an object, got {_show(item)}")
            decoded.events.append(build(item, route))
        except DecodeError as exc:
            error = DecodeError(exc.reason, f"{name}[{index}]: {exc.message}")
            decoded.rejected.append(Rejected(error, dumps(item)))


def _state_event(state: JsonObject, route: _Route) -> VehicleEvent:
    stamp = _epoch(state, "timestamp")
    if stamp is None:
        raise DecodeError("missing_field", "real-time keys arrived without a timestamp")
    ms, occurred_at = stamp
    signals: dict[str, JsonValue] = {}
    _convert_numbers(state, _STATE_NUMBERS, signals)
    attributes: dict[str, JsonValue] = {
        key: value for key, value in state.items() if key in _VERSION_KEYS or key not in _STATE_KEYS
    }
    connected = state.get("chargePortConnected")
    if connected is not None:
        if not isinstance(connected, bool):
            raise _invalid("chargePortConnected", "a boolean", connected)
        signals[vss.CHARGING_CABLE_CONNECTED] = connected
    ignition = _string(state, "ignitionState")
    if ignition is not None:
        if ignition in IGNITION_STATES:
            signals[vss.LOW_VOLTAGE_SYSTEM_STATE] = IGNITION_STATES[ignition]
        else:
            attributes["ignitionState"] = ignition
    gear = _string(state, "selectedGear")
    if gear is not None:
        if gear in GEARS:
            signals[vss.SELECTED_GEAR] = GEARS[gear]
        else:
            attributes["selectedGear"] = gear
    return route.event(
        type_="realtime_state",
        kind="signal",
        id_part=f"state:{ms}",
        occurred_at=occurred_at,
        signals=signals,
        attributes=attributes,
    )


def _point_event(point: JsonObject, route: _Route) -> VehicleEvent:
    stamp = _epoch(point, "driving_point_epoch_time")
    if stamp is None:
        raise DecodeError("missing_field", "driving_point_epoch_time is missing")
    ms, occurred_at = stamp
    signals: dict[str, JsonValue] = {}
    _convert_numbers(point, _POINT_NUMBERS, signals)
    attributes: dict[str, JsonValue] = {}
    for key in ("distance_delta", "energy_delta"):
        value = _number(point, key)
        if value is not None:
            attributes[key] = value
    marker = _integer(point, "point_marker_type")
    if marker is not None:
        attributes["point_marker_type"] = marker
    attributes.update((key, value) for key, value in point.items() if key not in _POINT_KEYS)
    return route.event(
        type_="driving_point",
        kind="signal",
        id_part=f"point:{ms}",
        occurred_at=occurred_at,
        signals=signals,
        attributes=attributes,
    )


def _session_event(session: JsonObject, route: _Route) -> VehicleEvent:
    session_id = _integer(session, "charging_session_id")
    if session_id is None:
        raise DecodeError("missing_field", "charging_session_id is missing")
    start = _epoch(session, "start_epoch_time")
    end = _epoch(session, "end_epoch_time")
    stamp = end or start
    if stamp is None:
        raise DecodeError("missing_field", "neither end_epoch_time nor start_epoch_time is given")
    raw_points = session.get("chargingPoints")
    if raw_points is None:
        raw_points = []
    elif not isinstance(raw_points, list):
        raise _invalid("chargingPoints", "an array", raw_points)
    points = [_charging_point(item, i, session_id) for i, item in enumerate(raw_points)]
    # A re-sent session grows: order versions by the latest time anywhere in them, so an older
    # version delivered late never replaces a newer one.
    occurred_at = max([stamp[1], *(s[1] for s in (start, end) if s), *(t for _, t in points)])
    signals: dict[str, JsonValue] = {}
    _convert_numbers(session, _POSITION, signals)
    attributes: dict[str, JsonValue] = {
        "session_id": session_id,
        "start_time": None if start is None else rfc3339(start[1]),
        "end_time": None if end is None else rfc3339(end[1]),
        "charge_duration_secs": _converted(session, "chargeTime", "0.001"),
        "charged_energy_kwh": _converted(session, "charged_energy", "0.001"),
        "charged_soc_percent": _converted(session, "charged_soc", "100"),
        "outside_temperature_celsius": _converted(session, "outside_temp", None),
        "charging_points": [point for point, _ in points],
    }
    for key, value in session.items():
        if key not in _SESSION_KEYS:
            attributes.setdefault(key, value)
    digest = hashlib.sha256(orjson.dumps(session, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return route.event(
        type_="charging_session",
        kind="entity",
        id_part=f"charging_session:{session_id}",
        occurred_at=occurred_at,
        signals=signals,
        attributes=attributes,
        version=digest[:16],
    )


def _charging_point(
    item: object, index: int, session_id: int
) -> tuple[dict[str, JsonValue], datetime]:
    where = f"chargingPoints[{index}]"
    if not isinstance(item, dict):
        raise DecodeError("not_an_object", f"{where} must be an object, got {_show(item)}")
    try:
        stamp = _epoch(item, "charging_point_epoch_time")
        if stamp is None:
            raise DecodeError("missing_field", "charging_point_epoch_time is missing")
        owner = _integer(item, "charging_session_id")
        if owner is not None and owner != session_id:
            raise DecodeError(
                "invalid_value", f"charging_session_id {owner} differs from session {session_id}"
            )
        out: dict[str, JsonValue] = {
            "time": rfc3339(stamp[1]),
            "power_w": _converted(item, "power", "-0.001"),
            "energy_delta_kwh": _converted(item, "energy_delta", "0.001"),
            "soc_percent": _converted(item, "state_of_charge", "100"),
            "point_marker_type": _integer(item, "point_marker_type"),
        }
    except DecodeError as exc:
        raise DecodeError(exc.reason, f"{where}: {exc.message}") from None
    for key, value in item.items():
        if key not in _CHARGING_POINT_KEYS:
            out.setdefault(key, value)
    return out, stamp[1]


def _show(value: object) -> str:
    """A short repr for error messages, so a huge value cannot blow up a quarantine row."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _invalid(key: str, expected: str, value: object) -> DecodeError:
    return DecodeError("invalid_value", f"{key} must be {expected}, got {_show(value)}")


def _number(obj: JsonObject, key: str) -> int | float | None:
    value = obj.get(key)
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise _invalid(key, "a number", value)


def _integer(obj: JsonObject, key: str) -> int | None:
    value = _number(obj, key)
    if value is None or isinstance(value, int):
        return value
    if value.is_integer():
        return int(value)
    raise _invalid(key, "an integer", value)


def _string(obj: JsonObject, key: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _invalid(key, "a string", value)


def _epoch(obj: JsonObject, key: str) -> tuple[int, datetime] | None:
    """An epoch-milliseconds field as (ms, aware UTC datetime), or None when absent."""
    ms = _integer(obj, key)
    if ms is None:
        return None
    try:
        return ms, from_epoch_ms(ms)
    except (OverflowError, OSError, ValueError):
        raise DecodeError("invalid_time", f"{key} {ms} is out of range for epoch ms") from None


def _to_unit(value: int | float, factor: str | None) -> float:
    """Convert into the VSS unit exactly; adding 0.0 turns a negative zero into 0.0."""
    return (float(value) if factor is None else scale(value, factor)) + 0.0


def _converted(obj: JsonObject, key: str, factor: str | None) -> float | None:
    value = _number(obj, key)
    return None if value is None else _to_unit(value, factor)


def _convert_numbers(
    obj: JsonObject,
    table: tuple[tuple[str, str, str | None], ...],
    signals: dict[str, JsonValue],
) -> None:
    for key, path, factor in table:
        value = _number(obj, key)
        if value is not None:
            signals[path] = _to_unit(value, factor)
