from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from fleetstream.cli import main
from fleetstream.errors import DecodeError
from fleetstream.normalize import vss
from fleetstream.normalize.invers import decode
from fleetstream.normalize.model import RawMessage, VehicleEvent, VehicleRef
from fleetstream.normalize.registry import get_decoder

FIXTURES = Path(__file__).parent.parent / "fixtures" / "invers"
STATE_V2 = FIXTURES / "VehicleStateRecorded_v2.json"
STATE_V1 = FIXTURES / "VehicleStateRecorded_v1_fuel_level.json"
LOCK_CHANGED = FIXTURES / "CentralLockStatusChanged.json"
VEHICLE_CHANGED = FIXTURES / "VehicleChanged.json"
UNKNOWN_TYPE = FIXTURES / "unknown_type.json"

RECEIVED = datetime(2024, 6, 1, tzinfo=UTC)
AMQP_TIME = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
STAMP = "2024-03-14T09:00:00Z"
AT = datetime(2024, 3, 14, 9, 0, tzinfo=UTC)
LOCKED = [vss.door_is_locked(row, side) for row, side in vss.ALL_DOORS]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def raw(payload: bytes, **metadata: Any) -> RawMessage:
    return RawMessage(payload=payload, source="test", received_at=RECEIVED, metadata=metadata)


def decode_one(payload: bytes, **metadata: Any) -> VehicleEvent:
    """Decode a message that must give one event and no rejection."""
    decoded = decode(raw(payload, **metadata))
    assert [] == decoded.rejected
    (event,) = decoded.events
    return event


def fixture(path: Path) -> VehicleEvent:
    return decode_one(path.read_bytes())


def prop(value: Any, timestamp: str = STAMP) -> dict[str, Any]:
    return {"timestamp": timestamp, "value": value}


def message(
    data: Any = None, event_type: str = "VehicleStateRecorded", **metadata: Any
) -> dict[str, Any]:
    """A body with an id, a type, an occurred_at and `data`; `metadata` adds or overrides keys."""
    envelope = {
        "id": "01HQ7Z3K8V5M2T9XWJ4RBN6C1D",
        "type": event_type,
        "occurred_at": "2024-03-14T09:30:00Z",
        **metadata,
    }
    return {"metadata": {k: v for k, v in envelope.items() if v is not None}, "data": data}


def decode_data(data: Any, event_type: str = "VehicleStateRecorded") -> VehicleEvent:
    return decode_one(orjson.dumps(message(data, event_type)))


