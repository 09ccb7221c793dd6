from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from fleetstream.errors import DecodeError
from fleetstream.normalize import vss
from fleetstream.normalize.base import Decoded, dumps
from fleetstream.normalize.connectedcars_json import decode
from fleetstream.normalize.model import RawMessage, VehicleEvent, VehicleRef
from fleetstream.normalize.registry import get_decoder

FIXTURES = Path(__file__).parent.parent / "fixtures" / "connectedcars"
RECEIVED = datetime(2024, 1, 1, tzinfo=UTC)
TIME = "2022-01-01T12:30:10Z"


def raw(payload: bytes, **metadata: Any) -> RawMessage:
    return RawMessage(payload=payload, source="test", received_at=RECEIVED, metadata=metadata)


def decode_elements(*elements: Any, **metadata: Any) -> Decoded:
    return decode(raw(orjson.dumps(list(elements)), **metadata))


def element(event_type: str, **fields: Any) -> dict[str, Any]:
    return {"type": event_type, "id": 7, "vehicleId": 42, "time": "2023-05-06T07:08:09Z", **fields}


def decode_one(item: dict[str, Any], **metadata: Any) -> VehicleEvent:
    decoded = decode_elements(item, **metadata)
    nothing_else: tuple[list[Any], list[str]] = ([], [])
    assert nothing_else == (decoded.rejected, decoded.unknown_types)
    (event,) = decoded.events
    return event


def summary(event: VehicleEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "kind": event.kind,
        "vehicle": event.vehicle,
        "signals": dict(event.signals),
        "attributes": dict(event.attributes),
    }


# --- the seed's examples, verbatim ---------------------------------------------------------------

V1337 = VehicleRef(vendor_id="1337")


def vehicle_example(
    event_type: str, signals: dict[str, Any], attributes: dict[str, Any]
) -> dict[str, Any]:
    """Expected summary of the many examples with id 433642, vehicle 1337 and the default time."""
    return {
        "event_id": f"connectedcars::1337:{event_type}:433642:{TIME}",
        "kind": "signal",
        "vehicle": V1337,
        "signals": signals,
        "attributes": attributes,
    }


def value_attribute(event_type: str, value: Any) -> dict[str, Any]:
    return vehicle_example(event_type, {}, {event_type: value})


def admin_example(event_type: str, subject: str, vehicle: VehicleRef) -> dict[str, Any]:
    return {
        "event_id": f"connectedcars::{event_type}:{subject}:123:{TIME}",
        "kind": "admin",
        "vehicle": vehicle,
        "signals": {},
        "attributes": {},
    }


