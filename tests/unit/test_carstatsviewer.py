"""Unit tests for the Car Stats Viewer webhook decoder."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from fleetstream.errors import DecodeError
from fleetstream.normalize import vss
from fleetstream.normalize.base import Decoded
from fleetstream.normalize.carstatsviewer import decode
from fleetstream.normalize.model import RawMessage, VehicleEvent
from fleetstream.normalize.registry import get_decoder

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "carstatsviewer"
RECEIVED_AT = datetime(2024, 1, 1, tzinfo=UTC)
TS = 1696069418482
POINT_TS = 1696070487231


def raw(payload: bytes | dict[str, Any], metadata: dict[str, Any] | None = None) -> RawMessage:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return RawMessage(
        payload=data,
        source="test",
        received_at=RECEIVED_AT,
        metadata={"vehicle": "car-1"} if metadata is None else metadata,
    )


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads((FIXTURES / name).read_bytes())
    return loaded


def state(**keys: Any) -> dict[str, Any]:
    """A minimal real-time body with the given keys added."""
    return {"apiVersion": "2.1", "timestamp": TS, **keys}


def point(ms: int = POINT_TS, **keys: Any) -> dict[str, Any]:
    return {"driving_point_epoch_time": ms, **keys}


def session(**keys: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "charging_session_id": 9,
        "start_epoch_time": 1696071422439,
        "end_epoch_time": 1696071474074,
        "chargeTime": 51635,
        "charged_energy": 1500,
        "charged_soc": 0.02,
        "outside_temp": 12.5,
        "chargingPoints": [
            {
                "charging_point_epoch_time": 1696071422457,
                "charging_session_id": 9,
                "energy_delta": 0,
                "point_marker_type": 1,
                "power": -11000000,
                "state_of_charge": 0.5,
            }
        ],
    }
    base.update(keys)
    return base


def only(decoded: Decoded) -> VehicleEvent:
    """The single event of a result that must hold exactly one event and no rejection."""
    expected: tuple[int, list[Any]] = (1, [])
    assert expected == (len(decoded.events), decoded.rejected)
    return decoded.events[0]


def as_json(value: Any) -> str:
    """JSON text with sorted keys: tells 0 from 0.0, 0.0 from -0.0 and False from 0."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def assert_same(expected: Any, actual: Any) -> None:
    assert expected == actual
    assert as_json(expected) == as_json(actual)


