"""The embedded default store: one SQLite file an operator can query directly.

Durability: WAL journal with `synchronous=FULL`, so every committed batch is fsynced to the WAL
before `write` returns, and only then does the pipeline settle its messages. All access goes
through one connection on one worker thread, which keeps the event loop free and serialises
writes without relying on SQLite's locking.

Tables (times are UTC, fixed-width `YYYY-MM-DDTHH:MM:SS.ffffffZ`, so they sort as text):
- `events`: every event, signals and attributes as JSON; `event_id` is the primary key.
- `latest_signals`: the newest value per vehicle and VSS path; an older observation never
  overwrites a newer one.
- `vehicles`, `fleets`: vehicles and fleets seen, with access state from admin events.
- `active_dtcs`: trouble codes per vehicle and ECU after applying `can_dtc` diffs in time order.
- `charging_sessions`: one row per vehicle and session, replaced by newer versions.
- `quarantine`: undecodable input with its raw bytes, once per distinct payload.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from fleetstream.config.model import SqliteSinkConfig
from fleetstream.errors import RetryableSinkError
from fleetstream.normalize import vss
from fleetstream.normalize.model import VehicleEvent
from fleetstream.sinks import derive
from fleetstream.sinks.base import QuarantineRecord

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    event_id     TEXT PRIMARY KEY,
    vendor       TEXT NOT NULL,
    source       TEXT NOT NULL,
    type         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    vehicle_key  TEXT NOT NULL,
    vehicle_id   TEXT,
    vin          TEXT,
    fleet_id     TEXT,
    organization TEXT,
    occurred_at  TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    version      TEXT,
    signals      TEXT NOT NULL,
    attributes   TEXT NOT NULL,
    signal_times TEXT
);
CREATE INDEX IF NOT EXISTS events_vehicle_time ON events (vehicle_key, occurred_at);
CREATE INDEX IF NOT EXISTS events_type_time ON events (type, occurred_at);
CREATE TABLE IF NOT EXISTS latest_signals (
    vehicle_key TEXT NOT NULL,
    path        TEXT NOT NULL,
    value       TEXT NOT NULL,
    observed_at TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    PRIMARY KEY (vehicle_key, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vehicles (
    vehicle_key       TEXT PRIMARY KEY,
    vendor            TEXT NOT NULL,
    vehicle_id        TEXT,
    vin               TEXT,
    organization      TEXT,
    fleet_id          TEXT,
    fleet_changed_at  TEXT,
    access_state      TEXT,
    access_changed_at TEXT,
    first_seen_at     TEXT NOT NULL,
    last_event_at     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fleets (
    fleet_key         TEXT PRIMARY KEY,
    vendor            TEXT NOT NULL,
    organization      TEXT,
    fleet_id          TEXT NOT NULL,
    access_state      TEXT NOT NULL,
    access_changed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS active_dtcs (
    vehicle_key TEXT NOT NULL,
    ecu         TEXT NOT NULL,
    code        TEXT NOT NULL,
    status      TEXT,
    active      INTEGER NOT NULL,
    changed_at  TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    PRIMARY KEY (vehicle_key, ecu, code)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS charging_sessions (
    vehicle_key                 TEXT NOT NULL,
    session_id                  TEXT NOT NULL,
    event_id                    TEXT NOT NULL,
    version                     TEXT,
    start_time                  TEXT,
    end_time                    TEXT,
    charge_duration_secs        REAL,
    charged_energy_kwh          REAL,
    charged_soc_percent         REAL,
    outside_temperature_celsius REAL,
    latitude                    REAL,
    longitude                   REAL,
    charging_points             TEXT NOT NULL,
    occurred_at                 TEXT NOT NULL,
    received_at                 TEXT NOT NULL,
    PRIMARY KEY (vehicle_key, session_id)
);
CREATE TABLE IF NOT EXISTS quarantine (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    digest           TEXT NOT NULL UNIQUE,
    source           TEXT NOT NULL,
    decoder          TEXT NOT NULL,
    reason           TEXT NOT NULL,
    error            TEXT NOT NULL,
    raw              BLOB NOT NULL,
    metadata         TEXT NOT NULL,
    received_at      TEXT NOT NULL,
    last_received_at TEXT NOT NULL,
    occurrences      INTEGER NOT NULL DEFAULT 1
);
"""

_INSERT_EVENT: Final = """
INSERT INTO events (event_id, vendor, source, type, kind, vehicle_key, vehicle_id, vin, fleet_id,
                    organization, occurred_at, received_at, version, signals, attributes,
                    signal_times)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (event_id) DO UPDATE SET
    version = excluded.version, occurred_at = excluded.occurred_at,
    received_at = excluded.received_at, signals = excluded.signals,
    attributes = excluded.attributes, signal_times = excluded.signal_times
WHERE excluded.kind = 'entity' AND excluded.occurred_at >= events.occurred_at
"""

_UPSERT_LATEST: Final = """
INSERT INTO latest_signals (vehicle_key, path, value, observed_at, event_id) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (vehicle_key, path) DO UPDATE SET
    value = excluded.value, observed_at = excluded.observed_at, event_id = excluded.event_id
WHERE excluded.observed_at >= latest_signals.observed_at
"""