def mapped(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The signals and attributes of a VehicleStateRecorded with `data`."""
    event = decode_data(data)
    return dict(event.signals), dict(event.attributes)


def decode_error(payload: bytes, **metadata: Any) -> tuple[str, str]:
    with pytest.raises(DecodeError) as caught:
        decode(raw(payload, **metadata))
    return caught.value.reason, caught.value.message


def identity(event: VehicleEvent) -> dict[str, Any]:
    keys = ("event_id", "vendor", "source", "type", "kind", "vehicle", "occurred_at", "received_at")
    return {key: getattr(event, key) for key in keys}


# --- the fixtures ---------------------------------------------------------------------------------


def test_state_v2_signals_and_times() -> None:
    """Each mapped property of the v2 state is a signal in VSS units, timed by its own timestamp."""
    event = fixture(STATE_V2)
    lock_time = at("2024-03-14T09:41:27Z")
    expected = (
        {
            vss.TRAVELED_DISTANCE: 48213600.0,
            vss.LATITUDE: 50.93654,
            vss.LONGITUDE: 6.95722,
            vss.SOC_CURRENT: 72.0,
            vss.RANGE: 241000.0,
            **dict.fromkeys(LOCKED, True),
            vss.LOW_VOLTAGE_SYSTEM_STATE: "OFF",
        },
        {
            vss.TRAVELED_DISTANCE: at("2024-03-14T09:41:20Z"),
            vss.LATITUDE: at("2024-03-14T09:41:25Z"),
            vss.LONGITUDE: at("2024-03-14T09:41:25Z"),
            vss.SOC_CURRENT: at("2024-03-14T09:40:58Z"),
            vss.RANGE: at("2024-03-14T09:40:58Z"),
            **dict.fromkeys(LOCKED, lock_time),
            vss.LOW_VOLTAGE_SYSTEM_STATE: at("2024-03-14T09:39:02Z"),
        },
    )
    assert expected == (dict(event.signals), dict(event.signal_times))


def test_state_v2_attributes() -> None:
    """Ids, the powertrain hint and unmapped properties are kept under their data paths."""
    expected = {
        "vehicle_id": "KX7PN",
        "energy_type": "ELECTRIC",
        "vehicle_state.driving_enabled": prop(False, "2024-03-14T09:41:27Z"),
        "vehicle_state.cellular_signal_quality": prop(4, "2024-03-14T09:41:26Z"),
        "schema_major_version": 2,
        "flow_id": "5b0e2f7a-9c41-4d3e-8a6f-1e2d3c4b5a69",
    }
    assert expected == dict(fixture(STATE_V2).attributes)


def test_state_v2_identity_and_time() -> None:
    """The event id is the metadata ULID, the vehicle is data.vehicle_id, the time occurred_at."""
    expected = {
        "event_id": "invers:01HQ7Z3K8V5M2T9XWJ4RBN6C1D",
        "vendor": "invers",
        "source": "test",
        "type": "VehicleStateRecorded",
        "kind": "signal",
        "vehicle": VehicleRef(vendor_id="KX7PN"),
        "occurred_at": at("2024-03-14T09:41:27Z"),
        "received_at": RECEIVED,
    }
    assert expected == identity(fixture(STATE_V2))


def test_state_v1_fuel_level() -> None:
    """The older schema's top-level properties map, fuel_level_in_percent to the fuel level."""
    event = fixture(STATE_V1)
    measured = at("2022-04-05T16:01:47Z")
    located = at("2022-04-05T16:02:09Z")
    expected = (
        {
            vss.TRAVELED_DISTANCE: 112804000.0,
            vss.FUEL_RELATIVE_LEVEL: 38.5,
            vss.RANGE: 402000.0,
            vss.LATITUDE: 48.13743,
            vss.LONGITUDE: 11.57549,
            vss.LOW_VOLTAGE_SYSTEM_STATE: "ON",
        },
        {
            vss.TRAVELED_DISTANCE: measured,
            vss.FUEL_RELATIVE_LEVEL: measured,
            vss.RANGE: measured,
            vss.LATITUDE: located,
            vss.LONGITUDE: located,
            vss.LOW_VOLTAGE_SYSTEM_STATE: at("2022-04-05T16:02:11Z"),
        },
        {
            "vehicle_id": "B3RT9",
            "driving_enabled": prop(True, "2022-04-05T15:58:30Z"),
            "schema_major_version": 1,
            "flow_id": "e3c1a9d2-7b44-4f0e-9d18-6a2b5c8e0f37",
        },
    )
    assert expected == (dict(event.signals), dict(event.signal_times), dict(event.attributes))


def test_central_lock_status_changed() -> None:
    """An unlock event sets IsLocked false on every door, timed by the property."""
    event = fixture(LOCK_CHANGED)
    when = at("2024-03-14T10:05:12Z")
    expected = (
        "invers:01HQ80A2C7J5N8R4V6X9Z3M1TE",
        "CentralLockStatusChanged",
        "signal",
        VehicleRef(vendor_id="KX7PN"),
        dict.fromkeys(LOCKED, False),
        dict.fromkeys(LOCKED, when),
        {
            "vehicle_id": "KX7PN",
            "schema_major_version": 1,
            "flow_id": "0f6d4c2b-8a13-4e57-b9c0-2d7e1f3a5b84",
        },
    )
    actual = (
        event.event_id,
        event.type,
        event.kind,
        event.vehicle,
        dict(event.signals),
        dict(event.signal_times),
        dict(event.attributes),
    )
    assert expected == actual


def test_vehicle_changed_is_an_admin_event() -> None:
    """Master data is an admin event: data.id names the vehicle, the VIN is a signal too."""
    event = fixture(VEHICLE_CHANGED)
    vin = "WVWZZZE1ZNP045218"
    expected = (
        "admin",
        VehicleRef(vendor_id="KX7PN", vin=vin),
        {vss.VIN: vin},
        {},
        {
            "id": "KX7PN",
            "vin": vin,
            "license_plate": "K-FS 4711",
            "brand": "Volkswagen",
            "model": "ID.3",
            "energy_type": "ELECTRIC",
            "telematics_unit.brand": "CLOUDBOXX",
            "telematics_unit.telematics_unit_id": "CB-2207-0419",
            "custom_fields.cost_center": "ops-cologne",
            "schema_major_version": 1,
            "flow_id": "9a7c5e3b-1d2f-4a6b-8c0e-4f3a2b1c0d9e",
        },
    )
    actual = (
        event.kind,
        event.vehicle,
        dict(event.signals),
        dict(event.signal_times),
        dict(event.attributes),
    )
    assert expected == actual


def test_unknown_type_is_kept_with_its_data_as_attributes() -> None:
    """An unknown type is a signal event, counted, and maps none of its properties."""
    decoded = decode(raw(UNKNOWN_TYPE.read_bytes()))
    (event,) = decoded.events
    expected = (
        ["VehicleDamageReported"],
        [],
        "signal",
        VehicleRef(vendor_id="KX7PN"),
        {},
        {},
        {
            "vehicle_id": "KX7PN",
            "damage.area": "REAR_BUMPER",
            "damage.severity": "MINOR",
            "mileage_in_kilometers": prop(48240.1, "2024-03-14T12:14:55Z"),
            "schema_major_version": 1,
            "flow_id": "2c4e6a8b-0d1f-4b3a-9c5e-7f8a9b0c1d2e",
        },
    )
    actual = (
        decoded.unknown_types,
        decoded.rejected,
        event.kind,
        event.vehicle,
        dict(event.signals),
        dict(event.signal_times),
        dict(event.attributes),
    )
    assert expected == actual


@pytest.mark.parametrize("path", [STATE_V2, STATE_V1, LOCK_CHANGED, VEHICLE_CHANGED])
def test_known_types_are_not_counted_as_unknown(path: Path) -> None:
    """A known event type leaves unknown_types empty."""
    assert [] == decode(raw(path.read_bytes())).unknown_types


def test_registry_knows_invers() -> None:
    """The decoder is registered under the name `invers`."""
    assert get_decoder("invers") is decode


def test_cli_prints_signals_and_signal_times(capsys: pytest.CaptureFixture[str]) -> None:
    """`decode --decoder invers` prints the signals and each signal's own time."""
    code = main(["decode", "--decoder", "invers", str(STATE_V2)])
    captured = capsys.readouterr()
    (line,) = [orjson.loads(text) for text in captured.out.splitlines()]
    expected = (
        0,
        "",
        "invers:01HQ7Z3K8V5M2T9XWJ4RBN6C1D",
        {
            vss.TRAVELED_DISTANCE: 48213600.0,
            vss.LATITUDE: 50.93654,
            vss.LONGITUDE: 6.95722,
            vss.SOC_CURRENT: 72.0,
            vss.RANGE: 241000.0,
            **dict.fromkeys(LOCKED, True),
            vss.LOW_VOLTAGE_SYSTEM_STATE: "OFF",
        },
        {
            vss.TRAVELED_DISTANCE: "2024-03-14T09:41:20Z",
            vss.LATITUDE: "2024-03-14T09:41:25Z",
            vss.LONGITUDE: "2024-03-14T09:41:25Z",
            vss.SOC_CURRENT: "2024-03-14T09:40:58Z",
            vss.RANGE: "2024-03-14T09:40:58Z",
            **dict.fromkeys(LOCKED, "2024-03-14T09:41:27Z"),
            vss.LOW_VOLTAGE_SYSTEM_STATE: "2024-03-14T09:39:02Z",
        },
    )
    actual = (code, captured.err, line["event_id"], line["signals"], line["signal_times"])
    assert expected == actual


def test_cli_leaves_out_empty_signal_times(capsys: pytest.CaptureFixture[str]) -> None:
    """An event without per-signal times prints no signal_times key."""
    code = main(["decode", "--decoder", "invers", str(VEHICLE_CHANGED)])
    captured = capsys.readouterr()
    (line,) = [orjson.loads(text) for text in captured.out.splitlines()]
    expected = (
        0,
        [
            "event_id",
            "vendor",
            "type",
            "kind",
            "vehicle",
            "occurred_at",
            "signals",
            "attributes",
        ],
    )
    assert expected == (code, list(line))


# --- identity, type and time from the body or the AMQP properties ---------------------------------


def test_amqp_properties_stand_in_for_missing_metadata() -> None:
    """Without metadata the AMQP message_id, type, timestamp, header and correlation_id are used."""
    body = orjson.dumps({"data": {"vehicle_id": "KX7PN"}})
    event = decode_one(
        body,
        message_id="01HQAMQP0000000000000000MS",
        type="CentralLockStatusChanged",
        timestamp=AMQP_TIME,
        correlation_id="flow-from-amqp",
        headers={"schema_major_version": 1},
        queue="invers.vehicle-events",
        routing_key="",
        redelivered=False,
    )
    expected = (
        "invers:01HQAMQP0000000000000000MS",
        "CentralLockStatusChanged",
        AMQP_TIME,
        {"vehicle_id": "KX7PN", "schema_major_version": 1, "flow_id": "flow-from-amqp"},
    )
    assert expected == (event.event_id, event.type, event.occurred_at, dict(event.attributes))


def test_metadata_wins_over_amqp_properties() -> None:
    """When both carry a value, the body's metadata is used."""
    body = orjson.dumps(message({}, schema_major_version=2, flow_id="flow-from-body"))
    event = decode_one(
        body,
        message_id="other",
        type="VehicleChanged",
        timestamp=AMQP_TIME,
        correlation_id="flow-from-amqp",
        headers={"schema_major_version": 9},
    )
    expected = (
        "invers:01HQ7Z3K8V5M2T9XWJ4RBN6C1D",
        "VehicleStateRecorded",
        at("2024-03-14T09:30:00Z"),
        {"schema_major_version": 2, "flow_id": "flow-from-body"},
    )
    assert expected == (event.event_id, event.type, event.occurred_at, dict(event.attributes))


def test_without_any_time_received_at_is_used_and_said() -> None:
    """No occurred_at and no AMQP timestamp: occurred_at is received_at and time_source says so."""
    event = decode_one(orjson.dumps(message({}, occurred_at=None)))
    expected = (RECEIVED, {"time_source": "received_at"})
    assert expected == (event.occurred_at, dict(event.attributes))


def test_amqp_timestamp_is_normalised_to_utc() -> None:
    """An offset or naive AMQP timestamp becomes the same instant in UTC."""
    body = orjson.dumps(message({}, occurred_at=None))
    berlin = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    naive = datetime(2024, 5, 1, 12, 0)
    events = [decode_one(body, timestamp=stamp) for stamp in (berlin, naive)]
    actual = [
        (e.occurred_at.tzinfo, e.to_dict()["occurred_at"], dict(e.attributes)) for e in events
    ]
    assert [(UTC, "2024-05-01T12:00:00Z", {})] * 2 == actual


def test_occurred_at_with_offset_is_normalised_to_utc() -> None:
    """metadata.occurred_at with an offset is the same instant in UTC."""
    event = decode_one(orjson.dumps(message({}, occurred_at="2024-03-14T11:30:00+02:00")))
    assert "2024-03-14T09:30:00Z" == event.to_dict()["occurred_at"]


def test_unparseable_occurred_at_falls_back_and_is_listed() -> None:
    """A bad occurred_at is kept as an attribute, listed, and the AMQP timestamp is used."""
    event = decode_one(orjson.dumps(message({}, occurred_at="yesterday")), timestamp=AMQP_TIME)
    expected = (
        AMQP_TIME,
        {"metadata.occurred_at": "yesterday", "unparsed_fields": ["metadata.occurred_at"]},
    )
    assert expected == (event.occurred_at, dict(event.attributes))


def test_a_timestamp_that_is_not_a_datetime_is_not_used() -> None:
    """An AMQP timestamp of the wrong type falls back to received_at like a missing one."""
    event = decode_one(orjson.dumps(message({}, occurred_at=None)), timestamp="2024-05-01")
    assert (RECEIVED, {"time_source": "received_at"}) == (event.occurred_at, dict(event.attributes))


def test_extra_metadata_and_top_level_keys_are_kept() -> None:
    """Other metadata keys are kept as `metadata.<key>`, other top-level keys under their name."""
    body = message({}, tenant="fleet-7")
    body["trace"] = {"hop": 2}
    event = decode_one(orjson.dumps(body))
    assert {"metadata.tenant": "fleet-7", "trace": {"hop": 2}} == dict(event.attributes)


def test_added_keys_never_replace_a_data_field() -> None:
    """A data field named like a key the decoder adds keeps its value."""
    event = decode_one(orjson.dumps(message({"flow_id": "from-data"}, flow_id="from-metadata")))
    assert {"flow_id": "from-data"} == dict(event.attributes)


@pytest.mark.parametrize(
    ("metadata", "transport"),
    [
        ({"type": "VehicleStateRecorded"}, {}),
        ({"id": "", "type": "VehicleStateRecorded"}, {"message_id": ""}),
        ({"id": None, "type": "VehicleStateRecorded"}, {}),
    ],
)
def test_missing_id_rejects_the_message(
    metadata: dict[str, Any], transport: dict[str, Any]
) -> None:
    """Without metadata.id or an AMQP message_id the message is refused with missing_field."""
    reason, text = decode_error(orjson.dumps({"metadata": metadata, "data": {}}), **transport)
    assert ("missing_field", True) == (reason, "metadata.id" in text)


def test_missing_type_rejects_the_message() -> None:
    """Without metadata.type or an AMQP type the message is refused with missing_field."""
    reason, text = decode_error(orjson.dumps({"metadata": {"id": "x"}, "data": {}}))
    assert ("missing_field", True) == (reason, "metadata.type" in text)


@pytest.mark.parametrize("metadata", [{"id": 7, "type": "T"}, {"id": "x", "type": ["T"]}])
def test_non_string_id_or_type_is_invalid(metadata: dict[str, Any]) -> None:
    """An id or type that is not a string is refused as invalid_field."""
    body = orjson.dumps({"metadata": metadata, "data": {}})
    assert "invalid_field" == decode_error(body, message_id="m", type="T")[0]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b"42", "not_an_object"),
        (b"null", "not_an_object"),
        (b'{"metadata": [], "data": {}}', "invalid_field"),
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
    ],
)
def test_body_that_is_not_an_event_object_is_refused(payload: bytes, reason: str) -> None:
    """A body that is not a JSON object with an object metadata is refused with a stable reason."""
    assert reason == decode_error(payload, message_id="m", type="T")[0]


