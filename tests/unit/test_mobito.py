from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from fleetstream.cli import main
from fleetstream.errors import DecodeError
from fleetstream.normalize import vss
from fleetstream.normalize.mobito import decode
from fleetstream.normalize.model import RawMessage, VehicleEvent, VehicleRef
from fleetstream.normalize.registry import get_decoder

SAMPLE = Path(__file__).parent.parent / "fixtures" / "mobito" / "sample.json"
RECEIVED = datetime(2024, 1, 1, tzinfo=UTC)
KAFKA_TIME = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
VIN = "EXAMPLE0607M29923"
UUID = "31f460d8-92eb-427a-9487-3611c2670608"

FRONT_DRIVER_OPEN = vss.door_is_open(1, "DriverSide")
FRONT_PASSENGER_OPEN = vss.door_is_open(1, "PassengerSide")
REAR_DRIVER_OPEN = vss.door_is_open(2, "DriverSide")
REAR_PASSENGER_OPEN = vss.door_is_open(2, "PassengerSide")
LOCKED = [vss.door_is_locked(row, side) for row, side in vss.ALL_DOORS]


def raw(payload: bytes, **metadata: Any) -> RawMessage:
    return RawMessage(payload=payload, source="test", received_at=RECEIVED, metadata=metadata)


def decode_one(payload: bytes, **metadata: Any) -> VehicleEvent:
    decoded = decode(raw(payload, **metadata))
    nothing_else: tuple[list[Any], list[str]] = ([], [])
    assert nothing_else == (decoded.rejected, decoded.unknown_types)
    (event,) = decoded.events
    return event


def decode_fields(**fields: Any) -> VehicleEvent:
    """Decode a built message: a vin, a uuid and `fields`, with a Kafka timestamp."""
    body = {"vin": "WVWZZZ1JZXW000001", "uuid": "u-1", **fields}
    return decode_one(orjson.dumps(body), timestamp=KAFKA_TIME)


def signals_of(**fields: Any) -> dict[str, Any]:
    """The signals of a built message, without the VIN every message carries."""
    signals = dict(decode_fields(**fields).signals)
    del signals[vss.VIN]
    return signals


def sample() -> VehicleEvent:
    return decode_one(SAMPLE.read_bytes(), timestamp=KAFKA_TIME)


def decode_error(payload: bytes) -> tuple[str, str]:
    with pytest.raises(DecodeError) as caught:
        decode(raw(payload))
    return caught.value.reason, caught.value.message


# --- the seed's sample message --------------------------------------------------------------------

SAMPLE_SIGNALS: dict[str, Any] = {
    vss.LATITUDE: 36.82235111111111,
    vss.LONGITUDE: 21.719039166666665,
    vss.HEADING: 338.0,
    vss.ALTITUDE: 11.0,
    vss.TRAVELED_DISTANCE: 14312000.0,
    vss.FUEL_RELATIVE_LEVEL: 47.0,
    vss.FUEL_ABSOLUTE_LEVEL: 17.0,
    vss.RANGE: 276000.0,
    vss.COOLANT_TEMPERATURE: 63.0,
    vss.LOW_VOLTAGE_BATTERY_VOLTAGE: 12.56,
    vss.DISTANCE_TO_SERVICE: 11000.0,
    vss.DTC_LIST: [
        "3178A",
        "B7F34E",
        "804070",
        "804081",
        "800ABF",
        "B7F500",
        "31796",
        "31790",
        "B7F8C6",
    ],
    "Vehicle.Chassis.Axle.Row1.Wheel.Left.Tire.Pressure": 207.0,
    "Vehicle.Chassis.Axle.Row1.Wheel.Right.Tire.Pressure": 221.0,
    "Vehicle.Chassis.Axle.Row2.Wheel.Left.Tire.Pressure": 186.0,
    "Vehicle.Chassis.Axle.Row2.Wheel.Right.Tire.Pressure": 200.0,
    "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen": False,
    "Vehicle.Cabin.Door.Row1.PassengerSide.IsOpen": False,
    "Vehicle.Cabin.Door.Row2.DriverSide.IsOpen": False,
    "Vehicle.Cabin.Door.Row2.PassengerSide.IsOpen": False,
    "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked": False,
    "Vehicle.Cabin.Door.Row1.PassengerSide.IsLocked": False,
    "Vehicle.Cabin.Door.Row2.DriverSide.IsLocked": False,
    "Vehicle.Cabin.Door.Row2.PassengerSide.IsLocked": False,
    vss.VIN: VIN,
}