_UPSERT_VEHICLE: Final = """
INSERT INTO vehicles (vehicle_key, vendor, vehicle_id, vin, organization, fleet_id,
                      first_seen_at, last_event_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (vehicle_key) DO UPDATE SET
    vin = coalesce(excluded.vin, vehicles.vin),
    fleet_id = CASE WHEN vehicles.fleet_changed_at IS NULL
                    THEN coalesce(vehicles.fleet_id, excluded.fleet_id)
                    ELSE vehicles.fleet_id END,
    first_seen_at = min(vehicles.first_seen_at, excluded.first_seen_at),
    last_event_at = max(vehicles.last_event_at, excluded.last_event_at)
"""

_VEHICLE_ACCESS: Final = """
UPDATE vehicles SET access_state = ?, access_changed_at = ?
WHERE vehicle_key = ? AND (access_changed_at IS NULL OR access_changed_at <= ?)
"""

_FLEET_ACCESS: Final = """
INSERT INTO fleets (fleet_key, vendor, organization, fleet_id, access_state, access_changed_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (fleet_key) DO UPDATE SET
    access_state = excluded.access_state, access_changed_at = excluded.access_changed_at
WHERE excluded.access_changed_at >= fleets.access_changed_at
"""

_FLEET_JOIN: Final = """
UPDATE vehicles SET fleet_id = ?, fleet_changed_at = ?
WHERE vehicle_key = ? AND (fleet_changed_at IS NULL OR fleet_changed_at <= ?)
"""

_FLEET_LEAVE: Final = """
UPDATE vehicles SET fleet_id = NULL, fleet_changed_at = ?
WHERE vehicle_key = ? AND fleet_id = ? AND (fleet_changed_at IS NULL OR fleet_changed_at <= ?)
"""

_UPSERT_DTC: Final = """
INSERT INTO active_dtcs (vehicle_key, ecu, code, status, active, changed_at, event_id)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (vehicle_key, ecu, code) DO UPDATE SET
    status = excluded.status, active = excluded.active, changed_at = excluded.changed_at,
    event_id = excluded.event_id
WHERE excluded.changed_at >= active_dtcs.changed_at
"""

_UPSERT_SESSION: Final = """
INSERT INTO charging_sessions (vehicle_key, session_id, event_id, version, start_time, end_time,
    charge_duration_secs, charged_energy_kwh, charged_soc_percent, outside_temperature_celsius,
    latitude, longitude, charging_points, occurred_at, received_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (vehicle_key, session_id) DO UPDATE SET
    event_id = excluded.event_id, version = excluded.version, start_time = excluded.start_time,
    end_time = excluded.end_time, charge_duration_secs = excluded.charge_duration_secs,
    charged_energy_kwh = excluded.charged_energy_kwh,
    charged_soc_percent = excluded.charged_soc_percent,
    outside_temperature_celsius = excluded.outside_temperature_celsius,
    latitude = excluded.latitude, longitude = excluded.longitude,
    charging_points = excluded.charging_points, occurred_at = excluded.occurred_at,
    received_at = excluded.received_at
WHERE excluded.occurred_at >= charging_sessions.occurred_at
"""

_INSERT_QUARANTINE: Final = """
INSERT INTO quarantine (digest, source, decoder, reason, error, raw, metadata, received_at,
                        last_received_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (digest) DO UPDATE SET
    occurrences = quarantine.occurrences + 1, last_received_at = excluded.last_received_at
"""