def version_of(value: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def decode_error(message: RawMessage) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode(message)
    return caught.value


FIXTURE_STATE_SIGNALS = {
    vss.ALTITUDE: 0.0,
    vss.AIR_TEMPERATURE: 0.0,
    vss.SOC_CURRENT_ENERGY: 15.0,
    vss.CHARGING_CABLE_CONNECTED: False,
    vss.LOW_VOLTAGE_SYSTEM_STATE: "ON",
    vss.LATITUDE: 32.827896,
    vss.LONGITUDE: 7.4446335,
    vss.BATTERY_CURRENT_POWER: 0.0,
    vss.SELECTED_GEAR: 126,
    vss.SPEED: 0.0,
    vss.SOC_CURRENT: 100.0,
}


def fixture_state_event(api_version: Any) -> dict[str, Any]:
    return {
        "event_id": "carstatsviewer:car-1:state:1696069418482",
        "vendor": "carstatsviewer",
        "source": "test",
        "type": "realtime_state",
        "kind": "signal",
        "vehicle": {"vendor_id": "car-1"},
        "occurred_at": "2023-09-30T10:23:38.482Z",
        "received_at": "2024-01-01T00:00:00Z",
        "signals": FIXTURE_STATE_SIGNALS,
        "attributes": {"apiVersion": api_version, "appVersion": "0.25.2.0000"},
    }


# --- fixtures from the vendor document ---------------------------------------------------------


def test_decoder_is_registered() -> None:
    """The registry name `carstatsviewer` resolves to this module's decode."""
    assert decode is get_decoder("carstatsviewer")


def test_fixture_realtime_2_0() -> None:
    """The 2.0 example decodes into one real-time event with every signal converted."""
    payload = (FIXTURES / "realtime_2_0.json").read_bytes()
    actual = [e.to_dict() for e in decode(raw(payload)).events]
    assert_same([fixture_state_event("2.1")], actual)


def test_fixture_api_version_number() -> None:
    """The example with apiVersion as the number 2 decodes the same, keeping the number."""
    payload = (FIXTURES / "realtime_api_number.json").read_bytes()
    actual = [e.to_dict() for e in decode(raw(payload)).events]
    assert_same([fixture_state_event(2)], actual)


def test_fixture_driving_points_2_1() -> None:
    """The 2.1 driving-point example yields the real-time event and one driving-point event."""
    decoded = decode(raw((FIXTURES / "drivingPoints_2_1.json").read_bytes()))
    expected_point = {
        "event_id": "carstatsviewer:car-1:point:1696070487231",
        "vendor": "carstatsviewer",
        "source": "test",
        "type": "driving_point",
        "kind": "signal",
        "vehicle": {"vendor_id": "car-1"},
        "occurred_at": "2023-09-30T10:41:27.231Z",
        "received_at": "2024-01-01T00:00:00Z",
        "signals": {
            vss.ALTITUDE: 0.0,
            vss.LATITUDE: 32.827896,
            vss.LONGITUDE: 7.4446335,
            vss.SOC_CURRENT: 100.0,
        },
        "attributes": {
            "distance_delta": 19.714678,
            "energy_delta": 45.35667,
            "point_marker_type": 2,
        },
    }
    actual = ([e.to_dict() for e in decoded.events], decoded.rejected)
    assert_same(([fixture_state_event("2.1"), expected_point], []), actual)


def test_fixture_charging_sessions_2_1() -> None:
    """The 2.1 charging-session example yields the real-time event and one session entity."""
    body = fixture("chargingSessions_2_1.json")
    decoded = decode(raw((FIXTURES / "chargingSessions_2_1.json").read_bytes()))
    expected_session = {
        "event_id": "carstatsviewer:car-1:charging_session:9",
        "vendor": "carstatsviewer",
        "source": "test",
        "type": "charging_session",
        "kind": "entity",
        "vehicle": {"vendor_id": "car-1"},
        "occurred_at": "2023-09-30T10:57:54.074Z",
        "received_at": "2024-01-01T00:00:00Z",
        "signals": {vss.LATITUDE: 32.827896, vss.LONGITUDE: 7.4446335},
        "attributes": {
            "session_id": 9,
            "start_time": "2023-09-30T10:57:02.439Z",
            "end_time": "2023-09-30T10:57:54.074Z",
            "charge_duration_secs": 51.608,
            "charged_energy_kwh": 0.9320753670833333,
            "charged_soc_percent": 0.0,
            "outside_temperature_celsius": 0.0,
            "charging_points": [
                {
                    "time": "2023-09-30T10:57:02.457Z",
                    "power_w": 0.0,
                    "energy_delta_kwh": 0.0,
                    "soc_percent": 100.0,
                    "point_marker_type": 1,
                },
                {
                    "time": "2023-09-30T10:57:42.475Z",
                    "power_w": 85000.0,
                    "energy_delta_kwh": -0.11806343,
                    "soc_percent": 100.0,
                    "point_marker_type": None,
                },
                {
                    "time": "2023-09-30T10:57:54.068Z",
                    "power_w": 0.0,
                    "energy_delta_kwh": 0.0,
                    "soc_percent": 100.0,
                    "point_marker_type": 2,
                },
            ],
        },
        "version": version_of(body["chargingSessions"][0]),
    }
    actual = ([e.to_dict() for e in decoded.events], decoded.rejected)
    assert_same(([fixture_state_event("2.1"), expected_session], []), actual)


# --- real-time keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "path", "expected"),
    [
        ("speed", 0.1, vss.SPEED, 0.36),
        ("speed", 27.5, vss.SPEED, 99.0),
        ("batteryLevel", 15000, vss.SOC_CURRENT_ENERGY, 15.0),
        ("batteryLevel", 64321.5, vss.SOC_CURRENT_ENERGY, 64.3215),
        ("power", -85000000, vss.BATTERY_CURRENT_POWER, 85000.0),
        ("power", 3000000, vss.BATTERY_CURRENT_POWER, -3000.0),
        ("stateOfCharge", 0.57, vss.SOC_CURRENT, 57.0),
        ("stateOfCharge", 1, vss.SOC_CURRENT, 100.0),
        ("alt", 512.25, vss.ALTITUDE, 512.25),
        ("alt", 87, vss.ALTITUDE, 87.0),
        ("ambientTemperature", -7.5, vss.AIR_TEMPERATURE, -7.5),
        ("lat", 48.1351, vss.LATITUDE, 48.1351),
        ("lon", -11.582, vss.LONGITUDE, -11.582),
        ("chargePortConnected", True, vss.CHARGING_CABLE_CONNECTED, True),
        ("chargePortConnected", False, vss.CHARGING_CABLE_CONNECTED, False),
    ],
)
def test_state_key_conversion(key: str, value: Any, path: str, expected: Any) -> None:
    """Each real-time key lands on its VSS path in the VSS unit, exactly."""
    event = only(decode(raw(state(**{key: value}))))
    assert_same({path: expected}, dict(event.signals))