SAMPLE_ATTRIBUTES: dict[str, Any] = {
    "display_unit_distance": "km",
    "position_can_be_trusted": True,
    "service_date": 71,
    "condition_based_services_count": 9,
    "vehicle_check_status": "OK",
    "vehicle_check_status_remaining_distance": 35000,
    "vehicle_check_status_date": "2027-02",
    "vehicle_check_status_date_iso": "2027-02",
    "brake_fluid_due_date": "2026-02",
    "brake_fluid_due_date_iso": "2026-02",
    "vehicle_inspection_due_date": "2027-04",
    "vehicle_inspection_due_date_iso": "2027-04",
    "engine_oil_remaining_distance": 11000,
    "brake_fluid_status": "OK",
    "vehicle_inspection_status": "OK",
    "code_CBSHUAU": 4,
    "tire_pressure_target_front_left": "234",
    "tire_pressure_target_front_right": "234",
    "tire_pressure_target_rear_left": "214",
    "tire_pressure_target_rear_right": "214",
    "avg_distance_short_term": "680.0",
    "avg_distance_long_term": "680.0",
    "average_mileage_per_week": 1082,
    "mileage_forecast": 21260,
    "remaining_contract_days": 45,
    "tank_capacity": "42.0",
    "service_status": "OK",
    "service_due_date": "2025-02",
    "service_due_date_iso": "2025-02",
    "model": "118i",
    "teleservice_status": "Initial status",
    "engine_oil_due_date": "2025-02",
    "engine_oil_due_date_iso": "2025-02",
    "engine_oil_status": "OK",
    "yellow_service_time": 4,
    "basic_has_sun_roof": False,
    "basic_construction_date": "2023-02-16T00:00:00Z",
    "basic_construction_date_iso": "2023-02-16T00:00:00Z",
    "basic_engine": "B38C",
    "basic_color_code": "C3N",
    "legal_inspection_date": "01.04.2027 00:00:00 UTC",
    "legal_inspection_date_iso": "2027-04-01T00:00:00Z",
    "lsc_trigger_reason": "CONV",
    "basic_propulsion_type": "BE",
    "basic_country_code": "GR",
    "basic_head_unit": "HU_MGU",
    "brand": "BMW",
    "yellow_service_distance": "2000",
    "check_control_messages": ["955 Tire pressure notification"],
    "basic_model_key": "7K31",
    "basic_has_Navi": True,
    "series": "1",
    "colour_code": "STORM BAY METALLIC",
    "number_of_doors": 5,
    "steering": "LL",
    "extra_equipment": "01CB,01DF,01DZ,0230,0249,026M,02PA,02TF,02VB",
    "power": "100",
    "capacity": 1499,
    "data_quality": "UP_TO_DATE",
    "basic_body_type": "Sports Hatch",
    "basic_model_range": "F40",
}


def test_sample_signals() -> None:
    """The seed's sample yields exactly these signals, in VSS units."""
    assert SAMPLE_SIGNALS == dict(sample().signals)


def test_sample_attributes() -> None:
    """Every unmapped sample field is an attribute; dates gain `_iso`; mapped fields are gone."""
    assert SAMPLE_ATTRIBUTES == dict(sample().attributes)


def test_sample_identity_and_time() -> None:
    """The sample's id comes from uuid, the vehicle from vin and fleet_id, the time from Kafka."""
    event = sample()
    expected = {
        "event_id": f"mobito:{UUID}",
        "vendor": "mobito",
        "source": "test",
        "type": "vehicle_status",
        "kind": "signal",
        "vehicle": VehicleRef(vin=VIN, fleet_id="ExampleFleetId"),
        "vehicle_key": f"vin:{VIN}",
        "dedupe_key": f"mobito:{UUID}",
        "occurred_at": KAFKA_TIME,
        "received_at": RECEIVED,
        "signal_times": {},
        "version": None,
    }
    assert expected == {key: getattr(event, key) for key in expected}


def test_registry_knows_mobito() -> None:
    """The decoder is registered under the name `mobito`."""
    assert get_decoder("mobito") is decode


# --- value forms ----------------------------------------------------------------------------------


