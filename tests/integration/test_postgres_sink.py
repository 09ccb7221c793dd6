"""The PostgreSQL sink against a real server, one fresh schema per test.

The server is `FLEETSTREAM_TEST_POSTGRES_DSN` (default: the machine's PostgreSQL in database
`test`). Each test's schema is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import asyncpg
import orjson
import pytest

from fleetstream.config.model import PostgresSinkConfig
from fleetstream.errors import FatalError, RetryableSinkError
from fleetstream.normalize import vss
from fleetstream.normalize.model import EventKind, VehicleEvent, VehicleRef
from fleetstream.sinks.base import QuarantineRecord
from fleetstream.sinks.postgres import PostgresSink, SchemaVersionError, describe_dsn
from fleetstream.sinks.postgres_migrations import MIGRATIONS
from fleetstream.sinks.registry import build_sink

pytestmark = pytest.mark.integration

DSN = os.environ.get("FLEETSTREAM_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
START_HINT = (
    "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, "
    "or set FLEETSTREAM_TEST_POSTGRES_DSN to another server"
)

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
RECEIVED = datetime(2024, 5, 2, 8, 0, 0, tzinfo=UTC)
ORG = "org1"
CC_VEHICLE = VehicleRef(vendor_id="1337", organization=ORG)
CC_KEY = "connectedcars:org1:1337"
CSV_VEHICLE = VehicleRef(vendor_id="car1")
CSV_KEY = "carstatsviewer::car1"
SESSION_ID = "carstatsviewer:car1:charging_session:9"
TABLES = [
    "events",
    "latest_signals",
    "vehicles",
    "fleets",
    "active_dtcs",
    "charging_sessions",
    "quarantine",
    "signals",
]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


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


def gps(event_id: str, seconds: float, speed: float) -> VehicleEvent:
    return event(event_id, seconds, signals={vss.SPEED: speed})


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
        SESSION_ID,
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


def everything() -> list[VehicleEvent]:
    """A batch that touches every table."""
    member = VehicleRef(vendor_id="1337", fleet_id="47583", organization=ORG)
    return [
        gps("e1", 10, 1.0),
        dtc("add", "P0300", 11),
        admin("access_granted_to_vehicle", 12, CC_VEHICLE),
        admin("access_granted_to_fleet", 13, VehicleRef(fleet_id="47583", organization=ORG)),
        admin("vehicle_added_to_fleet", 14, member),
        session(15, 1.0, "v1"),
    ]


# Fixtures ----------------------------------------------------------------------------------


async def connect() -> Any:
    try:
        return await asyncpg.connect(DSN, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        pytest.fail(f"no PostgreSQL at {describe_dsn(DSN)} ({exc}): {START_HINT}")


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A schema name no other test uses; dropped with everything in it afterwards."""
    name = f"fs_test_{uuid4().hex[:8]}"
    conn = await connect()
    try:
        yield name
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await conn.close()


def sink_config(schema: str, **overrides: Any) -> PostgresSinkConfig:
    settings: dict[str, Any] = {"type": "postgres", "name": schema, "dsn": DSN, "db_schema": schema}
    settings.update(overrides)
    return PostgresSinkConfig.model_validate(settings)


MakeSink = Callable[..., Awaitable[PostgresSink]]


@pytest.fixture
async def make_sink(schema: str) -> AsyncIterator[MakeSink]:
    """Factory: `await make_sink(**config_overrides)` gives a started sink, closed afterwards."""
    started: list[PostgresSink] = []

    async def make(**overrides: Any) -> PostgresSink:
        sink = PostgresSink(sink_config(schema, **overrides))
        await sink.start()
        started.append(sink)
        return sink

    yield make
    for sink in started:
        await sink.close()


@pytest.fixture
async def sink(make_sink: MakeSink) -> PostgresSink:
    return await make_sink()


@pytest.fixture
async def db(schema: str, sink: PostgresSink) -> AsyncIterator[Any]:
    """A second, independent connection, with the test's schema on its search path."""
    conn = await connect()
    await conn.execute(f'SET search_path TO "{schema}"')
    try:
        yield conn
    finally:
        await conn.close()


async def rows(conn: Any, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return [tuple(record) for record in await conn.fetch(sql, *params)]


async def counts(conn: Any) -> dict[str, int]:
    return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}


async def latest(conn: Any, vehicle_key: str = CC_KEY) -> dict[str, tuple[Any, datetime]]:
    """latest_signals of one vehicle as {path: (decoded value, observed_at)}."""
    found = await rows(
        conn,
        "SELECT path, value, observed_at FROM latest_signals WHERE vehicle_key = $1",
        vehicle_key,
    )
    return {path: (orjson.loads(value), observed) for path, value, observed in found}