def test_state_negative_zero_becomes_zero() -> None:
    """A -0 or -0.0 from the app never reaches a signal as negative zero."""
    payload = (
        b'{"apiVersion":"2.1","timestamp":1696069418482,"power":-0,"speed":-0.0,'
        b'"alt":-0.0,"ambientTemperature":-0.0,"batteryLevel":-0.0,"stateOfCharge":-0.0,'
        b'"lat":-0.0,"lon":-0.0}'
    )
    expected = {
        vss.BATTERY_CURRENT_POWER: 0.0,
        vss.SPEED: 0.0,
        vss.ALTITUDE: 0.0,
        vss.AIR_TEMPERATURE: 0.0,
        vss.SOC_CURRENT_ENERGY: 0.0,
        vss.SOC_CURRENT: 0.0,
        vss.LATITUDE: 0.0,
        vss.LONGITUDE: 0.0,
    }
    assert_same(expected, dict(only(decode(raw(payload))).signals))


@pytest.mark.parametrize(
    ("ignition", "expected"),
    [
        ("Undefined", "UNDEFINED"),
        ("Locked", "LOCK"),
        ("Off", "OFF"),
        ("Accessory", "ACC"),
        ("On", "ON"),
        ("Started", "START"),
    ],
)
def test_ignition_states(ignition: str, expected: str) -> None:
    """Every documented ignition state maps onto Vehicle.LowVoltageSystemState."""
    event = only(decode(raw(state(ignitionState=ignition))))
    expected_view = ({vss.LOW_VOLTAGE_SYSTEM_STATE: expected}, {"apiVersion": "2.1"})
    assert_same(expected_view, (dict(event.signals), dict(event.attributes)))


@pytest.mark.parametrize(("gear", "expected"), [("P", 126), ("D", 127), ("N", 0), ("R", -1)])
def test_selected_gears(gear: str, expected: int) -> None:
    """Every documented gear letter maps onto the VSS SelectedGear number."""
    event = only(decode(raw(state(selectedGear=gear))))
    assert_same({vss.SELECTED_GEAR: expected}, dict(event.signals))


def test_unknown_ignition_and_gear_stay_attributes() -> None:
    """An ignition state or gear outside the documented lists is kept as an attribute only."""
    event = only(decode(raw(state(ignitionState="UNKNOWN", selectedGear="3"))))
    expected: tuple[dict[str, Any], dict[str, Any]] = (
        {},
        {"apiVersion": "2.1", "ignitionState": "UNKNOWN", "selectedGear": "3"},
    )
    assert_same(expected, (dict(event.signals), dict(event.attributes)))