EXPECTED_FIXTURES: dict[str, dict[str, Any]] = {
    "calc_vehicle_idle": value_attribute("calc_vehicle_idle", False),
    "can_adblue_remaining_distance_km": value_attribute("can_adblue_remaining_distance_km", 14154),
    "can_ambient_air_temperature_celsius": vehicle_example(
        "can_ambient_air_temperature_celsius", {vss.AIR_TEMPERATURE: 10.5}, {}
    ),
    "can_distance_with_mil_on_km": value_attribute("can_distance_with_mil_on_km", 4352),
    "can_dtc": vehicle_example(
        "can_dtc",
        {},
        {
            "code": "00430e",
            "diff": "change",
            "status": "68",
            "rxId": "7E8",
            "txId": "7E0",
            "transport": "ISOTP",
            "application": "UDS",
            "ecu": "engine",
            "sourceType": "vag",
            "rxLocalId": None,
            "txLocalId": None,
            "serviceAndDid": "19028C",
            "useFunctionalAddressing": None,
            "sessionType": "01",
        },
    ),
    "can_engine_code": value_attribute("can_engine_code", "DFBA"),
    "can_engine_coolant_temperature_celsius": vehicle_example(
        "can_engine_coolant_temperature_celsius", {vss.COOLANT_TEMPERATURE: 75}, {}
    ),
    "can_exceeded_oil_change_days": value_attribute("can_exceeded_oil_change_days", 0),
    "can_exceeded_oil_change_km": value_attribute("can_exceeded_oil_change_km", 380),
    "can_fuel_level_liters": vehicle_example(
        "can_fuel_level_liters", {vss.FUEL_ABSOLUTE_LEVEL: 34}, {}
    ),
    "can_fuel_level_percent": vehicle_example(
        "can_fuel_level_percent", {vss.FUEL_RELATIVE_LEVEL: 68}, {}
    ),
    "can_high_voltage_battery_charge_percent": vehicle_example(
        "can_high_voltage_battery_charge_percent", {vss.SOC_DISPLAYED: 97.5}, {}
    ),
    "can_high_voltage_battery_temperature_celsius": vehicle_example(
        "can_high_voltage_battery_temperature_celsius", {vss.BATTERY_TEMPERATURE_AVERAGE: 22.5}, {}
    ),
    "can_last_oil_change_days": value_attribute("can_last_oil_change_days", 46),
    "can_last_oil_change_km": value_attribute("can_last_oil_change_km", 4144),
    "can_last_service_at_date": value_attribute("can_last_service_at_date", "2014-01-03"),
    "can_last_service_at_odometer": value_attribute("can_last_service_at_odometer", 115446),
    "can_last_service_days": value_attribute("can_last_service_days", 207),
    "can_last_service_km": value_attribute("can_last_service_km", 14700),
    "can_mil_lamp": {
        "event_id": f"connectedcars::1337:can_mil_lamp:123:{TIME}",
        "kind": "signal",
        "vehicle": V1337,
        "signals": {vss.MIL_ON: False},
        "attributes": {"color": "yellow", "lampType": "exhaust", "frequency": "solid"},
    },
    "can_next_oil_change_30days": value_attribute("can_next_oil_change_30days", 300),
    "can_next_oil_change_days": value_attribute("can_next_oil_change_days", 290),
    "can_next_oil_change_km": value_attribute("can_next_oil_change_km", 13100),
    "can_next_service_30days": value_attribute("can_next_service_30days", 390),
    "can_next_service_days": vehicle_example(
        "can_next_service_days", {vss.TIME_TO_SERVICE: 2419200}, {}
    ),
    "can_next_service_km": vehicle_example(
        "can_next_service_km", {vss.DISTANCE_TO_SERVICE: 4700}, {}
    ),
    "can_odometer_km": vehicle_example("can_odometer_km", {vss.TRAVELED_DISTANCE: 94636000}, {}),
    "can_odometer10_km": vehicle_example(
        "can_odometer10_km", {vss.TRAVELED_DISTANCE: 67740000}, {}
    ),
    "can_oil_change_interval_fixed_days": value_attribute(
        "can_oil_change_interval_fixed_days", 365
    ),
    "can_oil_change_interval_fixed_km": value_attribute("can_oil_change_interval_fixed_km", 15000),
    "can_oil_change_interval_variable_days": value_attribute(
        "can_oil_change_interval_variable_days", 730
    ),
    "can_oil_change_interval_variable_km": value_attribute(
        "can_oil_change_interval_variable_km", 30000
    ),
    "can_oil_change_type_is_fixed": value_attribute("can_oil_change_type_is_fixed", True),
    "can_oil_degradation_percent": value_attribute("can_oil_degradation_percent", 5),
    "can_range_total_km": vehicle_example("can_range_total_km", {vss.RANGE: 5000}, {}),
    "can_service_interval_days": value_attribute("can_service_interval_days", 730),
    "can_service_interval_km": value_attribute("can_service_interval_km", 30000),
    "can_vehicle_speed_kph": vehicle_example("can_vehicle_speed_kph", {vss.SPEED: 110.54}, {}),
    "can_vin": {
        "event_id": f"connectedcars::1337:can_vin:433642:{TIME}",
        "kind": "signal",
        "vehicle": VehicleRef(vendor_id="1337", vin="ZAR94000007021883"),
        "signals": {vss.VIN: "ZAR94000007021883"},
        "attributes": {},
    },
    "car_battery_voltage": vehicle_example(
        "car_battery_voltage", {vss.LOW_VOLTAGE_BATTERY_VOLTAGE: 3.989}, {}
    ),
    "car_ignition": vehicle_example("car_ignition", {vss.LOW_VOLTAGE_SYSTEM_STATE: "OFF"}, {}),
    "car_odometer_km": vehicle_example("car_odometer_km", {vss.TRAVELED_DISTANCE: 94636363.0}, {}),
    "car_profiling": vehicle_example(
        "car_profiling",
        {vss.ACCELERATION_LONGITUDINAL: 2.353596},
        {"gForce": 0.24, "direction": "acceleration_medium"},
    ),
    "daily_can_odometer_km": {
        "event_id": "connectedcars::1337:daily_can_odometer_km:433642:2022-01-01T00:00:00Z",
        "kind": "signal",
        "vehicle": V1337,
        "signals": {vss.TRAVELED_DISTANCE: 94636000},
        "attributes": {},
    },
    "gpio_battery_external_disconnect": value_attribute("gpio_battery_external_disconnect", True),
    "gps_position": {
        "event_id": "connectedcars::228745:gps_position:157659647:2022-10-12T07:06:45Z",
        "kind": "signal",
        "vehicle": VehicleRef(vendor_id="228745"),
        "signals": {
            vss.LATITUDE: 60.613747999999994,
            vss.LONGITUDE: 17.414016999999998,
            vss.SPEED: 3,
            vss.HEADING: 120,
        },
        "attributes": {"hdop": 0.69},
    },
    "service_reminder_lead": {
        "event_id": "connectedcars::59821:service_reminder_lead:12095712:2022-01-02T18:31:03Z",
        "kind": "signal",
        "vehicle": VehicleRef(vendor_id="59821"),
        "signals": {},
        "attributes": {"service_reminder_lead": "2022-08-25T00:00:00.000Z"},
    },
    "car_roadworthy_inspection_date": {
        "event_id": (
            "connectedcars::59821:car_roadworthy_inspection_date:12095712:2022-01-02T18:31:03Z"
        ),
        "kind": "signal",
        "vehicle": VehicleRef(vendor_id="59821", vin="WVWZZZ1JZ3W000000", fleet_id="47583"),
        "signals": {vss.VIN: "WVWZZZ1JZ3W000000"},
        "attributes": {
            "fleetExternalReference": "fleet47583",
            "workshopId": 9876,
            "car_roadworthy_inspection_date": "2022-08-25T00:00:00.000Z",
        },
    },
    "access_granted_to_fleet": admin_example(
        "access_granted_to_fleet", "f47583", VehicleRef(fleet_id="47583")
    ),
    "access_granted_to_vehicle": admin_example("access_granted_to_vehicle", "v1337", V1337),
    "access_removed_from_fleet": admin_example(
        "access_removed_from_fleet", "f47583", VehicleRef(fleet_id="47583")
    ),
    "access_removed_from_vehicle": admin_example("access_removed_from_vehicle", "v1337", V1337),
    "vehicle_added_to_fleet": admin_example(
        "vehicle_added_to_fleet", "v1337/f47583", VehicleRef(vendor_id="1337", fleet_id="47583")
    ),
    "vehicle_removed_from_fleet": admin_example(
        "vehicle_removed_from_fleet",
        "v1337/f47583",
        VehicleRef(vendor_id="1337", fleet_id="47583"),
    ),
    "car_service_booking": {
        "event_id": "connectedcars::car_service_booking:v1337/f47583:9812321:2025-01-01T10:30:10Z",
        "kind": "admin",
        "vehicle": VehicleRef(vendor_id="1337", vin="WVWZZZ1JZ3W000000", fleet_id="47583"),
        "signals": {vss.VIN: "WVWZZZ1JZ3W000000"},
        "attributes": {
            "bookingSource": "online",
            "bookingId": "BKG123456",
            "bookingStatus": "NEW",
            "bookingDealer": "KVPS123",
            "fleetExternalReference": "550e8400-e29b-41d4-a716-446655440000",
            "reasonKey": "maintenance",
            "reasonText": "Regular maintenance",
            "workshopId": 9876,
            "car_service_booking": "2025-06-05T12:30:10Z",
        },
    },
}