async def terminate_backends(conn: Any, sink: PostgresSink) -> int:
    """Kill the sink's server connections, as a failover or an operator would."""
    killed: int = await conn.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
        sink.application_name,
    )
    return killed


async def wait_until_blocked(conn: Any, sink: PostgresSink) -> None:
    """Wait until one of the sink's connections waits for a lock."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = $1 AND wait_event_type = 'Lock'",
            sink.application_name,
        ):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the sink's write never blocked on the lock")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# Schema and migrations ---------------------------------------------------------------------


async def test_schema_created_at_latest_version(sink: PostgresSink, db: Any) -> None:
    """`start` creates the schema and records every migration once, in order."""
    expected = [(m.version,) for m in MIGRATIONS]
    assert expected == await rows(db, "SELECT version FROM schema_migrations ORDER BY version")


async def test_column_types(sink: PostgresSink, db: Any, schema: str) -> None:
    """Times are timestamptz, documents jsonb, raw input bytea, session numbers double."""
    expected = {
        ("events", "occurred_at"): "timestamp with time zone",
        ("events", "signals"): "jsonb",
        ("events", "attributes"): "jsonb",
        ("events", "signal_times"): "jsonb",
        ("latest_signals", "value"): "jsonb",
        ("latest_signals", "observed_at"): "timestamp with time zone",
        ("vehicles", "first_seen_at"): "timestamp with time zone",
        ("active_dtcs", "active"): "boolean",
        ("charging_sessions", "start_time"): "timestamp with time zone",
        ("charging_sessions", "charged_energy_kwh"): "double precision",
        ("charging_sessions", "charging_points"): "jsonb",
        ("quarantine", "raw"): "bytea",
        ("quarantine", "metadata"): "jsonb",
        ("signals", "value"): "jsonb",
        ("schema_migrations", "applied_at"): "timestamp with time zone",
    }
    found = await rows(
        db,
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = $1",
        schema,
    )
    types = {(table, column): type_ for table, column, type_ in found}
    assert expected == {key: types.get(key) for key in expected}


async def test_upgrade_from_version_1_keeps_data(schema: str, make_sink: MakeSink) -> None:
    """A schema made by migration 1 alone, with data in it, upgrades in place to the latest."""
    old = PostgresSink(sink_config(schema), migrations=MIGRATIONS[:1])
    await old.start()
    await old.write(
        [gps("a", 10, 1.0), dtc("add", "P0300", 11), session(12, 1.0, "v1")],
        [quarantined(b"\x00old", 10)],
    )
    await old.close()
    conn = await connect()
    await conn.execute(f'SET search_path TO "{schema}"')
    try:
        state = (
            "SELECT (SELECT array_agg(version ORDER BY version) FROM schema_migrations),"
            " to_regclass('signals') IS NOT NULL,"
            " to_regclass('events_vehicle_time') IS NOT NULL,"
            " to_regclass('quarantine_received_at') IS NOT NULL"
        )
        before = await rows(conn, state)
        new = await make_sink(signals_table=True)
        after = await rows(conn, state)
        await new.write([gps("b", 20, 2.0)], [])
        data = (
            await rows(conn, 'SELECT event_id FROM events ORDER BY event_id COLLATE "C"'),
            await latest(conn),
            await rows(conn, "SELECT code, active FROM active_dtcs"),
            await rows(conn, "SELECT session_id, version FROM charging_sessions"),
            await rows(conn, "SELECT raw FROM quarantine"),
            await rows(conn, "SELECT event_id FROM signals"),
        )
    finally:
        await conn.close()
    expected = (
        [([1], False, False, False)],
        [([1, 2], True, True, True)],
        (
            [("a",), ("b",), (SESSION_ID,), ("dtc-add-P0300-11",)],
            {vss.SPEED: (2.0, at(20)), vss.DTC_LIST: (["P0300"], at(11))},
            [("P0300", True)],
            [("9", "v1")],
            [(b"\x00old",)],
            [("b",)],
        ),
    )
    assert expected == (before, after, data)


async def test_newer_schema_refused(sink: PostgresSink, db: Any, schema: str) -> None:
    """A fleetstream that knows fewer migrations than the database has refuses to start."""
    older = PostgresSink(sink_config(schema), migrations=MIGRATIONS[:1])
    with pytest.raises(SchemaVersionError) as info:
        await older.start()
    expected = (
        f"postgres sink {schema} on {describe_dsn(DSN)}: schema {schema} is at version 2;"
        " this fleetstream knows up to version 1: upgrade fleetstream (or use another db_schema)",
        [(1,), (2,)],
    )
    assert expected == (
        str(info.value),
        await rows(db, "SELECT version FROM schema_migrations ORDER BY version"),
    )


async def test_replicas_starting_together_migrate_once(schema: str, make_sink: MakeSink) -> None:
    """Three sinks starting at once on an empty schema all start; each migration runs once."""
    sinks = await asyncio.gather(*(make_sink(name=f"{schema}-{i}") for i in range(3)))
    for i, sink in enumerate(sinks):
        await sink.write([gps(f"e{i}", i, float(i))], [])
    conn = await connect()
    try:
        found = (
            await rows(conn, f'SELECT version FROM "{schema}".schema_migrations ORDER BY 1'),
            await rows(conn, f'SELECT event_id FROM "{schema}".events ORDER BY 1'),
        )
    finally:
        await conn.close()
    expected = ([(1,), (2,)], [("e0",), ("e1",), ("e2",)])
    assert expected == found


async def test_timescaledb_absent_gives_plain_tables(make_sink: MakeSink, schema: str) -> None:
    """`timescaledb: true` without the extension on the server gives working plain tables."""
    conn = await connect()
    try:
        if await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
        ):
            pytest.skip("this server has TimescaleDB; the test covers its absence")
        sink = await make_sink(timescaledb=True, signals_table=True)
        await sink.write([gps("e", 1, 5.0)], [])
        found = (
            sink.hypertables,
            await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"),
            await rows(conn, f'SELECT event_id, value FROM "{schema}".signals'),
        )
    finally:
        await conn.close()
    expected = ((), 0, [("e", "5.0")])
    assert expected == found


# Events and latest signals -----------------------------------------------------------------


async def test_same_event_twice_is_one_row(sink: PostgresSink, db: Any) -> None:
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
            at(0),
            RECEIVED,
            None,
            '{"Vehicle.Speed": 50.0}',
            "{}",
            None,
        )
    ]
    assert expected == await rows(db, "SELECT * FROM events")


async def test_latest_signal_keeps_newer_value(sink: PostgresSink, db: Any) -> None:
    """An older event arriving after a newer one does not overwrite the newer value."""
    await sink.write([gps("new", 20, 80.0)], [])
    await sink.write([gps("old", 10, 30.0)], [])
    after_old = await latest(db)
    await sink.write([gps("newest", 30, 90.0)], [])
    expected = ({vss.SPEED: (80.0, at(20))}, {vss.SPEED: (90.0, at(30))})
    assert expected == (after_old, await latest(db))


async def test_latest_signal_order_within_one_batch(sink: PostgresSink, db: Any) -> None:
    """Within one batch the newest observation wins regardless of its position."""
    await sink.write([gps("mid", 15, 50.0), gps("new", 20, 80.0), gps("old", 10, 30.0)], [])
    expected = {vss.SPEED: (80.0, at(20))}
    assert expected == await latest(db)


async def test_latest_signal_tie_goes_to_later_in_batch(sink: PostgresSink, db: Any) -> None:
    """Two observations with the same time: the later one in the batch wins, as row by row."""
    await sink.write([gps("old", 5, 1.0)], [])
    await sink.write([gps("first", 10, 2.0), gps("second", 10, 3.0)], [])
    expected = [(vss.SPEED, "3.0", at(10), "second")]
    assert expected == await rows(
        db, "SELECT path, value, observed_at, event_id FROM latest_signals"
    )


async def test_latest_signal_honours_signal_times(sink: PostgresSink, db: Any) -> None:
    """A per-signal time decides recency for that signal instead of `occurred_at`."""
    stale_odometer = event(
        "late-event",
        100,
        signals={vss.SPEED: 10.0, vss.TRAVELED_DISTANCE: 1000.0},
        signal_times={vss.TRAVELED_DISTANCE: at(5)},
    )
    await sink.write([gps("speed", 50, 60.0)], [])
    await sink.write([event("odo", 50, signals={vss.TRAVELED_DISTANCE: 2000.0})], [])
    await sink.write([stale_odometer], [])
    expected = {vss.SPEED: (10.0, at(100)), vss.TRAVELED_DISTANCE: (2000.0, at(50))}
    assert expected == await latest(db)


async def test_signal_times_stored_with_event(sink: PostgresSink, db: Any) -> None:
    """The per-signal times of an event are stored as a JSON document in the events row."""
    await sink.write(
        [event("e", 10, signals={vss.SPEED: 1.0}, signal_times={vss.SPEED: at(4)})], []
    )
    expected = [({vss.SPEED: "2024-05-01T12:00:04.000000Z"},)]
    found = await rows(db, "SELECT signal_times FROM events")
    assert expected == [(orjson.loads(text),) for (text,) in found]


async def test_vehicles_table_filled(sink: PostgresSink, db: Any) -> None:
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
            at(10),
            at(30),
        )
    ]
    assert expected == await rows(db, "SELECT * FROM vehicles")


async def test_vehicle_row_from_one_batch(sink: PostgresSink, db: Any) -> None:
    """Within one batch the last VIN given wins and the times span the whole batch."""

    def with_vin(event_id: str, seconds: float, vin: str | None) -> VehicleEvent:
        ref = VehicleRef(vendor_id="1337", vin=vin, organization=ORG)
        return event(event_id, seconds, type="can_vin", vehicle=ref)

    await sink.write(
        [
            with_vin("a", 20, None),
            with_vin("b", 10, "VIN1"),
            with_vin("c", 30, "VIN2"),
            with_vin("d", 15, None),
        ],
        [],
    )
    expected = [(CC_KEY, "VIN2", at(10), at(30))]
    assert expected == await rows(
        db, "SELECT vehicle_key, vin, first_seen_at, last_event_at FROM vehicles"
    )


async def test_vehicle_first_seen_moves_back_for_older_event(sink: PostgresSink, db: Any) -> None:
    """An older event arriving later moves first_seen_at back; a newer one only last_event_at."""
    await sink.write([gps("new", 20, 1.0)], [])
    await sink.write([gps("old", 10, 2.0)], [])
    await sink.write([gps("newer", 30, 2.0)], [])
    await sink.write([gps("between", 25, 2.0)], [])
    expected = [(at(10), at(30))]
    assert expected == await rows(db, "SELECT first_seen_at, last_event_at FROM vehicles")


async def test_signal_event_with_same_id_is_not_replaced(sink: PostgresSink, db: Any) -> None:
    """A signal event with a stored id is never replaced, even by a later occurrence."""
    await sink.write([gps("e", 10, 1.0)], [])
    await sink.write([gps("e", 20, 2.0)], [])
    expected = [("e", at(10), '{"Vehicle.Speed": 1.0}')]
    assert expected == await rows(db, "SELECT event_id, occurred_at, signals FROM events")


async def test_year_before_1000_does_not_beat_newer_values(sink: PostgresSink, db: Any) -> None:
    """An event dated in the year 999 is stored as such and does not displace a 2024 value."""
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
    expected = (
        {vss.SPEED: (50.0, at(0))},
        [(datetime(999, 1, 1, tzinfo=UTC),)],
    )
    assert expected == (
        await latest(db),
        await rows(db, "SELECT occurred_at FROM events WHERE event_id = 'ancient'"),
    )


async def test_nul_characters_are_stored_as_replacement(sink: PostgresSink, db: Any) -> None:
    """NUL, refused by PostgreSQL text and jsonb, is stored as U+FFFD; literal text is kept."""
    weird = event(
        "nul",
        1,
        signals={"Vehicle.Name": "a\x00b"},
        attributes={"nul": "x\x00y", "literal": "\\u0000", "both": "\\\x00"},
    )
    record = QuarantineRecord(
        source="cc",
        decoder="connectedcars-json",
        reason="invalid_json",
        error="unexpected byte \x00 at 0",
        raw=b"\x00",
        received_at=at(1),
    )
    await sink.write([weird], [record])
    found = (
        [orjson.loads(a) for (a,) in await rows(db, "SELECT attributes FROM events")],
        await latest(db),
        await rows(db, "SELECT error, raw FROM quarantine"),
    )
    expected = (
        [{"nul": "x\ufffdy", "literal": "\\u0000", "both": "\\\ufffd"}],
        {"Vehicle.Name": ("a\ufffdb", at(1))},
        [("unexpected byte \ufffd at 0", b"\x00")],
    )
    assert expected == found


# The narrow signals table ------------------------------------------------------------------


async def test_signals_table_rows_when_enabled(make_sink: MakeSink, schema: str) -> None:
    """`signals_table: true` stores one row per signal at its own time, once per observation."""
    sink = await make_sink(signals_table=True)
    batch = [
        event(
            "e",
            10,
            signals={vss.SPEED: 1.0, vss.TRAVELED_DISTANCE: 2000.0},
            signal_times={vss.TRAVELED_DISTANCE: at(4)},
        ),
        gps("f", 11, 3.0),
    ]
    await sink.write(batch, [])
    await sink.write(batch + batch, [])
    conn = await connect()
    try:
        found = await rows(
            conn,
            f'SELECT vehicle_key, path, observed_at, value, event_id FROM "{schema}".signals'
            " ORDER BY path, observed_at",
        )
    finally:
        await conn.close()
    expected = [
        (CC_KEY, vss.SPEED, at(10), "1.0", "e"),
        (CC_KEY, vss.SPEED, at(11), "3.0", "f"),
        (CC_KEY, vss.TRAVELED_DISTANCE, at(4), "2000.0", "e"),
    ]
    assert expected == found


async def test_signals_table_empty_when_disabled(sink: PostgresSink, db: Any) -> None:
    """With the default `signals_table: false` the signals table stays empty."""
    await sink.write([gps("e", 1, 1.0)], [])
    expected = (1, 0)
    assert expected == (
        await db.fetchval("SELECT count(*) FROM events"),
        await db.fetchval("SELECT count(*) FROM signals"),
    )


# Admin events ------------------------------------------------------------------------------


async def test_vehicle_access_grant_then_revoke(sink: PostgresSink, db: Any) -> None:
    """A grant followed by a removal leaves the vehicle `revoked`."""
    await sink.write([admin("access_granted_to_vehicle", 10, CC_VEHICLE)], [])
    await sink.write([admin("access_removed_from_vehicle", 20, CC_VEHICLE)], [])
    expected = [(CC_KEY, "revoked", at(20))]
    assert expected == await rows(
        db, "SELECT vehicle_key, access_state, access_changed_at FROM vehicles"
    )


async def test_vehicle_access_granted(sink: PostgresSink, db: Any) -> None:
    """A grant alone marks the vehicle `granted`."""
    await sink.write([admin("access_granted_to_vehicle", 10, CC_VEHICLE)], [])
    expected = [("granted", at(10))]
    assert expected == await rows(db, "SELECT access_state, access_changed_at FROM vehicles")


async def test_vehicle_access_older_grant_does_not_undo_revoke(sink: PostgresSink, db: Any) -> None:
    """An older grant, in a later batch or later in the same batch, leaves `revoked`."""
    await sink.write([admin("access_removed_from_vehicle", 20, CC_VEHICLE)], [])
    await sink.write([admin("access_granted_to_vehicle", 10, CC_VEHICLE)], [])
    across = await rows(db, "SELECT access_state, access_changed_at FROM vehicles")
    await sink.write(
        [
            admin("access_removed_from_vehicle", 40, CC_VEHICLE),
            admin("access_granted_to_vehicle", 30, CC_VEHICLE),
        ],
        [],
    )
    within = await rows(db, "SELECT access_state, access_changed_at FROM vehicles")
    expected = ([("revoked", at(20))], [("revoked", at(40))])
    assert expected == (across, within)


async def test_fleet_grant_and_revoke(sink: PostgresSink, db: Any) -> None:
    """Fleet grants and removals land in `fleets`, newest wins, and no vehicle row appears."""
    fleet = VehicleRef(fleet_id="47583", organization=ORG)
    await sink.write([admin("access_granted_to_fleet", 10, fleet)], [])
    granted = await rows(db, "SELECT * FROM fleets")
    await sink.write([admin("access_removed_from_fleet", 30, fleet)], [])
    await sink.write([admin("access_granted_to_fleet", 20, fleet)], [])
    revoked = await rows(db, "SELECT * FROM fleets")
    await sink.write(
        [
            admin("access_granted_to_fleet", 50, fleet),
            admin("access_removed_from_fleet", 40, fleet),
        ],
        [],
    )
    within_batch = await rows(db, "SELECT access_state, access_changed_at FROM fleets")
    expected = (
        [("connectedcars:org1:47583", "connectedcars", ORG, "47583", "granted", at(10))],
        [("connectedcars:org1:47583", "connectedcars", ORG, "47583", "revoked", at(30))],
        [("granted", at(50))],
        [],
    )
    assert expected == (granted, revoked, within_batch, await rows(db, "SELECT * FROM vehicles"))


async def test_vehicle_added_to_and_removed_from_fleet(sink: PostgresSink, db: Any) -> None:
    """Joining a fleet sets the vehicle's fleet_id; leaving it clears it."""
    member = VehicleRef(vendor_id="1337", fleet_id="47583", organization=ORG)
    await sink.write([gps("g", 5, 1.0)], [])
    await sink.write([admin("vehicle_added_to_fleet", 10, member)], [])
    joined = await rows(db, "SELECT fleet_id, fleet_changed_at FROM vehicles")
    await sink.write([admin("vehicle_removed_from_fleet", 20, member)], [])
    left = await rows(db, "SELECT fleet_id, fleet_changed_at FROM vehicles")
    expected = ([("47583", at(10))], [(None, at(20))])
    assert expected == (joined, left)