def test_trailing_comma_is_tolerated() -> None:
    """The lenient parser accepts a trailing comma."""
    payload = b'{"metadata": {"id": "a", "type": "VehicleChanged",}, "data": {"id": "KX7PN",},}'
    assert "invers:a" == decode_one(payload).event_id


def test_data_that_is_not_an_object_is_kept_and_listed() -> None:
    """A non-object data is kept whole as the attribute `data` and listed, not refused."""
    event = decode_data([1, 2])
    expected = {"data": [1, 2], "unparsed_fields": ["data"]}
    assert expected == dict(event.attributes)


# --- vehicle identity -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "vehicle"),
    [
        ({"vehicle_id": "KX7PN", "vin": "VIN1"}, VehicleRef(vendor_id="KX7PN", vin="VIN1")),
        ({"vehicle": {"id": "KX7PN", "vin": "VIN2"}}, VehicleRef(vendor_id="KX7PN", vin="VIN2")),
        ({"vehicle_id": 4711}, VehicleRef(vendor_id="4711")),
        ({"vehicle_id": "A", "vehicle": {"id": "B"}}, VehicleRef(vendor_id="A")),
        ({"id": "KX7PN"}, VehicleRef()),
        ({"vin": "   "}, VehicleRef()),
        ({}, VehicleRef()),
    ],
)
def test_vehicle_of_a_state_event(data: dict[str, Any], vehicle: VehicleRef) -> None:
    """vehicle_id or vehicle.id names the vehicle; a bare data.id does not outside master data."""
    assert vehicle == decode_data(data).vehicle