def test_fixture_directory_holds_one_example_per_documented_type() -> None:
    """The fixture directory holds exactly the 48 vehicle and 7 admin examples of the seed."""
    assert sorted(EXPECTED_FIXTURES) == sorted(path.stem for path in FIXTURES.glob("*.json"))


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda path: path.stem)
def test_fixture_decodes_to_expected_event(path: Path) -> None:
    """Each verbatim vendor example decodes to exactly the expected event."""
    decoded = decode(raw(path.read_bytes()))
    expected: tuple[list[dict[str, Any]], list[Any], list[str]]
    expected = ([EXPECTED_FIXTURES[path.stem]], [], [])
    actual = ([summary(event) for event in decoded.events], decoded.rejected, decoded.unknown_types)
    assert expected == actual


def test_fixture_with_trailing_comma_is_not_strict_json_but_decodes() -> None:
    """The examples carry trailing commas that strict JSON refuses and the decoder accepts."""
    payload = (FIXTURES / "car_ignition.json").read_bytes()
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(payload)
    expected = ["car_ignition"]
    assert expected == [event.type for event in decode(raw(payload)).events]


def test_string_vehicle_id_fixture_is_the_same_vehicle_as_an_int() -> None:
    """The car_ignition example's `"vehicleId": "1337"` is vehicle 1337."""
    from_string = decode(raw((FIXTURES / "car_ignition.json").read_bytes())).events[0]
    from_int = decode_one(
        {"type": "car_ignition", "id": 433642, "value": False, "vehicleId": 1337, "time": TIME}
    )
    assert (from_int.event_id, from_int.vehicle_key) == (
        from_string.event_id,
        from_string.vehicle_key,
    )


# --- built payloads: every documented field of every type ---------------------------------------