def ts(value: datetime) -> str:
    """Fixed-width UTC text that sorts chronologically (years are always four digits)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class SqliteSink:
    def __init__(self, config: SqliteSinkConfig) -> None:
        self.name = config.name
        self._path = config.path
        self._busy_timeout_secs = config.busy_timeout_secs
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{self.name}")
        self._conn: sqlite3.Connection | None = None

    async def start(self) -> None:
        await self._run(self._open)

    async def write(
        self, events: Sequence[VehicleEvent], quarantine: Sequence[QuarantineRecord]
    ) -> None:
        try:
            await self._run(self._write, events, quarantine)
        except sqlite3.Error as exc:
            raise RetryableSinkError(f"sqlite sink {self.name}: {exc}") from exc

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # Everything below runs on the sink's worker thread. ------------------------------------

    def _open(self) -> None:
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout_secs,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        elif row[0] > SCHEMA_VERSION:
            conn.close()
            raise RuntimeError(
                f"{self._path} has schema version {row[0]}; this fleetstream knows up to "
                f"{SCHEMA_VERSION}: upgrade fleetstream"
            )
        self._conn = conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _write(
        self, events: Sequence[VehicleEvent], quarantine: Sequence[QuarantineRecord]
    ) -> None:
        conn = self._conn
        if conn is None:
            raise sqlite3.ProgrammingError("sink is not started")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if events:
                self._write_events(conn, events)
            if quarantine:
                conn.executemany(_INSERT_QUARANTINE, [_quarantine_row(q) for q in quarantine])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _write_events(self, conn: sqlite3.Connection, events: Sequence[VehicleEvent]) -> None:
        conn.executemany(_INSERT_EVENT, [_event_row(e) for e in events])
        conn.executemany(_UPSERT_VEHICLE, _vehicle_rows(events))
        conn.executemany(_UPSERT_LATEST, _latest_rows(events))
        dtc_vehicles: set[str] = set()
        for event in events:
            occurred = ts(event.occurred_at)
            change = derive.access_change(event)
            if isinstance(change, derive.VehicleAccessChange):
                conn.execute(
                    _VEHICLE_ACCESS, (change.state, occurred, change.vehicle_key, occurred)
                )
            elif isinstance(change, derive.FleetAccessChange):
                conn.execute(
                    _FLEET_ACCESS,
                    (
                        change.fleet_key,
                        change.vendor,
                        change.organization,
                        change.fleet_id,
                        change.state,
                        occurred,
                    ),
                )
            membership = derive.fleet_membership_change(event)
            if membership is not None and membership.fleet_id is not None:
                conn.execute(
                    _FLEET_JOIN, (membership.fleet_id, occurred, membership.vehicle_key, occurred)
                )
            elif membership is not None:
                conn.execute(
                    _FLEET_LEAVE,
                    (occurred, membership.vehicle_key, membership.left_fleet_id, occurred),
                )
            dtc = derive.dtc_change(event)
            if dtc is not None:
                conn.execute(
                    _UPSERT_DTC,
                    (
                        dtc.vehicle_key,
                        dtc.ecu,
                        dtc.code,
                        dtc.status,
                        int(dtc.active),
                        occurred,
                        event.event_id,
                    ),
                )
                dtc_vehicles.add(dtc.vehicle_key)
            if event.type == "charging_session" and event.kind == "entity":
                conn.execute(_UPSERT_SESSION, _session_row(event))
        for vehicle_key in dtc_vehicles:
            self._refresh_dtc_list(conn, vehicle_key)

    @staticmethod
    def _refresh_dtc_list(conn: sqlite3.Connection, vehicle_key: str) -> None:
        rows = conn.execute(
            "SELECT code, active, changed_at, event_id FROM active_dtcs WHERE vehicle_key = ?"
            " ORDER BY code",
            (vehicle_key,),
        ).fetchall()
        codes = sorted({code for code, active, _, _ in rows if active})
        _, _, changed_at, event_id = max(rows, key=lambda r: r[2])
        conn.execute(
            _UPSERT_LATEST, (vehicle_key, vss.DTC_LIST, _json(codes), changed_at, event_id)
        )


def _event_row(e: VehicleEvent) -> tuple[Any, ...]:
    v = e.vehicle
    return (
        e.event_id,
        e.vendor,
        e.source,
        e.type,
        e.kind,
        e.vehicle_key,
        v.vendor_id,
        v.vin,
        v.fleet_id,
        v.organization,
        ts(e.occurred_at),
        ts(e.received_at),
        e.version,
        _json(e.signals),
        _json(e.attributes),
        _json({k: ts(t) for k, t in e.signal_times.items()}) if e.signal_times else None,
    )


def _vehicle_rows(events: Iterable[VehicleEvent]) -> list[tuple[Any, ...]]:
    rows = []
    for e in events:
        if e.vehicle.vendor_id is None and e.vehicle.vin is None:
            continue  # fleet-level admin events name no vehicle
        occurred = ts(e.occurred_at)
        v = e.vehicle
        rows.append(
            (
                e.vehicle_key,
                e.vendor,
                v.vendor_id,
                v.vin,
                v.organization,
                v.fleet_id,
                occurred,
                occurred,
            )
        )
    return rows


def _latest_rows(events: Iterable[VehicleEvent]) -> list[tuple[Any, ...]]:
    rows = []
    for e in events:
        if not e.signals:
            continue
        key, default_time = e.vehicle_key, ts(e.occurred_at)
        for path, value in e.signals.items():
            observed = e.signal_times.get(path)
            rows.append(
                (key, path, _json(value), ts(observed) if observed else default_time, e.event_id)
            )
    return rows


def _session_row(e: VehicleEvent) -> tuple[Any, ...]:
    a = e.attributes
    return (
        e.vehicle_key,
        str(a.get("session_id")),
        e.event_id,
        e.version,
        a.get("start_time"),
        a.get("end_time"),
        _num(a.get("charge_duration_secs")),
        _num(a.get("charged_energy_kwh")),
        _num(a.get("charged_soc_percent")),
        _num(a.get("outside_temperature_celsius")),
        _num(e.signals.get(vss.LATITUDE)),
        _num(e.signals.get(vss.LONGITUDE)),
        _json(a.get("charging_points") or []),
        ts(e.occurred_at),
        ts(e.received_at),
    )


def _quarantine_row(q: QuarantineRecord) -> tuple[Any, ...]:
    received = ts(q.received_at)
    return (
        q.digest,
        q.source,
        q.decoder,
        q.reason,
        q.error,
        q.raw,
        _json(dict(q.metadata)),
        received,
        received,
    )