def test_vehicle_id_of_the_wrong_type_is_kept_and_listed() -> None:
    """A vehicle_id that is neither string nor integer names no vehicle, is kept and listed."""
    event = decode_data({"vehicle_id": True})
    expected = (VehicleRef(), {"vehicle_id": True, "unparsed_fields": ["vehicle_id"]})
    assert expected == (event.vehicle, dict(event.attributes))


def test_master_data_prefers_vehicle_id_over_data_id() -> None:
    """In a VehicleChanged, data.vehicle_id wins over data.id."""
    event = decode_data({"id": "OTHER", "vehicle_id": "KX7PN"}, "VehicleChanged")
    assert VehicleRef(vendor_id="KX7PN") == event.vehicle


# --- property discovery ---------------------------------------------------------------------------


def test_properties_are_found_at_any_depth() -> None:
    """Properties directly in data, one level down and three levels down are all mapped."""
    data = {
        "mileage_in_kilometers": prop(10),
        "state": {"remaining_range_in_kilometers": prop(20)},
        "a": {"b": {"c": {"ignition": prop("on")}}, "note": "x"},
    }
    expected = (
        {vss.TRAVELED_DISTANCE: 10000.0, vss.RANGE: 20000.0, vss.LOW_VOLTAGE_SYSTEM_STATE: "ON"},
        {"a.note": "x"},
    )
    assert expected == mapped(data)