BUILT: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("calc_vehicle_idle", {"value": True}, {}, {"calc_vehicle_idle": True}),
    ("can_adblue_remaining_distance_km", {"value": 9}, {}, {"can_adblue_remaining_distance_km": 9}),
    ("can_ambient_air_temperature_celsius", {"value": -5.25}, {vss.AIR_TEMPERATURE: -5.25}, {}),
    ("can_ambient_air_temperature_celsius", {"value": "14.5"}, {vss.AIR_TEMPERATURE: 14.5}, {}),
    ("can_distance_with_mil_on_km", {"value": 12}, {}, {"can_distance_with_mil_on_km": 12}),
    (
        "can_dtc",
        {
            "code": "0001CB",
            "diff": "add",
            "status": "08",
            "rxId": "77D",
            "txId": "713",
            "transport": "TP2",
            "application": "KWP2000",
            "ecu": "airbag",
            "sourceType": "j2012",
            "rxLocalId": "01",
            "txLocalId": "02",
            "serviceAndDid": "1902FF",
            "useFunctionalAddressing": True,
            "sessionType": "03",
        },
        {},
        {
            "code": "0001CB",
            "diff": "add",
            "status": "08",
            "rxId": "77D",
            "txId": "713",
            "transport": "TP2",
            "application": "KWP2000",
            "ecu": "airbag",
            "sourceType": "j2012",
            "rxLocalId": "01",
            "txLocalId": "02",
            "serviceAndDid": "1902FF",
            "useFunctionalAddressing": True,
            "sessionType": "03",
        },
    ),
    (
        "can_dtc",
        {"code": "0001CB", "diff": "remove", "status": None, "rxId": None, "ecu": None},
        {},
        {"code": "0001CB", "diff": "remove", "status": None, "rxId": None, "ecu": None},
    ),
    ("can_engine_code", {"value": "CJXA"}, {}, {"can_engine_code": "CJXA"}),
    ("can_engine_coolant_temperature_celsius", {"value": 90}, {vss.COOLANT_TEMPERATURE: 90}, {}),
    ("can_exceeded_oil_change_days", {"value": 3}, {}, {"can_exceeded_oil_change_days": 3}),
    ("can_exceeded_oil_change_km", {"value": 40}, {}, {"can_exceeded_oil_change_km": 40}),
    ("can_fuel_level_liters", {"value": 41}, {vss.FUEL_ABSOLUTE_LEVEL: 41}, {}),
    ("can_fuel_level_liters", {"value": "41"}, {vss.FUEL_ABSOLUTE_LEVEL: 41}, {}),
    ("can_fuel_level_percent", {"value": 12.5}, {vss.FUEL_RELATIVE_LEVEL: 12.5}, {}),
    ("can_high_voltage_battery_charge_percent", {"value": 55.5}, {vss.SOC_DISPLAYED: 55.5}, {}),
    (
        "can_high_voltage_battery_temperature_celsius",
        {"value": -3.5},
        {vss.BATTERY_TEMPERATURE_AVERAGE: -3.5},
        {},
    ),
    ("can_last_oil_change_days", {"value": 1}, {}, {"can_last_oil_change_days": 1}),
    ("can_last_oil_change_km", {"value": 2}, {}, {"can_last_oil_change_km": 2}),
    (
        "can_last_service_at_date",
        {"value": "2020-02-29"},
        {},
        {"can_last_service_at_date": "2020-02-29"},
    ),
    ("can_last_service_at_odometer", {"value": 3}, {}, {"can_last_service_at_odometer": 3}),
    ("can_last_service_days", {"value": 4}, {}, {"can_last_service_days": 4}),
    ("can_last_service_km", {"value": 5}, {}, {"can_last_service_km": 5}),
    (
        "can_mil_lamp",
        {"value": True, "color": "red", "lampType": "exhaust", "frequency": "blinking"},
        {vss.MIL_ON: True},
        {"color": "red", "lampType": "exhaust", "frequency": "blinking"},
    ),
    ("can_next_oil_change_30days", {"value": 60}, {}, {"can_next_oil_change_30days": 60}),
    ("can_next_oil_change_days", {"value": 6}, {}, {"can_next_oil_change_days": 6}),
    ("can_next_oil_change_km", {"value": 7}, {}, {"can_next_oil_change_km": 7}),
    ("can_next_service_30days", {"value": 90}, {}, {"can_next_service_30days": 90}),
    ("can_next_service_days", {"value": 28}, {vss.TIME_TO_SERVICE: 2419200}, {}),
    ("can_next_service_days", {"value": "1"}, {vss.TIME_TO_SERVICE: 86400}, {}),
    ("can_next_service_km", {"value": 4700}, {vss.DISTANCE_TO_SERVICE: 4700}, {}),
    ("can_odometer_km", {"value": 94636}, {vss.TRAVELED_DISTANCE: 94636000}, {}),
    ("can_odometer_km", {"value": "94636"}, {vss.TRAVELED_DISTANCE: 94636000}, {}),
    ("can_odometer10_km", {"value": 67740}, {vss.TRAVELED_DISTANCE: 67740000}, {}),
    (
        "can_oil_change_interval_fixed_days",
        {"value": 8},
        {},
        {"can_oil_change_interval_fixed_days": 8},
    ),
    ("can_oil_change_interval_fixed_km", {"value": 9}, {}, {"can_oil_change_interval_fixed_km": 9}),
    (
        "can_oil_change_interval_variable_days",
        {"value": 10},
        {},
        {"can_oil_change_interval_variable_days": 10},
    ),
    (
        "can_oil_change_interval_variable_km",
        {"value": 11},
        {},
        {"can_oil_change_interval_variable_km": 11},
    ),
    ("can_oil_change_type_is_fixed", {"value": False}, {}, {"can_oil_change_type_is_fixed": False}),
    ("can_oil_degradation_percent", {"value": 13}, {}, {"can_oil_degradation_percent": 13}),
    ("can_range_total_km", {"value": 432}, {vss.RANGE: 432000}, {}),
    ("can_range_total_km", {"value": 0.1}, {vss.RANGE: 100}, {}),
    ("can_service_interval_days", {"value": 14}, {}, {"can_service_interval_days": 14}),
    ("can_service_interval_km", {"value": 15}, {}, {"can_service_interval_km": 15}),
    ("can_vehicle_speed_kph", {"value": 0}, {vss.SPEED: 0}, {}),
    ("can_vehicle_speed_kph", {"value": "88.8"}, {vss.SPEED: 88.8}, {}),
    ("can_vin", {"value": "WVWZZZ1JZ3W000000"}, {vss.VIN: "WVWZZZ1JZ3W000000"}, {}),
    ("car_battery_voltage", {"value": 12.6}, {vss.LOW_VOLTAGE_BATTERY_VOLTAGE: 12.6}, {}),
    ("car_ignition", {"value": True}, {vss.LOW_VOLTAGE_SYSTEM_STATE: "ON"}, {}),
    ("car_ignition", {"value": False}, {vss.LOW_VOLTAGE_SYSTEM_STATE: "OFF"}, {}),
    ("car_odometer_km", {"value": 94636.363}, {vss.TRAVELED_DISTANCE: 94636363}, {}),
    ("daily_can_odometer_km", {"value": 1}, {vss.TRAVELED_DISTANCE: 1000}, {}),
    (
        "gpio_battery_external_disconnect",
        {"value": False},
        {},
        {"gpio_battery_external_disconnect": False},
    ),
    (
        "gps_position",
        {
            "latitude": 55.676098,
            "longitude": 12.568337,
            "speed": 50,
            "direction": 0,
            "eph": 5,
            "hdop": None,
        },
        {
            vss.LATITUDE: 55.676098,
            vss.LONGITUDE: 12.568337,
            vss.SPEED: 50,
            vss.HEADING: 0,
            vss.HORIZONTAL_ACCURACY: 5,
        },
        {},
    ),
    (
        "gps_position",
        {
            "latitude": 1.5,
            "longitude": -2.5,
            "speed": None,
            "direction": None,
            "eph": None,
            "hdop": 150,
        },
        {vss.LATITUDE: 1.5, vss.LONGITUDE: -2.5},
        {"hdop": 1.5},
    ),
    (
        "gps_position",
        {"latitude": "1.25", "longitude": "2"},
        {vss.LATITUDE: 1.25, vss.LONGITUDE: 2},
        {},
    ),
    (
        "service_reminder_lead",
        {"value": "2023-08-25T00:00:00.000Z"},
        {},
        {"service_reminder_lead": "2023-08-25T00:00:00.000Z"},
    ),
    (
        "car_roadworthy_inspection_date",
        {"vin": "WVWZZZ1JZ3W000000", "value": "2024-08-25T00:00:00.000Z"},
        {vss.VIN: "WVWZZZ1JZ3W000000"},
        {"car_roadworthy_inspection_date": "2024-08-25T00:00:00.000Z"},
    ),
    (
        "car_roadworthy_inspection_date",
        {
            "vin": "WVWZZZ1JZ3W000000",
            "fleetId": None,
            "fleetExternalReference": None,
            "workshopId": None,
            "value": "2024-08-25T00:00:00.000Z",
        },
        {vss.VIN: "WVWZZZ1JZ3W000000"},
        {
            "fleetExternalReference": None,
            "workshopId": None,
            "car_roadworthy_inspection_date": "2024-08-25T00:00:00.000Z",
        },
    ),
    ("access_granted_to_fleet", {"fleetId": 5}, {}, {}),
    ("access_granted_to_vehicle", {}, {}, {}),
    ("access_removed_from_fleet", {"fleetId": 5}, {}, {}),
    ("access_removed_from_vehicle", {}, {}, {}),
    ("vehicle_added_to_fleet", {"fleetId": 5}, {}, {}),
    ("vehicle_removed_from_fleet", {"fleetId": 5}, {}, {}),
    (
        "car_service_booking",
        {
            "bookingSource": "phone",
            "bookingId": "BKG1",
            "bookingStatus": "CANCELLED",
            "bookingDealer": "KVPS9",
            "bookingCreatedDate": "2025-01-01T13:10:10Z",
            "vin": "WVWZZZ1JZ3W000000",
            "fleetId": 5,
            "fleetExternalReference": "ext",
            "reasonKey": "automatically_expired",
            "reasonText": "Expired",
            "workshopId": 1,
            "value": "2025-06-05T12:30:10Z",
        },
        {vss.VIN: "WVWZZZ1JZ3W000000"},
        {
            "bookingSource": "phone",
            "bookingId": "BKG1",
            "bookingStatus": "CANCELLED",
            "bookingDealer": "KVPS9",
            "bookingCreatedDate": "2025-01-01T13:10:10Z",
            "fleetExternalReference": "ext",
            "reasonKey": "automatically_expired",
            "reasonText": "Expired",
            "workshopId": 1,
            "car_service_booking": "2025-06-05T12:30:10Z",
        },
    ),
]