def test_unknown_top_level_keys_are_attributes() -> None:
    """Keys the decoder does not know (a newer minor version) are kept under their names."""
    body = state(appVersion="0.27.0", abrpPackage={"utc": 1696069418}, tyreWear=[0.1, 0.2])
    event = only(decode(raw(body)))
    expected = {
        "apiVersion": "2.1",
        "appVersion": "0.27.0",
        "abrpPackage": {"utc": 1696069418},
        "tyreWear": [0.1, 0.2],
    }
    assert_same(expected, dict(event.attributes))


def test_state_event_identity_and_time() -> None:
    """The real-time event is keyed by vehicle and timestamp and carries the route's context."""
    event = only(decode(raw(state())))
    expected = (
        "carstatsviewer:car-1:state:1696069418482",
        "carstatsviewer",
        "test",
        "car-1",
        datetime(2023, 9, 30, 10, 23, 38, 482000, tzinfo=UTC),
        RECEIVED_AT,
        None,
    )
    actual = (
        event.event_id,
        event.vendor,
        event.source,
        event.vehicle.vendor_id,
        event.occurred_at,
        event.received_at,
        event.version,
    )
    assert expected == actual


def test_integral_float_timestamp_keeps_integer_event_id() -> None:
    """A timestamp sent as 1696069418482.0 gives the same event_id as the integer."""
    event = only(decode(raw(state(timestamp=1696069418482.0))))
    assert event.event_id == "carstatsviewer:car-1:state:1696069418482"


def test_nulls_count_as_absent() -> None:
    """A null known key is skipped instead of rejected."""
    event = only(decode(raw(state(speed=None, lat=None, selectedGear=None, power=-1000))))
    assert_same({vss.BATTERY_CURRENT_POWER: 1.0}, dict(event.signals))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("speed", "fast"),
        ("speed", True),
        ("power", False),
        ("lat", "32.8"),
        ("chargePortConnected", "yes"),
        ("chargePortConnected", 1),
        ("ignitionState", 1),
        ("selectedGear", ["P"]),
        ("timestamp", "1696069418482"),
        ("timestamp", 1696069418482.5),
    ],
)
def test_bad_state_key_rejects_only_the_state(key: str, value: Any) -> None:
    """A wrongly typed real-time key quarantines the state; the driving points still decode."""
    body = state(**{key: value}, drivingPoints=[point(), point(POINT_TS + 1)])
    decoded = decode(raw(body))
    without_arrays = {k: v for k, v in body.items() if k != "drivingPoints"}
    expected = (
        [
            "carstatsviewer:car-1:point:1696070487231",
            "carstatsviewer:car-1:point:1696070487232",
        ],
        [("invalid_value", True, orjson.dumps(without_arrays))],
    )
    actual = (
        [e.event_id for e in decoded.events],
        [(r.error.reason, key in r.error.message, r.raw) for r in decoded.rejected],
    )
    assert expected == actual


def test_out_of_range_timestamp_is_rejected() -> None:
    """An epoch far beyond any calendar is quarantined as invalid_time, not a crash."""
    decoded = decode(raw(state(timestamp=2**62, chargingSessions=[session()])))
    expected = (["carstatsviewer:car-1:charging_session:9"], ["invalid_time"])
    actual = ([e.event_id for e in decoded.events], [r.error.reason for r in decoded.rejected])
    assert expected == actual


def test_state_keys_without_timestamp_are_quarantined() -> None:
    """Real-time keys sent without a timestamp next to driving points are not silently lost."""
    body = {"apiVersion": "2.1", "speed": 3.0, "drivingPoints": [point()]}
    decoded = decode(raw(body))
    expected = (
        ["carstatsviewer:car-1:point:1696070487231"],
        [("missing_field", b'{"apiVersion":"2.1","speed":3.0}')],
    )
    actual = (
        [e.event_id for e in decoded.events],
        [(r.error.reason, r.raw) for r in decoded.rejected],
    )
    assert expected == actual