def test_numbers_as_strings_or_json_numbers_give_the_same_floats() -> None:
    """A numeric string and the same JSON number decode to the same float signal."""
    as_strings = signals_of(mileage="14312", heading="338.5", battery_voltage=" 12.56 ")
    as_numbers = signals_of(mileage=14312, heading=338.5, battery_voltage=12.56)
    expected = {
        vss.TRAVELED_DISTANCE: 14312000.0,
        vss.HEADING: 338.5,
        vss.LOW_VOLTAGE_BATTERY_VOLTAGE: 12.56,
    }
    assert (expected, expected) == (as_strings, as_numbers)


def test_numeric_signals_are_floats_whatever_form_they_came_in() -> None:
    """An integer, an integer string and a decimal string all become floats."""
    signals = signals_of(fuel_level=47, altitude="11", remaining_fuel="17.0")
    expected = [float, float, float]
    actual = [
        type(signals[path])
        for path in (vss.FUEL_RELATIVE_LEVEL, vss.ALTITUDE, vss.FUEL_ABSOLUTE_LEVEL)
    ]
    assert expected == actual


def test_scaled_conversions_are_exact() -> None:
    """km become m by exact decimal multiplication."""
    expected = {vss.TRAVELED_DISTANCE: 100.1, vss.RANGE: 276123.4}
    assert expected == signals_of(mileage="0.1001", fuel_remaining_range="276.1234")


def test_booleans_as_strings_in_any_case_or_json_booleans() -> None:
    """Door flags accept "true"/"false" in any case and JSON booleans."""
    expected = {
        FRONT_DRIVER_OPEN: True,
        FRONT_PASSENGER_OPEN: False,
        REAR_DRIVER_OPEN: True,
        REAR_PASSENGER_OPEN: False,
    }
    actual = signals_of(
        doors_front_left_is_open="TRUE",
        doors_front_right_is_open="False",
        doors_rear_left_is_open=True,
        doors_rear_right_is_open=False,
    )
    assert expected == actual


@pytest.mark.parametrize(
    ("dtc_data", "codes"),
    [
        ("[]", []),
        (" [ ] ", []),
        ("[P0420]", ["P0420"]),
        ("[3178A,B7F34E , 804070]", ["3178A", "B7F34E", "804070"]),
        (["3178A", "B7F34E"], ["3178A", "B7F34E"]),
        ([], []),
    ],
)
def test_dtc_list_forms(dtc_data: Any, codes: list[str]) -> None:
    """dtc_data as a bracketed string or a JSON array becomes a list of code strings."""
    assert {vss.DTC_LIST: codes} == signals_of(dtc_data=dtc_data)


def test_tyre_pressures_in_kpa_by_axle_and_side() -> None:
    """Each tyre pressure lands on its own axle row and wheel side, unchanged (kPa)."""
    expected = {
        vss.tire_pressure(1, "Left"): 230.0,
        vss.tire_pressure(1, "Right"): 231.0,
        vss.tire_pressure(2, "Left"): 232.0,
        vss.tire_pressure(2, "Right"): 233.0,
    }
    actual = signals_of(
        tire_pressure_front_left="230",
        tire_pressure_front_right=231,
        tire_pressure_rear_left="232.0",
        tire_pressure_rear_right=233.0,
    )
    assert expected == actual


def test_null_mapped_field_is_left_out() -> None:
    """A mapped field that is null produces neither a signal nor an attribute."""
    event = decode_fields(mileage=None, fuel_level="50")
    expected: tuple[dict[str, Any], dict[str, Any]] = (
        {vss.FUEL_RELATIVE_LEVEL: 50.0, vss.VIN: "WVWZZZ1JZXW000001"},
        {},
    )
    assert expected == (dict(event.signals), dict(event.attributes))


# --- doors and locks ------------------------------------------------------------------------------

OPEN_LEFT = {
    "doors_front_left_is_open": "true",
    "doors_front_right_is_open": "false",
    "doors_rear_left_is_open": "true",
    "doors_rear_right_is_open": "false",
}
LEFT_IS_DRIVER = {
    FRONT_DRIVER_OPEN: True,
    FRONT_PASSENGER_OPEN: False,
    REAR_DRIVER_OPEN: True,
    REAR_PASSENGER_OPEN: False,
}
RIGHT_IS_DRIVER = {
    FRONT_DRIVER_OPEN: False,
    FRONT_PASSENGER_OPEN: True,
    REAR_DRIVER_OPEN: False,
    REAR_PASSENGER_OPEN: True,
}