@pytest.mark.parametrize(
    ("event_type", "fields", "signals", "attributes"),
    BUILT,
    ids=[f"{case[0]}-{index}" for index, case in enumerate(BUILT)],
)
def test_built_payload_maps_every_documented_field(
    event_type: str, fields: dict[str, Any], signals: dict[str, Any], attributes: dict[str, Any]
) -> None:
    """Every documented field of every type lands in the expected signal or attribute."""
    event = decode_one(element(event_type, **fields))
    assert (signals, attributes) == (dict(event.signals), dict(event.attributes))


def test_built_cases_cover_every_known_type() -> None:
    """The built payload table exercises every type that has a fixture."""
    assert sorted(EXPECTED_FIXTURES) == sorted({case[0] for case in BUILT} | {"car_profiling"})


G = vss.STANDARD_GRAVITY_M_S2


@pytest.mark.parametrize(
    ("direction", "g_force", "signals"),
    [
        ("acceleration_low", 0.2, {vss.ACCELERATION_LONGITUDINAL: 1.96133}),
        ("acceleration_high", 1, {vss.ACCELERATION_LONGITUDINAL: G}),
        ("brake_medium", 0.5, {vss.ACCELERATION_LONGITUDINAL: -4.903325}),
        ("brake_high", "1", {vss.ACCELERATION_LONGITUDINAL: -G}),
        ("turn_left_low", 0.24, {vss.ACCELERATION_LATERAL: 2.353596}),
        ("turn_left_high", 2, {vss.ACCELERATION_LATERAL: 19.6133}),
        ("turn_right_medium", 0.3, {vss.ACCELERATION_LATERAL: -2.941995}),
        ("turn_right_low", 0.24, {vss.ACCELERATION_LATERAL: -2.353596}),
        ("brake", 1, {vss.ACCELERATION_LONGITUDINAL: -G}),
        ("drift_high", 0.7, {}),
        ("turn", 0.7, {}),
    ],
)
def test_car_profiling_direction_gives_axis_and_sign(
    direction: str, g_force: Any, signals: dict[str, Any]
) -> None:
    """gForce x g0 goes to the axis and sign of the direction prefix; both stay attributes."""
    event = decode_one(element("car_profiling", gForce=g_force, direction=direction))
    expected = (signals, {"gForce": g_force, "direction": direction})
    assert expected == (dict(event.signals), dict(event.attributes))


@pytest.mark.parametrize(
    ("item", "path"),
    [
        (element("can_ambient_air_temperature_celsius", value=-0.0), vss.AIR_TEMPERATURE),
        (element("can_odometer_km", value=-0.0), vss.TRAVELED_DISTANCE),
        (
            element("car_profiling", gForce=0.0, direction="brake_low"),
            vss.ACCELERATION_LONGITUDINAL,
        ),
        (element("gps_position", latitude=-0.0, longitude=1.0), vss.LATITUDE),
    ],
)
def test_negative_zero_is_normalised(item: dict[str, Any], path: str) -> None:
    """A signal that would be -0.0 is stored as 0.0 (0.0 == -0.0, so compare the JSON)."""
    event = decode_one(item)
    expected = b"0.0"
    assert expected == orjson.dumps(event.signals[path])


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1e3", 1000.0), ("+5", 5), (".5", 0.5), ("-7", -7), ("3.", 3.0)],
)
def test_numeric_strings_are_numbers(value: str, expected: float) -> None:
    """Numeric strings in any plain decimal or exponent form are read as numbers."""
    event = decode_one(element("can_vehicle_speed_kph", value=value))
    assert {vss.SPEED: expected} == dict(event.signals)


def test_integer_numeric_string_stays_an_integer() -> None:
    """A numeric string without fraction or exponent becomes an int, as the JSON number would."""
    event = decode_one(element("can_fuel_level_liters", value="34"))
    assert [int] == [type(value) for value in event.signals.values()]