def test_points_only_body_has_no_state_event() -> None:
    """A body with only the version keys and driving points yields only driving points."""
    body = {"apiVersion": "2.1", "appVersion": "0.25.2.0000", "drivingPoints": [point()]}
    event = only(decode(raw(body)))
    assert event.event_id == "carstatsviewer:car-1:point:1696070487231"


# --- versions and whole-message errors ----------------------------------------------------------


@pytest.mark.parametrize("api_version", [2, 2.0, "2", "2.0", "2.1", "2.2", 2.3, "2.10.1"])
def test_api_2x_accepted(api_version: Any) -> None:
    """Any 2.x version, as a number or a string, is decoded and kept as it came."""
    event = only(decode(raw(state(apiVersion=api_version))))
    expected = ("carstatsviewer:car-1:state:1696069418482", api_version)
    assert expected == (event.event_id, event.attributes["apiVersion"])


@pytest.mark.parametrize("api_version", ["1.0", 1, 1.0, "1", "0.9"])
def test_api_1x_refused(api_version: Any) -> None:
    """API 1.x is refused with a message naming the version, 2.x, and the deprecation."""
    error = decode_error(raw(state(apiVersion=api_version)))
    expected = ("unsupported_version", True, True, True, True)
    actual = (
        error.reason,
        repr(api_version) in error.message,
        "2.x" in error.message,
        "deprecated" in error.message,
        "upgrade the Car Stats Viewer app" in error.message,
    )
    assert expected == actual


@pytest.mark.parametrize("api_version", ["3.0", 3])
def test_newer_major_refused(api_version: Any) -> None:
    """A future major version is refused as unsupported, naming the version received."""
    error = decode_error(raw(state(apiVersion=api_version)))
    expected = ("unsupported_version", True, True)
    actual = (error.reason, repr(api_version) in error.message, "2.x" in error.message)
    assert expected == actual


@pytest.mark.parametrize(
    ("api_version", "reason"),
    [
        (None, "missing_field"),
        ("two", "invalid_version"),
        ("v2.1", "invalid_version"),
        ("", "invalid_version"),
        (True, "invalid_version"),
        (-2, "invalid_version"),
        ([2, 1], "invalid_version"),
        ({"major": 2}, "invalid_version"),
    ],
)
def test_bad_api_version(api_version: Any, reason: str) -> None:
    """A missing or unparseable apiVersion fails the whole message."""
    assert reason == decode_error(raw(state(apiVersion=api_version))).reason


def test_absent_api_version() -> None:
    """A body without the apiVersion key fails with missing_field."""
    assert decode_error(raw({"timestamp": TS, "speed": 1})).reason == "missing_field"


@pytest.mark.parametrize("metadata", [{}, {"vehicle": ""}, {"vehicle": None}, {"vehicle": 7}])
def test_missing_vehicle(metadata: dict[str, Any]) -> None:
    """Without a vehicle from the webhook route the message cannot be attributed."""
    assert decode_error(raw(state(), metadata=metadata)).reason == "missing_vehicle"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"2.1"', "not_an_object"),
        (b"null", "not_an_object"),
    ],
)
def test_body_not_an_object(payload: bytes, reason: str) -> None:
    """A body that is not JSON, or not a JSON object, fails the whole message."""
    assert reason == decode_error(raw(payload)).reason


@pytest.mark.parametrize(
    "body",
    [
        {"apiVersion": "2.1", "appVersion": "0.25.2.0000"},
        {"apiVersion": "2.1", "speed": 3.0, "lat": 1.0},
        {"apiVersion": "2.1", "timestamp": None, "drivingPoints": None},
    ],
)
def test_nothing_to_decode(body: dict[str, Any]) -> None:
    """A body without timestamp, drivingPoints and chargingSessions is a missing_field error."""
    assert decode_error(raw(body)).reason == "missing_field"


def test_trailing_comma_is_tolerated() -> None:
    """A body with a trailing comma, as hand-written examples have, still decodes."""
    event = only(decode(raw(b'{"apiVersion": "2.1", "timestamp": 1696069418482, "speed": 1,}')))
    assert_same({vss.SPEED: 3.6}, dict(event.signals))