async def test_vehicle_moves_between_fleets(sink: PostgresSink, db: Any) -> None:
    """Leaving the old fleet after joining a new one keeps the new fleet."""
    old = VehicleRef(vendor_id="1337", fleet_id="1", organization=ORG)
    new = VehicleRef(vendor_id="1337", fleet_id="2", organization=ORG)
    await sink.write([admin("vehicle_added_to_fleet", 10, old)], [])
    await sink.write([admin("vehicle_added_to_fleet", 20, new)], [])
    await sink.write([admin("vehicle_removed_from_fleet", 30, old)], [])
    expected = [("2", at(20))]
    assert expected == await rows(db, "SELECT fleet_id, fleet_changed_at FROM vehicles")


async def test_vehicle_moves_between_fleets_in_one_batch(sink: PostgresSink, db: Any) -> None:
    """Join old, join new, leave old in one batch keeps the new fleet, as in separate batches."""
    old = VehicleRef(vendor_id="1337", fleet_id="1", organization=ORG)
    new = VehicleRef(vendor_id="1337", fleet_id="2", organization=ORG)
    await sink.write(
        [
            admin("vehicle_added_to_fleet", 10, old),
            admin("vehicle_added_to_fleet", 20, new),
            admin("vehicle_removed_from_fleet", 30, old),
        ],
        [],
    )
    expected = [("2", at(20))]
    assert expected == await rows(db, "SELECT fleet_id, fleet_changed_at FROM vehicles")