def test_hdop_is_divided_by_100_exactly() -> None:
    """hdop 69 is stored as exactly 0.69, and eph is a horizontal accuracy in m."""
    with_hdop = decode_one(element("gps_position", latitude=1, longitude=2, hdop=69, eph=None))
    with_eph = decode_one(element("gps_position", latitude=1, longitude=2, hdop=None, eph=7))
    expected = ({"hdop": 0.69}, {vss.LATITUDE: 1, vss.LONGITUDE: 2, vss.HORIZONTAL_ACCURACY: 7})
    assert expected == (dict(with_hdop.attributes), dict(with_eph.signals))


def test_mapped_field_that_is_absent_or_null_gives_no_signal() -> None:
    """A type whose mapped value is missing or null is kept with no signal and no attribute."""
    missing = decode_one(element("can_odometer_km"))
    null = decode_one(element("can_odometer_km", value=None))
    expected: list[tuple[dict[str, Any], dict[str, Any]]] = [({}, {}), ({}, {})]
    assert expected == [
        (dict(missing.signals), dict(missing.attributes)),
        (dict(null.signals), dict(null.attributes)),
    ]


def test_unmapped_extra_fields_are_kept_under_their_names() -> None:
    """A field the vendor adds to a mapped type is kept as an attribute under its own name."""
    event = decode_one(element("can_odometer_km", value=1, source="gps", quality=None))
    expected = ({vss.TRAVELED_DISTANCE: 1000}, {"source": "gps", "quality": None})
    assert expected == (dict(event.signals), dict(event.attributes))


# --- identity, vehicle and envelope ------------------------------------------------------------


def test_event_envelope_fields() -> None:
    """vendor, source, type, kind, occurred_at and received_at come from the element and message."""
    event = decode_one(element("car_ignition", value=True))
    expected = {
        "vendor": "connectedcars",
        "source": "test",
        "type": "car_ignition",
        "kind": "signal",
        "occurred_at": datetime(2023, 5, 6, 7, 8, 9, tzinfo=UTC),
        "received_at": RECEIVED,
        "event_id": "connectedcars::42:car_ignition:7:2023-05-06T07:08:09Z",
        "vehicle": VehicleRef(vendor_id="42"),
    }
    actual = {
        "vendor": event.vendor,
        "source": event.source,
        "type": event.type,
        "kind": event.kind,
        "occurred_at": event.occurred_at,
        "received_at": event.received_at,
        "event_id": event.event_id,
        "vehicle": event.vehicle,
    }
    assert expected == actual


def test_string_vehicle_id_gives_same_identity_as_int() -> None:
    """vehicleId "1337" and 1337 give the same event id, vendor id and vehicle key."""
    as_int = decode_one(element("can_odometer_km", vehicleId=1337, value=1))
    as_str = decode_one(element("can_odometer_km", vehicleId="1337", value=1))
    assert (as_int.event_id, as_int.vehicle, as_int.vehicle_key) == (
        as_str.event_id,
        as_str.vehicle,
        as_str.vehicle_key,
    )


def test_string_ids_are_normalised_to_decimal() -> None:
    """String ids with leading zeros are the same integer as the JSON numbers."""
    event = decode_one(element("access_granted_to_fleet", id="007", vehicleId=None, fleetId="0047"))
    expected = ("connectedcars::access_granted_to_fleet:f47:7:2023-05-06T07:08:09Z", "47")
    assert expected == (event.event_id, event.vehicle.fleet_id)


@pytest.mark.parametrize(
    "time",
    ["2022-01-01T12:30:10Z", "2022-01-01T12:30:10.000Z", "2022-01-01T14:30:10+02:00"],
)
def test_time_spelling_does_not_change_the_event_id(time: str) -> None:
    """Milliseconds `.000` and a UTC offset spell the same instant, so the same event id."""
    event = decode_one(element("can_odometer_km", time=time, value=1))
    expected = "connectedcars::42:can_odometer_km:7:2022-01-01T12:30:10Z"
    assert expected == event.event_id


def test_milliseconds_are_part_of_the_event_id() -> None:
    """Two events a fraction of a second apart have different ids."""
    event = decode_one(element("gps_position", time="2022-01-01T12:30:10.250Z", latitude=1))
    expected = "connectedcars::42:gps_position:7:2022-01-01T12:30:10.250Z"
    assert expected == event.event_id


def test_same_counter_and_time_on_two_vehicles_are_two_events() -> None:
    """The per-shard `id` with the same time on two vehicles yields two distinct event ids."""
    decoded = decode_elements(
        element("car_ignition", vehicleId=1, value=True),
        element("car_ignition", vehicleId=2, value=True),
    )
    expected = [
        "connectedcars::1:car_ignition:7:2023-05-06T07:08:09Z",
        "connectedcars::2:car_ignition:7:2023-05-06T07:08:09Z",
    ]
    assert expected == [event.event_id for event in decoded.events]


def test_same_vehicle_id_in_two_organizations_are_two_events_and_vehicles() -> None:
    """vehicleId is unique only within an organization: both the event id and vehicle key differ."""
    decoded = decode_elements(
        element("car_ignition", organizationKey="dk", value=True),
        element("car_ignition", organizationKey="se", value=True),
    )
    expected = [
        ("connectedcars:dk:42:car_ignition:7:2023-05-06T07:08:09Z", "connectedcars:dk:42"),
        ("connectedcars:se:42:car_ignition:7:2023-05-06T07:08:09Z", "connectedcars:se:42"),
    ]
    assert expected == [(event.event_id, event.vehicle_key) for event in decoded.events]


@pytest.mark.parametrize(
    ("item", "metadata", "organization"),
    [
        (element("car_ignition", value=True), {"organization": "from-route"}, "from-route"),
        (
            element("car_ignition", value=True, organizationKey="from-event"),
            {"organization": "from-route"},
            "from-event",
        ),
        (element("car_ignition", value=True, organizationKey="from-event"), {}, "from-event"),
        (element("car_ignition", value=True), {}, None),
    ],
)
def test_organization_from_element_else_route_metadata(
    item: dict[str, Any], metadata: dict[str, Any], organization: str | None
) -> None:
    """organizationKey wins; the route's `organization` metadata is the fallback."""
    event = decode_one(item, **metadata)
    event_id = f"connectedcars:{organization or ''}:42:car_ignition:7:2023-05-06T07:08:09Z"
    assert (organization, event_id) == (event.vehicle.organization, event.event_id)