def test_properties_inside_lists_are_not_searched() -> None:
    """A list is kept whole as one attribute; properties inside it are not mapped."""
    data = {"history": [{"mileage_in_kilometers": prop(10)}]}
    assert ({}, data) == mapped(data)


def test_empty_object_is_kept_as_it_came() -> None:
    """An empty object in data is an attribute, not dropped."""
    assert ({}, {"vehicle_state": {}}) == mapped({"vehicle_state": {}})


def test_property_with_extra_keys_is_mapped_and_also_kept() -> None:
    """A mapped property with keys beyond timestamp and value is also kept whole."""
    mileage = {**prop(10), "source": "CAN"}
    expected = ({vss.TRAVELED_DISTANCE: 10000.0}, {"mileage_in_kilometers": mileage})
    assert expected == mapped({"mileage_in_kilometers": mileage})


def test_position_with_extra_value_keys_is_mapped_and_also_kept() -> None:
    """A position carrying more than lat and lon maps them and is kept whole as well."""
    position = prop({"lat": 1.5, "lon": 2.5, "accuracy_in_meters": 8})
    expected = ({vss.LATITUDE: 1.5, vss.LONGITUDE: 2.5}, {"position": position})
    assert expected == mapped({"position": position})


def test_object_with_timestamp_value_and_other_keys_but_bad_time_is_plain_data() -> None:
    """An object that is not a property (its timestamp does not parse) is walked like any other."""
    data = {"trip": {"timestamp": "n/a", "value": 3, "mileage_in_kilometers": prop(7)}}
    expected = (
        {vss.TRAVELED_DISTANCE: 7000.0},
        {"trip.timestamp": "n/a", "trip.value": 3},
    )
    assert expected == mapped(data)