# --- driving points ------------------------------------------------------------------------------


def test_driving_point_every_key() -> None:
    """A driving point maps position and SoC to VSS and keeps the deltas and marker as they came."""
    body = {
        "apiVersion": "2.1",
        "drivingPoints": [
            point(
                alt=101.5,
                lat=48.1,
                lon=11.5,
                state_of_charge=0.57,
                distance_delta=100.25,
                energy_delta=-3.5,
                point_marker_type=1,
                slope=0.02,
            )
        ],
    }
    event = only(decode(raw(body)))
    expected = {
        "event_id": "carstatsviewer:car-1:point:1696070487231",
        "vendor": "carstatsviewer",
        "source": "test",
        "type": "driving_point",
        "kind": "signal",
        "vehicle": {"vendor_id": "car-1"},
        "occurred_at": "2023-09-30T10:41:27.231Z",
        "received_at": "2024-01-01T00:00:00Z",
        "signals": {
            vss.ALTITUDE: 101.5,
            vss.LATITUDE: 48.1,
            vss.LONGITUDE: 11.5,
            vss.SOC_CURRENT: 57.0,
        },
        "attributes": {
            "distance_delta": 100.25,
            "energy_delta": -3.5,
            "point_marker_type": 1,
            "slope": 0.02,
        },
    }
    assert_same(expected, event.to_dict())


def test_driving_point_minimal() -> None:
    """A point with only its time (location disabled) is still an event, with no signals."""
    event = only(decode(raw({"apiVersion": "2.1", "drivingPoints": [point()]})))
    assert_same(({}, {}), (dict(event.signals), dict(event.attributes)))


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("a point", "not_an_object"),
        (5, "not_an_object"),
        ([POINT_TS], "not_an_object"),
        ({"lat": 1.0}, "missing_field"),
        ({"driving_point_epoch_time": "1696070487231"}, "invalid_value"),
        ({"driving_point_epoch_time": True}, "invalid_value"),
        (point(lat="north"), "invalid_value"),
        (point(state_of_charge=True), "invalid_value"),
        (point(distance_delta="19 m"), "invalid_value"),
        (point(point_marker_type=1.5), "invalid_value"),
    ],
)
def test_one_bad_driving_point(bad: Any, reason: str) -> None:
    """One bad point is quarantined with its own bytes and the others still decode."""
    body = state(drivingPoints=[point(POINT_TS, lat=1.0), bad, point(POINT_TS + 5, lat=2.0)])
    decoded = decode(raw(body))
    expected = (
        [
            "carstatsviewer:car-1:state:1696069418482",
            "carstatsviewer:car-1:point:1696070487231",
            "carstatsviewer:car-1:point:1696070487236",
        ],
        [(reason, orjson.dumps(bad), True)],
    )
    actual = (
        [e.event_id for e in decoded.events],
        [(r.error.reason, r.raw, "drivingPoints[1]" in r.error.message) for r in decoded.rejected],
    )
    assert expected == actual


def test_driving_points_not_an_array() -> None:
    """A drivingPoints value that is not an array is quarantined whole; the state still decodes."""
    decoded = decode(raw(state(drivingPoints={"driving_point_epoch_time": POINT_TS})))
    expected = (
        ["carstatsviewer:car-1:state:1696069418482"],
        [("invalid_value", b'{"driving_point_epoch_time":1696070487231}')],
    )
    actual = (
        [e.event_id for e in decoded.events],
        [(r.error.reason, r.raw) for r in decoded.rejected],
    )
    assert expected == actual


def test_resent_driving_point_keeps_its_event_id() -> None:
    """The same point in two requests has the same event_id, so the dedupe store drops it."""
    first = only(decode(raw({"apiVersion": "2.1", "drivingPoints": [point(lat=1.0)]})))
    second = only(decode(raw({"apiVersion": "2.1", "drivingPoints": [point(lat=1.0)]})))
    assert (first.event_id, first.dedupe_key) == (second.event_id, second.dedupe_key)