def test_organization_key_is_not_an_attribute() -> None:
    """organizationKey is envelope: it is in the vehicle, not in the attributes."""
    event = decode_one(element("can_engine_code", value="DFBA", organizationKey="dk"))
    expected = {"can_engine_code": "DFBA"}
    assert expected == dict(event.attributes)


@pytest.mark.parametrize(
    ("fields", "subject", "vehicle"),
    [
        ({"vehicleId": 1337}, "v1337", VehicleRef(vendor_id="1337")),
        ({"vehicleId": None, "fleetId": 9}, "f9", VehicleRef(fleet_id="9")),
        (
            {"vehicleId": "1337", "fleetId": "9"},
            "v1337/f9",
            VehicleRef(vendor_id="1337", fleet_id="9"),
        ),
    ],
)
def test_admin_event_subject(fields: dict[str, Any], subject: str, vehicle: VehicleRef) -> None:
    """Admin event ids name the vehicle, the fleet or both as the subject."""
    event = decode_one(element("vehicle_added_to_fleet", **fields))
    expected = (f"connectedcars::vehicle_added_to_fleet:{subject}:7:2023-05-06T07:08:09Z", vehicle)
    assert expected == (event.event_id, event.vehicle)


@pytest.mark.parametrize(
    "event_type",
    [
        "access_granted_to_fleet",
        "access_granted_to_vehicle",
        "access_removed_from_fleet",
        "access_removed_from_vehicle",
        "vehicle_added_to_fleet",
        "vehicle_removed_from_fleet",
        "car_service_booking",
    ],
)
def test_admin_types_are_admin_kind(event_type: str) -> None:
    """The seven admin types are kind `admin`."""
    expected = "admin"
    assert expected == decode_one(element(event_type, fleetId=1)).kind


def test_vin_and_fleet_id_go_to_the_vehicle_ref() -> None:
    """A vin and fleetId on an event describe its vehicle; can_vin also sets the vehicle's VIN."""
    inspection = decode_one(
        element("car_roadworthy_inspection_date", vin="VIN1", fleetId=3, value="2024-01-01")
    )
    can_vin = decode_one(element("can_vin", value="VIN2"))
    assert [
        VehicleRef(vendor_id="42", vin="VIN1", fleet_id="3"),
        VehicleRef(vendor_id="42", vin="VIN2"),
    ] == [inspection.vehicle, can_vin.vehicle]


# --- unknown types -------------------------------------------------------------------------------


def test_unknown_type_is_kept_and_listed() -> None:
    """An unknown type is a signal event with its fields as attributes, listed once per event."""
    decoded = decode_elements(
        element("can_new_thing", value=3, unit="bar"),
        element("can_new_thing", value=4),
        element("car_ignition", value=True),
    )
    expected_lists: tuple[list[Any], list[str]] = ([], ["can_new_thing", "can_new_thing"])
    assert expected_lists == (decoded.rejected, decoded.unknown_types)
    expected_events = [
        {
            "event_id": "connectedcars::42:can_new_thing:7:2023-05-06T07:08:09Z",
            "kind": "signal",
            "vehicle": VehicleRef(vendor_id="42"),
            "signals": {},
            "attributes": {"can_new_thing": 3, "unit": "bar"},
        },
        {
            "event_id": "connectedcars::42:can_new_thing:7:2023-05-06T07:08:09Z",
            "kind": "signal",
            "vehicle": VehicleRef(vendor_id="42"),
            "signals": {},
            "attributes": {"can_new_thing": 4},
        },
    ]
    assert expected_events == [summary(event) for event in decoded.events[:2]]


def test_unknown_type_without_vehicle_gets_an_admin_style_id() -> None:
    """An unknown type without vehicleId is kept, identified by its fleet like an admin event."""
    event = decode_elements(element("fleet_renamed", vehicleId=None, fleetId=5, name="x")).events[0]
    expected = ("connectedcars::fleet_renamed:f5:7:2023-05-06T07:08:09Z", {"name": "x"})
    assert expected == (event.event_id, dict(event.attributes))