@pytest.mark.parametrize("timestamp", ["soon", None, 1710406800])
def test_two_key_property_with_a_bad_timestamp_is_kept_and_listed(timestamp: Any) -> None:
    """A timestamp/value pair whose timestamp does not parse maps nothing, is kept and listed."""
    mileage = {"timestamp": timestamp, "value": 10}
    expected = (
        {},
        {
            "state.mileage_in_kilometers": mileage,
            "unparsed_fields": ["state.mileage_in_kilometers"],
        },
    )
    assert expected == mapped({"state": {"mileage_in_kilometers": mileage}})


def test_null_value_maps_nothing_and_is_kept() -> None:
    """A property whose value is null is an attribute, not a signal, and is not listed."""
    assert ({}, {"ignition": prop(None)}) == mapped({"ignition": prop(None)})


def test_latest_property_wins_a_signal() -> None:
    """Two properties for the same signal: the later timestamp wins, the other stays attribute."""
    data = {
        "fuel_level_in_percent": prop(40, "2024-03-14T09:05:00Z"),
        "energy_type": "DIESEL",
        "state": {
            "state_of_charge_or_fuel_level_in_percent": prop(41, "2024-03-14T09:00:00Z"),
            "mileage_in_kilometers": prop(2, "2024-03-14T08:00:00Z"),
        },
        "mileage_in_kilometers": prop(1, "2024-03-14T07:00:00Z"),
    }
    event = decode_data(data)
    expected = (
        {vss.FUEL_RELATIVE_LEVEL: 40.0, vss.TRAVELED_DISTANCE: 2000.0},
        {
            vss.FUEL_RELATIVE_LEVEL: at("2024-03-14T09:05:00Z"),
            vss.TRAVELED_DISTANCE: at("2024-03-14T08:00:00Z"),
        },
        {
            "energy_type": "DIESEL",
            "state.state_of_charge_or_fuel_level_in_percent": data["state"][
                "state_of_charge_or_fuel_level_in_percent"
            ],
            "mileage_in_kilometers": data["mileage_in_kilometers"],
        },
    )
    assert expected == (dict(event.signals), dict(event.signal_times), dict(event.attributes))


