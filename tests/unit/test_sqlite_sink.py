"""Unit tests for the SQLite sink against a real database file."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from fleetstream.config.model import SqliteSinkConfig
from fleetstream.errors import RetryableSinkError
from fleetstream.normalize import vss
from fleetstream.normalize.model import EventKind, VehicleEvent, VehicleRef
from fleetstream.sinks.base import QuarantineRecord
from fleetstream.sinks.sqlite import SqliteSink

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
RECEIVED = datetime(2024, 5, 2, 8, 0, 0, tzinfo=UTC)
ORG = "org1"
CC_VEHICLE = VehicleRef(vendor_id="1337", organization=ORG)
CC_KEY = "connectedcars:org1:1337"
CSV_VEHICLE = VehicleRef(vendor_id="car1")
CSV_KEY = "carstatsviewer::car1"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    """The text form the sink stores for `at(seconds)`."""
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(
    event_id: str,
    seconds: float,
    *,
    type: str = "gps_position",
    kind: EventKind = "signal",
    vendor: str = "connectedcars",
    vehicle: VehicleRef = CC_VEHICLE,
    signals: dict[str, Any] | None = None,
    attributes: dict[str, Any] | None = None,
    signal_times: dict[str, datetime] | None = None,
    version: str | None = None,
) -> VehicleEvent:
    return VehicleEvent(
        event_id=event_id,
        vendor=vendor,
        source="test",
        type=type,
        kind=kind,
        vehicle=vehicle,
        occurred_at=at(seconds),
        received_at=RECEIVED,
        signals=signals or {},
        attributes=attributes or {},
        signal_times=signal_times or {},
        version=version,
    )


def admin(type: str, seconds: float, vehicle: VehicleRef) -> VehicleEvent:
    return event(f"{type}@{seconds}", seconds, type=type, kind="admin", vehicle=vehicle)


def dtc(diff: str, code: str, seconds: float, ecu: str = "engine") -> VehicleEvent:
    return event(
        f"dtc-{diff}-{code}-{seconds}",
        seconds,
        type="can_dtc",
        attributes={"code": code, "diff": diff, "status": "68", "ecu": ecu},
    )


def session(
    seconds: float, energy_kwh: float, version: str, points: list[dict[str, Any]] | None = None
) -> VehicleEvent:
    return event(
        "carstatsviewer:car1:charging_session:9",
        seconds,
        type="charging_session",
        kind="entity",
        vendor="carstatsviewer",
        vehicle=CSV_VEHICLE,
        signals={vss.LATITUDE: 55.5, vss.LONGITUDE: 12.25},
        attributes={
            "session_id": 9,
            "start_time": "2024-05-01T11:00:00Z",
            "end_time": None,
            "charge_duration_secs": 60.0,
            "charged_energy_kwh": energy_kwh,
            "charged_soc_percent": 2.0,
            "outside_temperature_celsius": 12.5,
            "charging_points": points or [],
        },
        version=version,
    )


def quarantined(raw: bytes, seconds: float, source: str = "cc") -> QuarantineRecord:
    return QuarantineRecord(
        source=source,
        decoder="connectedcars-json",
        reason="invalid_json",
        error="body is not valid JSON",
        raw=raw,
        received_at=at(seconds),
        metadata={"path": "/webhooks/cc"},
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "fleetstream.db"


@pytest.fixture
async def sink(db_path: Path) -> AsyncIterator[SqliteSink]:
    sink = SqliteSink(SqliteSinkConfig(type="sqlite", path=db_path, busy_timeout_secs=0.1))
    await sink.start()
    yield sink
    await sink.close()


@pytest.fixture
def db(db_path: Path, sink: SqliteSink) -> Iterator[sqlite3.Connection]:
    """A second, independent connection to the sink's file for checking what it committed."""
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        yield conn