# --- rejections ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "reason", "message"),
    [
        (5, "not_an_object", "element 1: must be a JSON object, got a number"),
        ([1], "not_an_object", "element 1: must be a JSON object, got a array"),
        (
            {"id": 1, "vehicleId": 1, "time": TIME},
            "missing_field",
            "element 1 (type None): missing field 'type'",
        ),
        (
            {"type": 5, "id": 1, "vehicleId": 1, "time": TIME},
            "invalid_field",
            "element 1 (type 5): field 'type' must be a string, got 5",
        ),
        (
            {"type": "car_ignition", "vehicleId": 1, "time": TIME, "value": True},
            "missing_field",
            "element 1 (type 'car_ignition'): missing field 'id'",
        ),
        (
            {"type": "car_ignition", "id": 1.5, "vehicleId": 1, "time": TIME, "value": True},
            "invalid_field",
            "element 1 (type 'car_ignition'): field 'id' must be an integer, got 1.5",
        ),
        (
            {"type": "car_ignition", "id": 1, "vehicleId": 1, "value": True},
            "missing_field",
            "element 1 (type 'car_ignition'): missing field 'time'",
        ),
        (
            element("car_ignition", time="yesterday", value=True),
            "invalid_time",
            "element 1 (type 'car_ignition'): time is not RFC 3339: 'yesterday'",
        ),
        (
            element("car_ignition", time=1641040210, value=True),
            "invalid_time",
            "element 1 (type 'car_ignition'): time must be an RFC 3339 string, got 1641040210",
        ),
        (
            element("car_ignition", vehicleId=None, value=True),
            "missing_field",
            "element 1 (type 'car_ignition'): missing field 'vehicleId'",
        ),
        (
            element("car_ignition", vehicleId="car-1", value=True),
            "invalid_field",
            "element 1 (type 'car_ignition'): field 'vehicleId' must be an integer, got 'car-1'",
        ),
        (
            element("car_ignition", vehicleId=True, value=True),
            "invalid_field",
            "element 1 (type 'car_ignition'): field 'vehicleId' must be an integer, got True",
        ),
        (
            element("access_granted_to_fleet", vehicleId=None),
            "missing_field",
            "element 1 (type 'access_granted_to_fleet'): missing field 'vehicleId' or 'fleetId'",
        ),
        (
            element("vehicle_added_to_fleet", fleetId="fleet-9"),
            "invalid_field",
            "element 1 (type 'vehicle_added_to_fleet'): field 'fleetId' must be an integer, "
            "got 'fleet-9'",
        ),
        (
            element("car_ignition", organizationKey=7, value=True),
            "invalid_field",
            "element 1 (type 'car_ignition'): field 'organizationKey' must be a string, got 7",
        ),
        (
            element("car_roadworthy_inspection_date", vin=123),
            "invalid_field",
            "element 1 (type 'car_roadworthy_inspection_date'): field 'vin' must be a string, "
            "got 123",
        ),
        (
            element("can_odometer_km", value="lots"),
            "invalid_field",
            "element 1 (type 'can_odometer_km'): field 'value' must be a number, got 'lots'",
        ),
        (
            element("can_odometer_km", value=True),
            "invalid_field",
            "element 1 (type 'can_odometer_km'): field 'value' must be a number, got True",
        ),
        (
            element("can_odometer_km", value="NaN"),
            "invalid_field",
            "element 1 (type 'can_odometer_km'): field 'value' must be a number, got 'NaN'",
        ),
        (
            element("can_odometer_km", value="1_000"),
            "invalid_field",
            "element 1 (type 'can_odometer_km'): field 'value' must be a number, got '1_000'",
        ),
        (
            element("can_vehicle_speed_kph", value=[50]),
            "invalid_field",
            "element 1 (type 'can_vehicle_speed_kph'): field 'value' must be a number, got [50]",
        ),
        (
            element("car_ignition", value="true"),
            "invalid_field",
            "element 1 (type 'car_ignition'): field 'value' must be a boolean, got 'true'",
        ),
        (
            element("can_mil_lamp", value=1),
            "invalid_field",
            "element 1 (type 'can_mil_lamp'): field 'value' must be a boolean, got 1",
        ),
        (
            element("can_vin", value=12345),
            "invalid_field",
            "element 1 (type 'can_vin'): field 'value' must be a string, got 12345",
        ),
        (
            element("gps_position", latitude="north", longitude=1),
            "invalid_field",
            "element 1 (type 'gps_position'): field 'latitude' must be a number, got 'north'",
        ),
        (
            element("gps_position", latitude=1, longitude=1, hdop="good"),
            "invalid_field",
            "element 1 (type 'gps_position'): field 'hdop' must be a number, got 'good'",
        ),
        (
            element("car_profiling", gForce="strong", direction="brake_high"),
            "invalid_field",
            "element 1 (type 'car_profiling'): field 'gForce' must be a number, got 'strong'",
        ),
        (
            element("car_profiling", gForce=0.3, direction=3),
            "invalid_field",
            "element 1 (type 'car_profiling'): field 'direction' must be a string, got 3",
        ),
    ],
)
def test_bad_element_is_rejected_alone(bad: Any, reason: str, message: str) -> None:
    """A bad element is rejected with its reason, a message naming it, and its own bytes."""
    good_before = element("can_odometer_km", value=1)
    good_after = element("car_ignition", value=True)
    decoded = decode_elements(good_before, bad, good_after)
    expected_types = ["can_odometer_km", "car_ignition"]
    assert expected_types == [event.type for event in decoded.events]
    assert [(reason, message, dumps(bad))] == [
        (rejected.error.reason, rejected.error.message, rejected.raw)
        for rejected in decoded.rejected
    ]


# --- the body as a whole ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "invalid_json"),
        (b"[{]", "invalid_json"),
        (b"", "invalid_json"),
        (b"42", "not_an_array"),
        (b'"events"', "not_an_array"),
        (b"null", "not_an_array"),
        (b"true", "not_an_array"),
    ],
)
def test_unusable_body_raises(payload: bytes, reason: str) -> None:
    """A body that is not JSON, or not an array or object, is refused as a whole."""
    with pytest.raises(DecodeError) as excinfo:
        decode(raw(payload))
    assert reason == excinfo.value.reason


def test_not_an_array_message_names_the_json_type() -> None:
    """The not_an_array message says what the body was."""
    with pytest.raises(DecodeError) as excinfo:
        decode(raw(b"42"))
    expected = "body must be a JSON array of events, got a number"
    assert expected == excinfo.value.message


def test_empty_array_decodes_to_nothing() -> None:
    """An empty bulk gives no events, no rejections and no unknown types."""
    assert Decoded() == decode(raw(b"[]"))


def test_single_object_is_a_bulk_of_one() -> None:
    """A bare JSON object is decoded as a bulk holding that one event."""
    decoded = decode(raw(orjson.dumps(element("car_ignition", value=True))))
    expected = [("car_ignition", {vss.LOW_VOLTAGE_SYSTEM_STATE: "ON"})]
    assert expected == [(event.type, dict(event.signals)) for event in decoded.events]


def test_decoder_is_registered() -> None:
    """The registry's `connectedcars-json` entry resolves to this decoder."""
    assert decode is get_decoder("connectedcars-json")