def test_equal_timestamps_let_the_later_property_in_the_document_win() -> None:
    """On a timestamp tie the property later in the document sets the signal."""
    data = {"mileage_in_kilometers": prop(1), "state": {"mileage_in_kilometers": prop(2)}}
    expected = ({vss.TRAVELED_DISTANCE: 2000.0}, {"mileage_in_kilometers": prop(1)})
    assert expected == mapped(data)


def test_property_timestamp_with_offset_is_utc() -> None:
    """A property timestamp with an offset becomes the same instant in UTC."""
    event = decode_data({"ignition": prop("OFF", "2024-03-14T11:00:00+02:00")})
    assert {vss.LOW_VOLTAGE_SYSTEM_STATE: AT} == dict(event.signal_times)


def test_deeply_nested_data_does_not_exhaust_the_stack() -> None:
    """Data nested a thousand objects deep decodes without exhausting the stack."""
    depth = 1000
    data = b'{"n":' * depth + orjson.dumps({"ignition": prop("ON")}) + b"}" * depth
    payload = b'{"metadata": {"id": "a", "type": "VehicleStateRecorded"}, "data": %b}' % data
    assert {vss.LOW_VOLTAGE_SYSTEM_STATE: "ON"} == dict(decode_one(payload).signals)


# --- state of charge or fuel level ----------------------------------------------------------------

SOC_OR_FUEL = "state_of_charge_or_fuel_level_in_percent"


@pytest.mark.parametrize(
    ("hint", "signal"),
    [
        ({"energy_type": "ELECTRIC"}, vss.SOC_CURRENT),
        ({"drive_type": "bev"}, vss.SOC_CURRENT),
        ({"vehicle": {"propulsion_type": "Battery-Electric"}}, vss.SOC_CURRENT),
        ({"powertrain_type": prop("EV")}, vss.SOC_CURRENT),
        ({"fuel_type": "Diesel"}, vss.FUEL_RELATIVE_LEVEL),
        ({"energy_type": "COMBUSTION"}, vss.FUEL_RELATIVE_LEVEL),
        ({"drive_type": "petrol", "energy_type": "ice"}, vss.FUEL_RELATIVE_LEVEL),
    ],
)
def test_soc_or_fuel_level_follows_the_powertrain(hint: dict[str, Any], signal: str) -> None:
    """The combined percentage is the state of charge when electric, the fuel level otherwise."""
    event = decode_data({**hint, SOC_OR_FUEL: prop(64)})
    assert ({signal: 64.0}, {signal: AT}) == (dict(event.signals), dict(event.signal_times))