def rows(conn: sqlite3.Connection, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return conn.execute(sql, params).fetchall()


def latest(conn: sqlite3.Connection, vehicle_key: str = CC_KEY) -> dict[str, tuple[Any, str]]:
    """latest_signals of one vehicle as {path: (decoded value, observed_at)}."""
    found = rows(
        conn,
        "SELECT path, value, observed_at FROM latest_signals WHERE vehicle_key = ?",
        vehicle_key,
    )
    return {path: (orjson.loads(value), observed) for path, value, observed in found}


def gps(event_id: str, seconds: float, speed: float) -> VehicleEvent:
    return event(event_id, seconds, signals={vss.SPEED: speed})


# Durability settings -----------------------------------------------------------------------


async def test_journal_mode_is_wal(db: sqlite3.Connection) -> None:
    """The database file is in WAL journal mode."""
    expected = [("wal",)]
    assert expected == rows(db, "PRAGMA journal_mode")


async def test_sink_connection_is_synchronous_full(sink: SqliteSink) -> None:
    """The sink's own connection runs with `synchronous=FULL` (2)."""
    conn = sink._conn
    assert conn is not None
    result = await sink._run(lambda: conn.execute("PRAGMA synchronous").fetchone())
    expected = (2,)
    assert expected == result


async def test_directory_is_created_and_schema_version_recorded(
    sink: SqliteSink, db: sqlite3.Connection
) -> None:
    """`start` creates the missing directory and records schema version 1 once."""
    expected = [(1,)]
    assert expected == rows(db, "SELECT version FROM schema_version")


# Events and latest signals -----------------------------------------------------------------


async def test_same_event_twice_is_one_row(sink: SqliteSink, db: sqlite3.Connection) -> None:
    """Writing the same event in two batches, and twice in one batch, leaves one row."""
    first = gps("e1", 0, 50.0)
    await sink.write([first], [])
    await sink.write([first, first], [])
    expected = [
        (
            "e1",
            "connectedcars",
            "test",
            "gps_position",
            "signal",
            CC_KEY,
            "1337",
            None,
            None,
            ORG,
            stamp(0),
            "2024-05-02T08:00:00.000000Z",
            None,
            '{"Vehicle.Speed":50.0}',
            "{}",
            None,
        )
    ]
    assert expected == rows(db, "SELECT * FROM events")


async def test_latest_signal_keeps_newer_value(sink: SqliteSink, db: sqlite3.Connection) -> None:
    """An older event arriving after a newer one does not overwrite the newer value."""
    await sink.write([gps("new", 20, 80.0)], [])
    await sink.write([gps("old", 10, 30.0)], [])
    await sink.write([gps("newest", 30, 90.0)], [])
    expected = {vss.SPEED: (90.0, stamp(30))}
    assert expected == latest(db)


async def test_latest_signal_order_within_one_batch(
    sink: SqliteSink, db: sqlite3.Connection
) -> None:
    """Within one batch the newest observation wins regardless of its position."""
    await sink.write([gps("new", 20, 80.0), gps("old", 10, 30.0)], [])
    expected = {vss.SPEED: (80.0, stamp(20))}
    assert expected == latest(db)


async def test_latest_signal_honours_signal_times(sink: SqliteSink, db: sqlite3.Connection) -> None:
    """A per-signal time decides recency for that signal instead of `occurred_at`."""
    stale_odometer = event(
        "late-event",
        100,
        signals={vss.SPEED: 10.0, "Vehicle.TraveledDistance": 1000.0},
        signal_times={"Vehicle.TraveledDistance": at(5)},
    )
    await sink.write([gps("speed", 50, 60.0)], [])
    await sink.write([event("odo", 50, signals={"Vehicle.TraveledDistance": 2000.0})], [])
    await sink.write([stale_odometer], [])
    expected = {
        vss.SPEED: (10.0, stamp(100)),
        "Vehicle.TraveledDistance": (2000.0, stamp(50)),
    }
    assert expected == latest(db)


async def test_signal_times_stored_with_event(sink: SqliteSink, db: sqlite3.Connection) -> None:
    """The per-signal times of an event are stored as JSON in the events row."""
    await sink.write(
        [event("e", 10, signals={vss.SPEED: 1.0}, signal_times={vss.SPEED: at(4)})], []
    )
    expected = [(f'{{"{vss.SPEED}":"{stamp(4)}"}}',)]
    assert expected == rows(db, "SELECT signal_times FROM events")


async def test_vehicles_table_filled(sink: SqliteSink, db: sqlite3.Connection) -> None:
    """The vehicles table holds vin, organization and first/last event times."""
    vin_vehicle = VehicleRef(vendor_id="1337", vin="ZAR94000007021883", organization=ORG)
    await sink.write([gps("a", 10, 1.0)], [])
    await sink.write([event("b", 30, type="can_vin", vehicle=vin_vehicle)], [])
    await sink.write([gps("c", 20, 2.0)], [])
    expected = [
        (
            CC_KEY,
            "connectedcars",
            "1337",
            "ZAR94000007021883",
            ORG,
            None,
            None,
            None,
            None,
            stamp(10),
            stamp(30),
        )
    ]
    assert expected == rows(db, "SELECT * FROM vehicles")


async def test_vehicle_first_seen_moves_back_for_older_event(
    sink: SqliteSink, db: sqlite3.Connection
) -> None:
    """An older event arriving later moves first_seen_at back to its time."""
    await sink.write([gps("new", 20, 1.0)], [])
    await sink.write([gps("old", 10, 2.0)], [])
    expected = [(stamp(10), stamp(20))]
    assert expected == rows(db, "SELECT first_seen_at, last_event_at FROM vehicles")


# Admin events ------------------------------------------------------------------------------


async def test_vehicle_access_grant_then_revoke(sink: SqliteSink, db: sqlite3.Connection) -> None:
    """A grant followed by a removal leaves the vehicle `revoked`."""
    await sink.write([admin("access_granted_to_vehicle", 10, CC_VEHICLE)], [])
    await sink.write([admin("access_removed_from_vehicle", 20, CC_VEHICLE)], [])
    expected = [(CC_KEY, "revoked", stamp(20))]
    assert expected == rows(db, "SELECT vehicle_key, access_state, access_changed_at FROM vehicles")


async def test_vehicle_access_older_grant_does_not_undo_revoke(
    sink: SqliteSink, db: sqlite3.Connection
) -> None:
    """An older grant arriving after a newer revocation leaves the vehicle `revoked`."""
    await sink.write([admin("access_removed_from_vehicle", 20, CC_VEHICLE)], [])
    await sink.write([admin("access_granted_to_vehicle", 10, CC_VEHICLE)], [])
    expected = [(CC_KEY, "revoked", stamp(20))]
    assert expected == rows(db, "SELECT vehicle_key, access_state, access_changed_at FROM vehicles")


async def test_vehicle_access_granted(sink: SqliteSink, db: sqlite3.Connection) -> None:
    """A grant alone marks the vehicle `granted`."""
    await sink.write([admin("access_granted_to_vehicle", 10, CC_VEHICLE)], [])
    expected = [("granted", stamp(10))]
    assert expected == rows(db, "SELECT access_state, access_changed_at FROM vehicles")


async def test_fleet_grant_and_revoke(sink: SqliteSink, db: sqlite3.Connection) -> None:
    """Fleet grants and removals land in `fleets`, newest wins, and no vehicle row appears."""
    fleet = VehicleRef(fleet_id="47583", organization=ORG)
    await sink.write([admin("access_granted_to_fleet", 10, fleet)], [])
    granted = rows(db, "SELECT * FROM fleets")
    await sink.write([admin("access_removed_from_fleet", 30, fleet)], [])
    await sink.write([admin("access_granted_to_fleet", 20, fleet)], [])
    revoked = rows(db, "SELECT * FROM fleets")
    expected = (
        [("connectedcars:org1:47583", "connectedcars", ORG, "47583", "granted", stamp(10))],
        [("connectedcars:org1:47583", "connectedcars", ORG, "47583", "revoked", stamp(30))],
        [],
    )
    assert expected == (granted, revoked, rows(db, "SELECT * FROM vehicles"))


async def test_vehicle_added_to_and_removed_from_fleet(
    sink: SqliteSink, db: sqlite3.Connection
) -> None:
    """Joining a fleet sets the vehicle's fleet_id; leaving it clears it."""
    member = VehicleRef(vendor_id="1337", fleet_id="47583", organization=ORG)
    await sink.write([gps("g", 5, 1.0)], [])
    await sink.write([admin("vehicle_added_to_fleet", 10, member)], [])
    joined = rows(db, "SELECT fleet_id, fleet_changed_at FROM vehicles")
    await sink.write([admin("vehicle_removed_from_fleet", 20, member)], [])
    left = rows(db, "SELECT fleet_id, fleet_changed_at FROM vehicles")
    expected = ([("47583", stamp(10))], [(None, stamp(20))])
    assert expected == (joined, left)


async def test_vehicle_moves_between_fleets(sink: SqliteSink, db: sqlite3.Connection) -> None:
    """Leaving the old fleet after joining a new one keeps the new fleet."""
    old = VehicleRef(vendor_id="1337", fleet_id="1", organization=ORG)
    new = VehicleRef(vendor_id="1337", fleet_id="2", organization=ORG)
    await sink.write([admin("vehicle_added_to_fleet", 10, old)], [])
    await sink.write([admin("vehicle_added_to_fleet", 20, new)], [])
    await sink.write([admin("vehicle_removed_from_fleet", 30, old)], [])
    expected = [("2", stamp(20))]
    assert expected == rows(db, "SELECT fleet_id, fleet_changed_at FROM vehicles")


async def test_older_fleet_join_does_not_undo_newer_leave(
    sink: SqliteSink, db: sqlite3.Connection
) -> None:
    """An older vehicle_added_to_fleet arriving after a newer removal leaves no membership."""
    member = VehicleRef(vendor_id="1337", fleet_id="47583", organization=ORG)
    await sink.write([admin("vehicle_added_to_fleet", 10, member)], [])
    await sink.write([admin("vehicle_removed_from_fleet", 20, member)], [])
    await sink.write([admin("vehicle_added_to_fleet", 10, member)], [])
    await sink.write([admin("vehicle_added_to_fleet", 5, member)], [])
    expected = [(None, stamp(20))]
    assert expected == rows(db, "SELECT fleet_id, fleet_changed_at FROM vehicles")


# Trouble codes -----------------------------------------------------------------------------


async def test_dtc_add_change_remove(sink: SqliteSink, db: sqlite3.Connection) -> None:
    """DTC diffs update active_dtcs and the DTCList latest signal."""
    await sink.write([dtc("add", "p0300", 10), dtc("add", "U0100", 11, ecu="abs")], [])
    after_add = (
        rows(db, "SELECT ecu, code, status, active, changed_at FROM active_dtcs ORDER BY code"),
        latest(db),
    )
    await sink.write([dtc("change", "P0300", 20)], [])
    await sink.write([dtc("remove", "U0100", 30, ecu="abs")], [])
    after_remove = (
        rows(db, "SELECT ecu, code, status, active, changed_at FROM active_dtcs ORDER BY code"),
        latest(db),
    )
    expected = (
        (
            [("engine", "P0300", "68", 1, stamp(10)), ("abs", "U0100", "68", 1, stamp(11))],
            {vss.DTC_LIST: (["P0300", "U0100"], stamp(11))},
        ),
        (
            [("engine", "P0300", "68", 1, stamp(20)), ("abs", "U0100", "68", 0, stamp(30))],
            {vss.DTC_LIST: (["P0300"], stamp(30))},
        ),
    )
    assert expected == (after_add, after_remove)


async def test_dtc_diffs_applied_in_time_order_within_batch(
    sink: SqliteSink, db: sqlite3.Connection
) -> None:
    """A batch holding a newer remove before an older add ends with the code inactive."""
    await sink.write([dtc("remove", "P0300", 20), dtc("add", "P0300", 10)], [])
    expected = (
        [("P0300", 0, stamp(20))],
        {vss.DTC_LIST: ([], stamp(20))},
    )
    assert expected == (rows(db, "SELECT code, active, changed_at FROM active_dtcs"), latest(db))


async def test_dtc_older_add_after_remove_does_not_resurrect(
    sink: SqliteSink, db: sqlite3.Connection
) -> None:
    """An older `add` arriving after a newer `remove` leaves the code inactive."""
    await sink.write([dtc("add", "P0300", 10)], [])
    await sink.write([dtc("remove", "P0300", 30)], [])
    await sink.write([dtc("add", "P0300", 20)], [])
    expected = (
        [("P0300", 0, stamp(30))],
        {vss.DTC_LIST: ([], stamp(30))},
    )
    assert expected == (rows(db, "SELECT code, active, changed_at FROM active_dtcs"), latest(db))


# Charging sessions (entities) ----------------------------------------------------------------


def session_row(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return rows(
        db,
        "SELECT vehicle_key, session_id, event_id, version, start_time, end_time,"
        " charge_duration_secs, charged_energy_kwh, charged_soc_percent,"
        " outside_temperature_celsius, latitude, longitude, charging_points, occurred_at"
        " FROM charging_sessions",
    )


def session_event_row(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return rows(db, "SELECT event_id, version, occurred_at, attributes FROM events")


def expected_session(energy: float, version: str, seconds: float, points: str) -> tuple[Any, ...]:
    return (
        CSV_KEY,
        "9",
        "carstatsviewer:car1:charging_session:9",
        version,
        "2024-05-01T11:00:00Z",
        None,
        60.0,
        energy,
        2.0,
        12.5,
        55.5,
        12.25,
        points,
        stamp(seconds),
    )


async def test_newer_session_version_replaces(sink: SqliteSink, db: sqlite3.Connection) -> None:
    """A later version of a charging session replaces the session row and the events row."""
    point = {"time": "2024-05-01T11:30:00Z", "power_w": 11000.0}
    await sink.write([session(10, 1.0, "v1")], [])
    await sink.write([session(20, 2.5, "v2", [point])], [])
    newer = session(20, 2.5, "v2", [point])
    expected = (
        [expected_session(2.5, "v2", 20, '[{"time":"2024-05-01T11:30:00Z","power_w":11000.0}]')],
        [
            (
                "carstatsviewer:car1:charging_session:9",
                "v2",
                stamp(20),
                orjson.dumps(dict(newer.attributes)).decode(),
            )
        ],
    )
    assert expected == (session_row(db), session_event_row(db))


async def test_older_session_version_does_not_replace(
    sink: SqliteSink, db: sqlite3.Connection
) -> None:
    """An older version of a charging session arriving later changes nothing."""
    newer = session(20, 2.5, "v2")
    await sink.write([newer], [])
    await sink.write([session(10, 1.0, "v1")], [])
    expected = (
        [expected_session(2.5, "v2", 20, "[]")],
        [
            (
                "carstatsviewer:car1:charging_session:9",
                "v2",
                stamp(20),
                orjson.dumps(dict(newer.attributes)).decode(),
            )
        ],
    )
    assert expected == (session_row(db), session_event_row(db))


async def test_signal_event_with_same_id_is_not_replaced(
    sink: SqliteSink, db: sqlite3.Connection
) -> None:
    """A signal event with a stored id is never replaced, even by a later occurrence."""
    await sink.write([gps("e", 10, 1.0)], [])
    await sink.write([gps("e", 20, 2.0)], [])
    expected = [("e", stamp(10), '{"Vehicle.Speed":1.0}')]
    assert expected == rows(db, "SELECT event_id, occurred_at, signals FROM events")


# Quarantine --------------------------------------------------------------------------------


async def test_quarantine_same_bytes_stored_once(sink: SqliteSink, db: sqlite3.Connection) -> None:
    """The same raw bytes from the same source twice give one row with occurrences 2."""
    raw = b"\x00\xffnot json\r\n\x80"
    first = quarantined(raw, 0)
    await sink.write([], [first])
    await sink.write([], [quarantined(raw, 60)])
    expected = [
        (
            first.digest,
            "cc",
            "connectedcars-json",
            "invalid_json",
            "body is not valid JSON",
            raw,
            '{"path":"/webhooks/cc"}',
            stamp(0),
            stamp(60),
            2,
        )
    ]
    assert expected == rows(
        db,
        "SELECT digest, source, decoder, reason, error, raw, metadata, received_at,"
        " last_received_at, occurrences FROM quarantine",
    )


async def test_quarantine_distinct_inputs_kept_apart(
    sink: SqliteSink, db: sqlite3.Connection
) -> None:
    """Different bytes, or the same bytes from another source, are separate rows."""
    await sink.write([], [quarantined(b"a", 0), quarantined(b"b", 1)])
    await sink.write([], [quarantined(b"a", 2, source="other")])
    expected = [("cc", b"a", 1), ("cc", b"b", 1), ("other", b"a", 1)]
    assert expected == rows(db, "SELECT source, raw, occurrences FROM quarantine ORDER BY id")


# Locking and atomicity ---------------------------------------------------------------------


async def test_locked_database_raises_retryable_then_recovers(
    sink: SqliteSink, db_path: Path, db: sqlite3.Connection
) -> None:
    """While another connection holds an exclusive lock the write fails retryably, then works."""
    batch = [gps("e1", 10, 1.0)]
    quarantine = [quarantined(b"bad", 10)]
    with closing(sqlite3.connect(db_path, isolation_level=None)) as locker:
        locker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(RetryableSinkError):
            await sink.write(batch, quarantine)
        locker.execute("ROLLBACK")
    before = (rows(db, "SELECT count(*) FROM events"), rows(db, "SELECT count(*) FROM quarantine"))
    await sink.write(batch, quarantine)
    after = (rows(db, "SELECT event_id FROM events"), rows(db, "SELECT raw FROM quarantine"))
    expected = (([(0,)], [(0,)]), ([("e1",)], [(b"bad",)]))
    assert expected == (before, after)


async def test_failed_batch_leaves_nothing_behind(sink: SqliteSink, db: sqlite3.Connection) -> None:
    """A batch that fails part-way commits none of its rows."""
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON quarantine BEGIN SELECT RAISE(ABORT, 'no'); END"
    )
    member = VehicleRef(vendor_id="1337", fleet_id="47583", organization=ORG)
    batch = [
        gps("e1", 10, 1.0),
        dtc("add", "P0300", 11),
        admin("access_granted_to_vehicle", 12, CC_VEHICLE),
        admin("access_granted_to_fleet", 13, VehicleRef(fleet_id="47583", organization=ORG)),
        admin("vehicle_added_to_fleet", 14, member),
        session(15, 1.0, "v1"),
    ]
    with pytest.raises(RetryableSinkError):
        await sink.write(batch, [quarantined(b"bad", 10)])
    tables = [
        "events",
        "latest_signals",
        "vehicles",
        "fleets",
        "active_dtcs",
        "charging_sessions",
        "quarantine",
    ]
    counts = {t: rows(db, f"SELECT count(*) FROM {t}")[0][0] for t in tables}
    expected = dict.fromkeys(tables, 0)
    assert expected == counts


async def test_sink_usable_after_failed_batch(sink: SqliteSink, db: sqlite3.Connection) -> None:
    """After a failed batch the sink's connection is not left inside a transaction."""
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON quarantine BEGIN SELECT RAISE(ABORT, 'no'); END"
    )
    with pytest.raises(RetryableSinkError):
        await sink.write([gps("e1", 10, 1.0)], [quarantined(b"bad", 10)])
    db.execute("DROP TRIGGER refuse")
    await sink.write([gps("e1", 10, 1.0)], [quarantined(b"bad", 10)])
    expected = ([("e1",)], [(b"bad", 1)])
    assert expected == (
        rows(db, "SELECT event_id FROM events"),
        rows(db, "SELECT raw, occurrences FROM quarantine"),
    )


async def test_write_before_start_is_retryable(tmp_path: Path) -> None:
    """Writing to a sink that was never started raises `RetryableSinkError`."""
    sink = SqliteSink(SqliteSinkConfig(type="sqlite", path=tmp_path / "x.db"))
    try:
        with pytest.raises(RetryableSinkError) as info:
            await sink.write([gps("e", 0, 1.0)], [])
    finally:
        await sink.close()
    expected = "sqlite sink sqlite: sink is not started"
    assert expected == str(info.value)


async def test_year_before_1000_does_not_beat_newer_values(
    sink: SqliteSink, db: sqlite3.Connection
) -> None:
    """Stored times keep four-digit years, so an event dated 0999 sorts before 2024 and the
    latest-value guard keeps the 2024 value."""
    ancient = VehicleEvent(
        event_id="ancient",
        vendor="connectedcars",
        source="test",
        type="gps_position",
        kind="signal",
        vehicle=CC_VEHICLE,
        occurred_at=datetime(999, 1, 1, tzinfo=UTC),
        received_at=RECEIVED,
        signals={vss.SPEED: 1.0},
    )
    await sink.write([gps("new", 0, 50.0)], [])
    await sink.write([ancient], [])

    assert {vss.SPEED: (50.0, stamp(0))} == latest(db)
    assert [("0999-01-01T00:00:00.000000Z",)] == rows(
        db, "SELECT occurred_at FROM events WHERE event_id = 'ancient'"
    )