async def test_older_fleet_join_does_not_undo_newer_leave(sink: PostgresSink, db: Any) -> None:
    """An older vehicle_added_to_fleet arriving after a newer removal leaves no membership."""
    member = VehicleRef(vendor_id="1337", fleet_id="47583", organization=ORG)
    await sink.write([admin("vehicle_added_to_fleet", 10, member)], [])
    await sink.write([admin("vehicle_removed_from_fleet", 20, member)], [])
    await sink.write([admin("vehicle_added_to_fleet", 10, member)], [])
    await sink.write(
        [admin("vehicle_added_to_fleet", 5, member), admin("vehicle_added_to_fleet", 15, member)],
        [],
    )
    expected = [(None, at(20))]
    assert expected == await rows(db, "SELECT fleet_id, fleet_changed_at FROM vehicles")


# Trouble codes -----------------------------------------------------------------------------

DTC_ROWS = "SELECT ecu, code, status, active, changed_at FROM active_dtcs ORDER BY code"


async def test_dtc_add_change_remove(sink: PostgresSink, db: Any) -> None:
    """DTC diffs update active_dtcs and the DTCList latest signal."""
    await sink.write([dtc("add", "p0300", 10), dtc("add", "U0100", 11, ecu="abs")], [])
    after_add = (await rows(db, DTC_ROWS), await latest(db))
    await sink.write([dtc("change", "P0300", 20)], [])
    await sink.write([dtc("remove", "U0100", 30, ecu="abs")], [])
    after_remove = (await rows(db, DTC_ROWS), await latest(db))
    expected = (
        (
            [("engine", "P0300", "68", True, at(10)), ("abs", "U0100", "68", True, at(11))],
            {vss.DTC_LIST: (["P0300", "U0100"], at(11))},
        ),
        (
            [("engine", "P0300", "68", True, at(20)), ("abs", "U0100", "68", False, at(30))],
            {vss.DTC_LIST: (["P0300"], at(30))},
        ),
    )
    assert expected == (after_add, after_remove)