@pytest.mark.parametrize(
    "hint",
    [
        {},
        {"energy_type": "HYBRID"},
        {"energy_type": "PHEV"},
        {"energy_type": "ELECTRIC", "fuel_type": "PETROL"},
        {"energy_type": "ELECTRIC", "drive_type": "UNKNOWN"},
        {"energy_type": 1},
    ],
)
def test_soc_or_fuel_level_without_a_clear_powertrain_stays_attribute(
    hint: dict[str, Any],
) -> None:
    """No, unknown or conflicting powertrain hints leave the percentage an unlisted attribute."""
    assert ({}, {**hint, SOC_OR_FUEL: prop(64)}) == mapped({**hint, SOC_OR_FUEL: prop(64)})


# --- lock and ignition ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "locked"),
    [
        ("LOCKED", True),
        ("UNLOCKED", False),
        ("locked", True),
        (" Unlocked ", False),
        (True, True),
        (False, False),
    ],
)
def test_central_lock_forms(value: Any, locked: bool) -> None:
    """Lock words in any case and booleans set IsLocked on every door."""
    assert (dict.fromkeys(LOCKED, locked), {}) == mapped({"central_lock": prop(value)})


@pytest.mark.parametrize(
    ("value", "state"),
    [("ON", "ON"), ("off", "OFF"), ("On", "ON"), (True, "ON"), (False, "OFF")],
)
def test_ignition_forms(value: Any, state: str) -> None:
    """Ignition words in any case and booleans give LowVoltageSystemState ON or OFF."""
    assert ({vss.LOW_VOLTAGE_SYSTEM_STATE: state}, {}) == mapped({"ignition": prop(value)})


# --- values that do not parse ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("mileage_in_kilometers", "abc"),
        ("mileage_in_kilometers", "123"),
        ("mileage_in_kilometers", True),
        ("remaining_range_in_kilometers", [100]),
        ("fuel_level_in_percent", {"value": 3}),
        ("position", {"lat": 91.0, "lon": 8.0}),
        ("position", {"lat": 50.0, "lon": -180.5}),
        ("position", {"lat": 50.0}),
        ("position", {"lat": "50.0", "lon": "8.0"}),
        ("position", [50.0, 8.0]),
        ("central_lock", "PARTIALLY_LOCKED"),
        ("central_lock", 1),
        ("ignition", "ACC"),
        ("ignition", "true"),
    ],
)
def test_bad_value_is_kept_and_listed(name: str, value: Any) -> None:
    """A mapped property whose value does not convert is kept under its path and listed."""
    data = {"vehicle_state": {name: prop(value)}, "remaining_range_in_kilometers": prop(5)}
    path = f"vehicle_state.{name}"
    expected = ({vss.RANGE: 5000.0}, {path: prop(value), "unparsed_fields": [path]})
    assert expected == mapped(data)


def test_electric_soc_of_the_wrong_type_is_listed() -> None:
    """With a known powertrain, a non-numeric percentage is kept and listed."""
    data = {"energy_type": "ELECTRIC", SOC_OR_FUEL: prop("full")}
    expected = ({}, {**data, "unparsed_fields": [SOC_OR_FUEL]})
    assert expected == mapped(data)


def test_unparsed_fields_are_sorted() -> None:
    """Several unreadable properties are listed in sorted order."""
    data = {"z": {"ignition": prop("ACC")}, "a": {"central_lock": prop("AJAR")}}
    assert ["a.central_lock", "z.ignition"] == mapped(data)[1]["unparsed_fields"]


def test_scaled_conversions_are_exact() -> None:
    """km become m by exact decimal multiplication."""
    data = {"mileage_in_kilometers": prop(0.1001), "remaining_range_in_kilometers": prop(276.1234)}
    assert ({vss.TRAVELED_DISTANCE: 100.1, vss.RANGE: 276123.4}, {}) == mapped(data)