# --- charging sessions ---------------------------------------------------------------------------


def test_charging_session_every_key() -> None:
    """A session becomes the documented canonical row, unknown keys kept under vendor names."""
    body: dict[str, Any] = {
        "apiVersion": "2.1",
        "chargingSessions": [
            session(
                lat=48.1,
                lon=11.5,
                charging_type="AC",
                chargingPoints=[
                    {
                        "charging_point_epoch_time": 1696071422457,
                        "charging_session_id": 9,
                        "energy_delta": 0,
                        "point_marker_type": 1,
                        "power": -11000000,
                        "state_of_charge": 0.5,
                    },
                    {
                        "charging_point_epoch_time": 1696071462475,
                        "energy_delta": 2.5,
                        "power": 3000000,
                        "state_of_charge": 0.51,
                        "voltage": 400,
                    },
                ],
            )
        ],
    }
    event = only(decode(raw(body)))
    expected = {
        "event_id": "carstatsviewer:car-1:charging_session:9",
        "vendor": "carstatsviewer",
        "source": "test",
        "type": "charging_session",
        "kind": "entity",
        "vehicle": {"vendor_id": "car-1"},
        "occurred_at": "2023-09-30T10:57:54.074Z",
        "received_at": "2024-01-01T00:00:00Z",
        "signals": {vss.LATITUDE: 48.1, vss.LONGITUDE: 11.5},
        "attributes": {
            "session_id": 9,
            "start_time": "2023-09-30T10:57:02.439Z",
            "end_time": "2023-09-30T10:57:54.074Z",
            "charge_duration_secs": 51.635,
            "charged_energy_kwh": 1.5,
            "charged_soc_percent": 2.0,
            "outside_temperature_celsius": 12.5,
            "charging_points": [
                {
                    "time": "2023-09-30T10:57:02.457Z",
                    "power_w": 11000.0,
                    "energy_delta_kwh": 0.0,
                    "soc_percent": 50.0,
                    "point_marker_type": 1,
                },
                {
                    "time": "2023-09-30T10:57:42.475Z",
                    "power_w": -3000.0,
                    "energy_delta_kwh": 0.0025,
                    "soc_percent": 51.0,
                    "point_marker_type": None,
                    "voltage": 400,
                },
            ],
            "charging_type": "AC",
        },
        "version": version_of(body["chargingSessions"][0]),
    }
    assert_same(expected, event.to_dict())


def test_open_charging_session() -> None:
    """A session without end, duration, points or position falls back to its start time."""
    bare = {"charging_session_id": 4, "start_epoch_time": 1696071422439}
    event = only(decode(raw({"apiVersion": "2.1", "chargingSessions": [bare]})))
    expected = {
        "occurred_at": "2023-09-30T10:57:02.439Z",
        "signals": {},
        "attributes": {
            "session_id": 4,
            "start_time": "2023-09-30T10:57:02.439Z",
            "end_time": None,
            "charge_duration_secs": None,
            "charged_energy_kwh": None,
            "charged_soc_percent": None,
            "outside_temperature_celsius": None,
            "charging_points": [],
        },
    }
    actual = {key: event.to_dict()[key] for key in ("occurred_at", "signals", "attributes")}
    assert_same(expected, actual)


def test_identical_session_is_a_duplicate() -> None:
    """The same session sent twice has the same event_id and the same version."""
    first = only(decode(raw({"apiVersion": "2.1", "chargingSessions": [session()]})))
    second = decode(raw(state(timestamp=TS + 5000, chargingSessions=[session()]))).events[1]
    expected = (first.event_id, first.version, first.dedupe_key)
    assert expected == (second.event_id, second.version, second.dedupe_key)


def test_session_version_ignores_key_order() -> None:
    """The version hashes the session with sorted keys, so key order does not matter."""
    forward = session()
    backward = dict(reversed(list(forward.items())))
    first = only(decode(raw({"apiVersion": "2.1", "chargingSessions": [forward]})))
    second = only(decode(raw({"apiVersion": "2.1", "chargingSessions": [backward]})))
    assert first.version == second.version