async def test_dtc_diffs_applied_in_time_order_within_batch(sink: PostgresSink, db: Any) -> None:
    """A batch holding a newer remove before an older add ends with the code inactive."""
    await sink.write([dtc("remove", "P0300", 20), dtc("add", "P0300", 10)], [])
    expected = (
        [("P0300", False, at(20))],
        {vss.DTC_LIST: ([], at(20))},
    )
    assert expected == (
        await rows(db, "SELECT code, active, changed_at FROM active_dtcs"),
        await latest(db),
    )


async def test_dtc_older_add_after_remove_does_not_resurrect(sink: PostgresSink, db: Any) -> None:
    """An older `add` arriving after a newer `remove` leaves the code inactive."""
    await sink.write([dtc("add", "P0300", 10)], [])
    await sink.write([dtc("remove", "P0300", 30)], [])
    await sink.write([dtc("add", "P0300", 20)], [])
    expected = (
        [("P0300", False, at(30))],
        {vss.DTC_LIST: ([], at(30))},
    )
    assert expected == (
        await rows(db, "SELECT code, active, changed_at FROM active_dtcs"),
        await latest(db),
    )


# Charging sessions (entities) --------------------------------------------------------------

SESSION_ROWS = (
    "SELECT vehicle_key, session_id, event_id, version, start_time, end_time,"
    " charge_duration_secs, charged_energy_kwh, charged_soc_percent,"
    " outside_temperature_celsius, latitude, longitude, charging_points, occurred_at"
    " FROM charging_sessions"
)