def test_left_hand_drive_puts_the_driver_on_the_left() -> None:
    """With steering LL the left doors are the driver's side."""
    assert LEFT_IS_DRIVER == signals_of(steering="LL", **OPEN_LEFT)


def test_right_hand_drive_swaps_the_doors() -> None:
    """With steering RL the right doors are the driver's side."""
    assert RIGHT_IS_DRIVER == signals_of(steering="RL", **OPEN_LEFT)


def test_missing_steering_assumes_left_hand_drive() -> None:
    """Without steering the car counts as left-hand drive and nothing is flagged."""
    event = decode_fields(**OPEN_LEFT)
    signals = {k: v for k, v in event.signals.items() if k != vss.VIN}
    assert (LEFT_IS_DRIVER, {}) == (signals, dict(event.attributes))


def test_unknown_steering_assumes_left_hand_drive_and_is_flagged() -> None:
    """An unknown steering code keeps left-hand drive, the value and an unparsed_fields entry."""
    event = decode_fields(steering="XX", **OPEN_LEFT)
    signals = {k: v for k, v in event.signals.items() if k != vss.VIN}
    expected = (LEFT_IS_DRIVER, {"steering": "XX", "unparsed_fields": ["steering"]})
    assert expected == (signals, dict(event.attributes))


def test_misspelled_front_right_door_is_recognised() -> None:
    """`doors_ront_right_is_open` is read as the front right door and not kept as an attribute."""
    event = decode_fields(steering="LL", doors_ront_right_is_open="true")
    expected = ({FRONT_PASSENGER_OPEN: True, vss.VIN: "WVWZZZ1JZXW000001"}, {"steering": "LL"})
    assert expected == (dict(event.signals), dict(event.attributes))


def test_correct_spelling_wins_over_the_misspelling() -> None:
    """With both spellings present the correct one sets the signal; the other stays an attribute."""
    event = decode_fields(doors_front_right_is_open="false", doors_ront_right_is_open="true")
    expected = (
        {FRONT_PASSENGER_OPEN: False, vss.VIN: "WVWZZZ1JZXW000001"},
        {"doors_ront_right_is_open": "true"},
    )
    assert expected == (dict(event.signals), dict(event.attributes))


@pytest.mark.parametrize(
    ("state", "locked"),
    [
        ("LOCKED", True),
        ("SECURED", True),
        ("UNLOCKED", False),
        ("locked", True),
        ("true", True),
        ("FALSE", False),
        (True, True),
        (False, False),
    ],
)
def test_lock_state_applies_to_every_door(state: Any, locked: bool) -> None:
    """A known lock state sets IsLocked on all four doors."""
    assert dict.fromkeys(LOCKED, locked) == signals_of(vehicle_is_locked=state)


def test_unknown_lock_state_is_an_attribute_only() -> None:
    """An unknown lock state sets no signal and is kept, flagged, under its vendor name."""
    event = decode_fields(vehicle_is_locked="PARTIALLY_LOCKED")
    expected = (
        {vss.VIN: "WVWZZZ1JZXW000001"},
        {"vehicle_is_locked": "PARTIALLY_LOCKED", "unparsed_fields": ["vehicle_is_locked"]},
    )
    assert expected == (dict(event.signals), dict(event.attributes))


# --- values that do not parse ---------------------------------------------------------------------


def test_unparseable_mapped_values_are_kept_and_listed() -> None:
    """Mapped values that do not convert stay attributes, are listed, and the rest still maps."""
    event = decode_fields(
        mileage="n/a",
        latitude="36,82",
        heading="1e999",
        fuel_level=True,
        dtc_data="3178A, B7F34E",
        doors_rear_left_is_open="maybe",
        altitude="11.0",
    )
    expected = (
        {vss.ALTITUDE: 11.0, vss.VIN: "WVWZZZ1JZXW000001"},
        {
            "mileage": "n/a",
            "latitude": "36,82",
            "heading": "1e999",
            "fuel_level": True,
            "dtc_data": "3178A, B7F34E",
            "doors_rear_left_is_open": "maybe",
            "unparsed_fields": [
                "doors_rear_left_is_open",
                "dtc_data",
                "fuel_level",
                "heading",
                "latitude",
                "mileage",
            ],
        },
    )
    assert expected == (dict(event.signals), dict(event.attributes))