def test_merged_session_is_a_new_version() -> None:
    """A merged, changed session keeps its event_id and gets a different version."""
    original = session()
    merged = session(
        end_epoch_time=1696072000000,
        chargeTime=577561,
        chargingPoints=[
            *original["chargingPoints"],
            {
                "charging_point_epoch_time": 1696071999000,
                "charging_session_id": 9,
                "energy_delta": 120.0,
                "power": -11000000,
                "state_of_charge": 0.6,
            },
        ],
    )
    first = only(decode(raw({"apiVersion": "2.1", "chargingSessions": [original]})))
    second = only(decode(raw({"apiVersion": "2.1", "chargingSessions": [merged]})))
    expected = (first.event_id, True, "2023-09-30T11:06:40Z", 2)
    actual = (
        second.event_id,
        first.version != second.version,
        second.attributes["end_time"],
        len(second.attributes["charging_points"]),
    )
    assert expected == actual


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("session", "not_an_object"),
        ({key: v for key, v in session().items() if key != "charging_session_id"}, "missing_field"),
        (session(charging_session_id="9"), "invalid_value"),
        (session(charging_session_id=True), "invalid_value"),
        ({"charging_session_id": 9}, "missing_field"),
        (session(end_epoch_time=True), "invalid_value"),
        (session(charged_energy="932 Wh"), "invalid_value"),
        (session(lat="north"), "invalid_value"),
        (session(chargingPoints="none"), "invalid_value"),
        (session(chargingPoints=[5]), "not_an_object"),
        (session(chargingPoints=[{"power": -1000}]), "missing_field"),
        (
            session(chargingPoints=[{"charging_point_epoch_time": 1696071422457, "power": "max"}]),
            "invalid_value",
        ),
        (
            session(
                chargingPoints=[
                    {"charging_point_epoch_time": 1696071422457, "charging_session_id": 8}
                ]
            ),
            "invalid_value",
        ),
    ],
)
def test_one_bad_session(bad: Any, reason: str) -> None:
    """One bad session is quarantined with its own bytes and the others still decode."""
    good = session(charging_session_id=10, chargingPoints=[])
    decoded = decode(raw({"apiVersion": "2.1", "chargingSessions": [bad, good]}))
    expected = (
        ["carstatsviewer:car-1:charging_session:10"],
        [(reason, orjson.dumps(bad), True)],
    )
    actual = (
        [e.event_id for e in decoded.events],
        [
            (r.error.reason, r.raw, r.error.message.startswith("chargingSessions[0]"))
            for r in decoded.rejected
        ],
    )
    assert expected == actual


def test_charging_sessions_not_an_array() -> None:
    """A chargingSessions value that is not an array is quarantined whole."""
    decoded = decode(raw(state(chargingSessions="none")))
    expected = (["carstatsviewer:car-1:state:1696069418482"], [("invalid_value", b'"none"')])
    actual = (
        [e.event_id for e in decoded.events],
        [(r.error.reason, r.raw) for r in decoded.rejected],
    )
    assert expected == actual


def test_session_version_time_is_its_latest_point() -> None:
    """A session still open (no end time) is dated by its latest charging point, so a grown
    re-send is newer than the version it replaces."""
    first_point = session()["chargingPoints"][0]
    later_point = {**first_point, "charging_point_epoch_time": 1696071999000}
    short = session(end_epoch_time=None, chargingPoints=[first_point])
    grown = session(end_epoch_time=None, chargingPoints=[first_point, later_point])

    short_event = only(decode(raw({"apiVersion": "2.1", "chargingSessions": [short]})))
    grown_event = only(decode(raw({"apiVersion": "2.1", "chargingSessions": [grown]})))

    expected = (
        datetime(2023, 9, 30, 10, 57, 2, 457000, tzinfo=UTC),
        datetime(2023, 9, 30, 11, 6, 39, tzinfo=UTC),
    )
    assert expected == (short_event.occurred_at, grown_event.occurred_at)
    assert short_event.event_id == grown_event.event_id