async def session_state(db: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    sessions = [(*row[:12], orjson.loads(row[12]), row[13]) for row in await rows(db, SESSION_ROWS)]
    events = [
        (event_id, version, occurred, orjson.loads(attributes))
        for event_id, version, occurred, attributes in await rows(
            db, "SELECT event_id, version, occurred_at, attributes FROM events"
        )
    ]
    return sessions, events


def expected_session(
    energy: float, version: str, seconds: float, points: list[dict[str, Any]]
) -> tuple[Any, ...]:
    return (
        CSV_KEY,
        "9",
        SESSION_ID,
        version,
        datetime(2024, 5, 1, 11, 0, tzinfo=UTC),
        None,
        60.0,
        energy,
        2.0,
        12.5,
        55.5,
        12.25,
        points,
        at(seconds),
    )


async def test_newer_session_version_replaces(sink: PostgresSink, db: Any) -> None:
    """A later version of a charging session replaces the session row and the events row."""
    point = {"time": "2024-05-01T11:30:00Z", "power_w": 11000.0}
    newer = session(20, 2.5, "v2", [point])
    await sink.write([session(10, 1.0, "v1")], [])
    await sink.write([newer], [])
    expected = (
        [expected_session(2.5, "v2", 20, [point])],
        [(SESSION_ID, "v2", at(20), dict(newer.attributes))],
    )
    assert expected == await session_state(db)


async def test_older_session_version_does_not_replace(sink: PostgresSink, db: Any) -> None:
    """An older version of a charging session arriving later changes nothing."""
    newer = session(20, 2.5, "v2")
    await sink.write([newer], [])
    await sink.write([session(10, 1.0, "v1")], [])
    expected = (
        [expected_session(2.5, "v2", 20, [])],
        [(SESSION_ID, "v2", at(20), dict(newer.attributes))],
    )
    assert expected == await session_state(db)


async def test_session_versions_in_one_batch(sink: PostgresSink, db: Any) -> None:
    """Within one batch the newest version of a session wins wherever it stands."""
    newer = session(20, 2.5, "v2")
    await sink.write([session(10, 1.0, "v1"), newer, session(15, 1.5, "v1b")], [])
    expected = (
        [expected_session(2.5, "v2", 20, [])],
        [(SESSION_ID, "v2", at(20), dict(newer.attributes))],
    )
    assert expected == await session_state(db)


# Quarantine --------------------------------------------------------------------------------

QUARANTINE_ROWS = (
    "SELECT digest, source, decoder, reason, error, raw, metadata, received_at,"
    " last_received_at, occurrences FROM quarantine"
)


async def test_quarantine_same_bytes_stored_once(sink: PostgresSink, db: Any) -> None:
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
            '{"path": "/webhooks/cc"}',
            at(0),
            at(60),
            2,
        )
    ]
    assert expected == await rows(db, QUARANTINE_ROWS)