@pytest.mark.parametrize(
    "dtc_data",
    ["[3178A, , B7F34E]", "[3178A", {"code": "3178A"}, ["3178A", 42], 3178],
)
def test_malformed_dtc_list_is_unparsed(dtc_data: Any) -> None:
    """A DTC value that is not a clean list of codes stays an attribute and is listed."""
    event = decode_fields(dtc_data=dtc_data)
    expected = (
        {vss.VIN: "WVWZZZ1JZXW000001"},
        {"dtc_data": dtc_data, "unparsed_fields": ["dtc_data"]},
    )
    assert expected == (dict(event.signals), dict(event.attributes))


def test_non_string_fleet_id_is_kept_as_attribute() -> None:
    """A fleet_id that is not a string does not name the fleet but is kept and listed."""
    event = decode_fields(fleet_id=17)
    expected = (
        VehicleRef(vin="WVWZZZ1JZXW000001"),
        {"fleet_id": 17, "unparsed_fields": ["fleet_id"]},
    )
    assert expected == (event.vehicle, dict(event.attributes))


# --- attributes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "iso"),
    [
        ("2027-02", "2027-02"),
        ("2027-02-16", "2027-02-16"),
        ("01.04.2027 00:00:00 UTC", "2027-04-01T00:00:00Z"),
        ("1.4.2027 13:05:09 UTC", "2027-04-01T13:05:09Z"),
        ("2023-02-16T00:00:00Z", "2023-02-16T00:00:00Z"),
        ("2023-02-16T02:30:00+02:00", "2023-02-16T00:30:00Z"),
        ("2023-02-16T00:00:00.250Z", "2023-02-16T00:00:00.250Z"),
        ("2023-02-16 00:00:00", "2023-02-16T00:00:00Z"),
    ],
)
def test_date_fields_gain_an_iso_form(value: str, iso: str) -> None:
    """A recognised date string is kept as it came and normalised under `<name>_iso`."""
    expected = {"next_date": value, "next_date_iso": iso}
    assert expected == dict(decode_fields(next_date=value).attributes)


@pytest.mark.parametrize(
    "value", ["2027-13", "31.02.2027 00:00:00 UTC", "next spring", "2027/02", "20270216T000000Z"]
)
def test_unrecognised_date_is_kept_and_listed(value: str) -> None:
    """A date string in no known format gets no `_iso` and is listed in unparsed_fields."""
    expected = {"next_date": value, "unparsed_fields": ["next_date"]}
    assert expected == dict(decode_fields(next_date=value).attributes)


@pytest.mark.parametrize("value", [71, "71", 7.5, True, None])
def test_non_date_values_in_date_fields_are_left_alone(value: Any) -> None:
    """A number, a string of digits or a non-string in a `_date` field is kept, unflagged."""
    assert {"service_date": value} == dict(decode_fields(service_date=value).attributes)


def test_vendor_field_named_like_a_derived_key_wins() -> None:
    """A vendor's own `<name>_iso` field is never overwritten by the derived one."""
    attributes = dict(decode_fields(due_date_iso="vendor's", due_date="2027-02").attributes)
    assert {"due_date": "2027-02", "due_date_iso": "vendor's"} == attributes


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("[]", []),
        ("[955 Tire pressure notification]", ["955 Tire pressure notification"]),
        (
            "[955 Tire pressure notification, 229 Oil level]",
            ["955 Tire pressure notification", "229 Oil level"],
        ),
        (["a", "b"], ["a", "b"]),
    ],
)
def test_check_control_messages_become_a_list(value: Any, stored: list[str]) -> None:
    """check_control_messages is stored as a list of strings split on ", "."""
    attributes = dict(decode_fields(check_control_messages=value).attributes)
    assert {"check_control_messages": stored} == attributes


def test_check_control_messages_not_a_list_is_kept_and_listed() -> None:
    """A check_control_messages value that is no bracketed list is kept as it came and listed."""
    attributes = dict(decode_fields(check_control_messages="955 Tire pressure").attributes)
    expected = {
        "check_control_messages": "955 Tire pressure",
        "unparsed_fields": ["check_control_messages"],
    }
    assert expected == attributes


def test_unmapped_numeric_strings_stay_strings() -> None:
    """Only mapped fields are converted: other numeric strings and nulls are kept as they came."""
    attributes = dict(decode_fields(tank_capacity="42.0", power="100", series=None).attributes)
    assert {"tank_capacity": "42.0", "power": "100", "series": None} == attributes