async def test_quarantine_duplicates_within_one_batch(sink: PostgresSink, db: Any) -> None:
    """Copies within a batch count one occurrence each, for a new row and for a stored one."""
    raw = b"\x01\x02"
    await sink.write([], [quarantined(raw, 0), quarantined(raw, 30), quarantined(raw, 20)])
    await sink.write([], [quarantined(raw, 90), quarantined(raw, 95)])
    expected = [(raw, at(0), at(95), 5)]
    assert expected == await rows(
        db, "SELECT raw, received_at, last_received_at, occurrences FROM quarantine"
    )


async def test_quarantine_distinct_inputs_kept_apart(sink: PostgresSink, db: Any) -> None:
    """Different bytes, or the same bytes from another source, are separate rows."""
    await sink.write([], [quarantined(b"a", 0), quarantined(b"b", 1)])
    await sink.write([], [quarantined(b"a", 2, source="other")])
    expected = [("cc", b"a", 1), ("cc", b"b", 1), ("other", b"a", 1)]
    assert expected == await rows(db, "SELECT source, raw, occurrences FROM quarantine ORDER BY id")


# Atomicity, failures and connections -------------------------------------------------------


async def refuse_quarantine_inserts(conn: Any) -> None:
    """From another connection: make every insert into `quarantine` fail (the last merge)."""
    await conn.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql"
        " AS $$BEGIN RAISE EXCEPTION 'refused by the test'; END$$"
    )
    await conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON quarantine FOR EACH ROW EXECUTE FUNCTION refuse()"
    )


async def test_failed_batch_leaves_nothing_behind(
    make_sink: MakeSink, schema: str, db: Any
) -> None:
    """A batch whose last statement fails commits none of its rows, in any table."""
    sink = await make_sink(name=f"{schema}-signals", signals_table=True)
    await refuse_quarantine_inserts(db)
    with pytest.raises(RetryableSinkError) as info:
        await sink.write(everything(), [quarantined(b"bad", 10)])
    expected = (True, dict.fromkeys(TABLES, 0))
    assert expected == ("refused by the test" in str(info.value), await counts(db))


async def test_sink_usable_after_failed_batch(sink: PostgresSink, db: Any) -> None:
    """After a failed batch the same batch commits in full once the cause is gone."""
    await refuse_quarantine_inserts(db)
    with pytest.raises(RetryableSinkError):
        await sink.write(everything(), [quarantined(b"bad", 10)])
    await db.execute("DROP TRIGGER refuse ON quarantine")
    await sink.write(everything(), [quarantined(b"bad", 10)])
    expected = {
        "events": 6,
        "latest_signals": 4,
        "vehicles": 2,
        "fleets": 1,
        "active_dtcs": 1,
        "charging_sessions": 1,
        "quarantine": 1,
        "signals": 0,
    }
    assert expected == await counts(db)


async def test_idle_connection_killed_between_writes(sink: PostgresSink, db: Any) -> None:
    """After an idle connection is killed a write fails whole or commits whole; the next works."""
    await sink.write([gps("a", 1, 1.0)], [])
    killed = await terminate_backends(db, sink)
    try:
        await sink.write([gps("b", 2, 2.0)], [quarantined(b"x", 2)])
        outcome = "committed"
    except RetryableSinkError:
        outcome = "retryable"
    after_next = (
        await rows(db, "SELECT event_id FROM events ORDER BY 1"),
        await rows(db, "SELECT raw FROM quarantine"),
    )
    await sink.write([gps("c", 3, 3.0)], [])
    final = await rows(db, "SELECT event_id FROM events ORDER BY 1")
    possible = {
        "committed": (([("a",), ("b",)], [(b"x",)]), [("a",), ("b",), ("c",)]),
        "retryable": (([("a",)], []), [("a",), ("c",)]),
    }
    expected = (1, *possible[outcome])
    assert expected == (killed, after_next, final)


async def test_connection_killed_mid_batch(sink: PostgresSink, db: Any, schema: str) -> None:
    """A connection killed mid-transaction fails retryably, leaves nothing, then the batch lands."""
    batch, quarantine = everything(), [quarantined(b"bad", 10)]
    blocker = await connect()
    try:
        locked = blocker.transaction()
        await locked.start()
        await blocker.execute(f'LOCK TABLE "{schema}".events IN EXCLUSIVE MODE')
        writing = asyncio.create_task(sink.write(batch, quarantine))
        await wait_until_blocked(db, sink)
        killed = await terminate_backends(db, sink)
        with pytest.raises(RetryableSinkError):
            await writing
        await locked.rollback()
    finally:
        await blocker.close()
    after_failure = await counts(db)
    await sink.write(batch, quarantine)
    expected = (
        1,
        dict.fromkeys(TABLES, 0),
        [(e.event_id,) for e in sorted(batch, key=lambda e: e.event_id)],
    )
    assert expected == (
        killed,
        after_failure,
        await rows(db, 'SELECT event_id FROM events ORDER BY event_id COLLATE "C"'),
    )


async def test_batch_over_time_budget_fails_retryably(
    make_sink: MakeSink, schema: str, db: Any
) -> None:
    """A batch stuck past `command_timeout_secs` fails retryably, writes nothing, then works."""
    sink = await make_sink(name=f"{schema}-slow", command_timeout_secs=0.5)
    blocker = await connect()
    try:
        locked = blocker.transaction()
        await locked.start()
        await blocker.execute(f'LOCK TABLE "{schema}".events IN EXCLUSIVE MODE')
        started = time.monotonic()
        with pytest.raises(RetryableSinkError):
            await sink.write([gps("e", 1, 1.0)], [quarantined(b"q", 1)])
        elapsed = time.monotonic() - started
        await locked.rollback()
    finally:
        await blocker.close()
    after_failure = await counts(db)
    await sink.write([gps("e", 1, 1.0)], [quarantined(b"q", 1)])
    expected = (True, dict.fromkeys(TABLES, 0), [("e",)])
    assert expected == (
        elapsed < 5,
        after_failure,
        await rows(db, "SELECT event_id FROM events"),
    )


async def test_write_before_start_is_retryable(schema: str) -> None:
    """Writing to a sink that was never started raises `RetryableSinkError`."""
    sink = PostgresSink(sink_config(schema))
    with pytest.raises(RetryableSinkError) as info:
        await sink.write([gps("e", 0, 1.0)], [])
    expected = f"postgres sink {schema}: sink is not started"
    assert expected == str(info.value)


async def test_start_without_server_names_it(schema: str) -> None:
    """`start` without a server fails with a message naming the server but not the password."""
    port = free_port()
    config = sink_config(schema, dsn=f"postgresql://postgres:hunter2@127.0.0.1:{port}/test")
    with pytest.raises(FatalError) as info:
        await PostgresSink(config).start()
    message = str(info.value)
    expected = (True, False)
    assert expected == (
        message.startswith(f"postgres sink {schema}: cannot connect to 127.0.0.1:{port}/test: "),
        "hunter2" in message,
    )


async def test_registry_builds_postgres_sink(schema: str) -> None:
    """`type: postgres` in the sinks list builds a `PostgresSink` with the configured name."""
    sink = build_sink(sink_config(schema, name="warehouse"))
    expected = (PostgresSink, "warehouse", "fleetstream-warehouse")
    assert expected == (type(sink), sink.name, getattr(sink, "application_name", None))