# --- time -----------------------------------------------------------------------------------------


def test_without_a_timestamp_the_receive_time_is_used_and_said() -> None:
    """No Kafka timestamp: occurred_at is received_at and time_source says so."""
    event = decode_one(orjson.dumps({"vin": VIN, "uuid": UUID}))
    expected = (RECEIVED, {"time_source": "received_at"})
    assert expected == (event.occurred_at, dict(event.attributes))


def test_a_timestamp_that_is_not_a_datetime_is_not_used() -> None:
    """A metadata timestamp of the wrong type falls back to received_at like a missing one."""
    event = decode_one(orjson.dumps({"vin": VIN, "uuid": UUID}), timestamp="2024-05-01")
    expected = (RECEIVED, {"time_source": "received_at"})
    assert expected == (event.occurred_at, dict(event.attributes))


def test_timestamp_is_normalised_to_utc() -> None:
    """An offset or naive Kafka timestamp becomes the same instant in UTC."""
    athens = datetime(2024, 5, 1, 15, 0, tzinfo=timezone(timedelta(hours=3)))
    naive = datetime(2024, 5, 1, 12, 0)
    body = orjson.dumps({"vin": VIN, "uuid": UUID})
    events = [decode_one(body, timestamp=stamp) for stamp in (athens, naive)]
    actual = [(event.occurred_at.tzinfo, event.to_dict()["occurred_at"]) for event in events]
    assert [(UTC, "2024-05-01T12:00:00Z")] * 2 == actual


# --- whole-message errors -------------------------------------------------------------------------


@pytest.mark.parametrize("vin", [None, "", "   ", 12345])
def test_missing_vin_rejects_the_message(vin: Any) -> None:
    """Without a usable vin the whole message is refused with reason missing_vin."""
    body: dict[str, Any] = {"uuid": UUID, "mileage": "1"}
    if vin is not None:
        body["vin"] = vin
    reason, message = decode_error(orjson.dumps(body))
    assert ("missing_vin", True) == (reason, message.startswith("MOBITO message has no vin"))


@pytest.mark.parametrize(
    "body", [{"vin": VIN}, {"vin": VIN, "uuid": None}, {"vin": VIN, "uuid": ""}]
)
def test_missing_uuid_rejects_the_message(body: dict[str, Any]) -> None:
    """Without a uuid the message has no identity and is refused with missing_field."""
    assert "missing_field" == decode_error(orjson.dumps(body))[0]


def test_non_string_uuid_rejects_the_message() -> None:
    """A uuid that is not a string is refused as invalid_field."""
    assert "invalid_field" == decode_error(orjson.dumps({"vin": VIN, "uuid": 7}))[0]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[]", "not_an_object"),
        (b'[{"vin": "V", "uuid": "u"}]', "not_an_object"),
        (b'"text"', "not_an_object"),
        (b"42", "not_an_object"),
        (b"null", "not_an_object"),
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
    ],
)
def test_body_that_is_not_one_object_is_refused(payload: bytes, reason: str) -> None:
    """A body that is not a single JSON object is refused with a stable reason."""
    assert reason == decode_error(payload)[0]


def test_trailing_comma_is_tolerated() -> None:
    """The lenient parser accepts a trailing comma in the object."""
    event = decode_one(b'{"vin": "V1", "uuid": "u", "mileage": "2",}', timestamp=KAFKA_TIME)
    assert {vss.VIN: "V1", vss.TRAVELED_DISTANCE: 2000.0} == dict(event.signals)


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_decode_prints_the_sample_event(capsys: pytest.CaptureFixture[str]) -> None:
    """`fleetstream decode -d mobito --timestamp ...` prints one line with the Kafka time."""
    code = main(
        ["decode", "--decoder", "mobito", "--timestamp", "2024-05-01T12:00:00Z", str(SAMPLE)]
    )
    captured = capsys.readouterr()
    lines = [orjson.loads(line) for line in captured.out.splitlines()]
    actual = (
        code,
        captured.err,
        [(line["event_id"], line["occurred_at"], line["signals"]) for line in lines],
    )
    expected = (0, "", [(f"mobito:{UUID}", "2024-05-01T12:00:00Z", SAMPLE_SIGNALS)])
    assert expected == actual
