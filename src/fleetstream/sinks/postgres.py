"""The PostgreSQL sink: the SQLite sink's tables in a server database that replicas share.

Tables (in the configured schema, times are `timestamptz`, documents `jsonb`, raw input `bytea`):
the same as the SQLite sink (`events`, `latest_signals`, `vehicles`, `fleets`, `active_dtcs`,
`charging_sessions`, `quarantine`) plus `signals`, one narrow row per signal observation, written
when `signals_table` is on. `schema_migrations` records the applied migrations.

Write path: each batch is one transaction on one pooled connection. The events, and the registry
changes `derive` computes from them, are sent with binary COPY into temporary staging tables the
connection created once (`ON COMMIT DELETE ROWS`, so every commit or rollback leaves them
empty). Then one `INSERT ... SELECT ... ON CONFLICT` (or `UPDATE ... FROM`) per target table merges
them with the SQLite sink's guards. `latest_signals`, `vehicles` and `signals` are computed in SQL
from the staged events, so the signals travel once. A statement may not touch one row twice, so
each merge first reduces the batch to one row per key, the one the SQLite sink's row-by-row
statements would have left standing (newest time, and among equal times the later in the batch).
The exception is fleet membership: a leave applies only to the fleet the vehicle is in at that
moment, so those changes depend on each other and run in batch order as one guarded `UPDATE`
each (`executemany`, pipelined); they are rare admin events.

Failures: any database or connection error rolls the transaction back and raises
`RetryableSinkError`; the pipeline retries and then refuses or redelivers. The pool drops a
connection that broke and opens a new one on the next `write`. A whole batch, connection
included, has `command_timeout_secs`. If the connection breaks during `COMMIT` the outcome is
unknown and the batch is retried, which the idempotent merges make safe (a quarantine row may
then count one occurrence too many).

Migrations (`postgres_migrations`): `start` applies the missing ones in order, one transaction
each, under a transaction-scoped advisory lock derived from the schema name, so replicas that
start together take turns; it refuses to start when the database is newer than this code.

TimescaleDB (`timescaledb: true`): when the extension is installed, or available and
`CREATE EXTENSION` works, `signals` becomes a hypertable on `observed_at`. `events` stays a plain
table: a hypertable needs its time column in every unique index, and `events` is keyed by
`event_id` alone because a newer version of an entity (a charging session) replaces the stored
row even though its `occurred_at` differs. Without the extension every table is plain.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped, unused-ignore]  # asyncpg ships no type hints
import orjson
import structlog

from fleetstream.config.model import PostgresSinkConfig
from fleetstream.errors import FatalError, RetryableSinkError
from fleetstream.normalize import vss
from fleetstream.normalize.model import VehicleEvent
from fleetstream.sinks import derive
from fleetstream.sinks.base import QuarantineRecord
from fleetstream.sinks.postgres_migrations import MIGRATIONS, Migration

log = structlog.get_logger("fleetstream.sinks.postgres")

DB_ERRORS: Final[tuple[type[BaseException], ...]] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # e.g. a statement sent on a connection the server just killed
    OSError,
    TimeoutError,
)
"""Errors that mean the database did not take the batch (server, protocol, network, time)."""

_CONNECTION_LOST: Final[tuple[type[BaseException], ...]] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash recovery, cancel
)


class SchemaVersionError(FatalError):
    """The database schema is newer than this fleetstream knows."""


# Staging tables, created once per connection. ---------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stage:
    table: str
    columns: tuple[tuple[str, str], ...]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]

    @property
    def ddl(self) -> str:
        columns = ", ".join(f"{name} {type_}" for name, type_ in self.columns)
        return f"CREATE TEMP TABLE {self.table} ({columns}) ON COMMIT DELETE ROWS;"


_STAGE_EVENTS: Final = _Stage(
    "fs_stage_events",
    (
        ("ord", "integer"),
        ("event_id", "text"),
        ("vendor", "text"),
        ("source", "text"),
        ("type", "text"),
        ("kind", "text"),
        ("vehicle_key", "text"),
        ("vehicle_id", "text"),
        ("vin", "text"),
        ("fleet_id", "text"),
        ("organization", "text"),
        ("occurred_at", "timestamptz"),
        ("received_at", "timestamptz"),
        ("version", "text"),
        ("signals", "jsonb"),
        ("attributes", "jsonb"),
        ("signal_times", "jsonb"),
    ),
)
_STAGE_VEHICLE_ACCESS: Final = _Stage(
    "fs_stage_vehicle_access",
    (("ord", "integer"), ("vehicle_key", "text"), ("state", "text"), ("changed_at", "timestamptz")),
)
_STAGE_FLEET_ACCESS: Final = _Stage(
    "fs_stage_fleet_access",
    (
        ("ord", "integer"),
        ("fleet_key", "text"),
        ("vendor", "text"),
        ("organization", "text"),
        ("fleet_id", "text"),
        ("state", "text"),
        ("changed_at", "timestamptz"),
    ),
)
_STAGE_DTCS: Final = _Stage(
    "fs_stage_dtcs",
    (
        ("ord", "integer"),
        ("vehicle_key", "text"),
        ("ecu", "text"),
        ("code", "text"),
        ("status", "text"),
        ("active", "boolean"),
        ("changed_at", "timestamptz"),
        ("event_id", "text"),
    ),
)
_STAGE_SESSIONS: Final = _Stage(
    "fs_stage_sessions",
    (
        ("ord", "integer"),
        ("vehicle_key", "text"),
        ("session_id", "text"),
        ("event_id", "text"),
        ("version", "text"),
        ("start_time", "timestamptz"),
        ("end_time", "timestamptz"),
        ("charge_duration_secs", "double precision"),
        ("charged_energy_kwh", "double precision"),
        ("charged_soc_percent", "double precision"),
        ("outside_temperature_celsius", "double precision"),
        ("latitude", "double precision"),
        ("longitude", "double precision"),
        ("charging_points", "jsonb"),
        ("occurred_at", "timestamptz"),
        ("received_at", "timestamptz"),
    ),
)
_STAGE_QUARANTINE: Final = _Stage(
    "fs_stage_quarantine",
    (
        ("ord", "integer"),
        ("digest", "text"),
        ("source", "text"),
        ("decoder", "text"),
        ("reason", "text"),
        ("error", "text"),
        ("raw", "bytea"),
        ("metadata", "jsonb"),
        ("received_at", "timestamptz"),
    ),
)
_STAGES: Final = (
    _STAGE_EVENTS,
    _STAGE_VEHICLE_ACCESS,
    _STAGE_FLEET_ACCESS,
    _STAGE_DTCS,
    _STAGE_SESSIONS,
    _STAGE_QUARANTINE,
)
_STAGING_DDL: Final = "\n".join(stage.ddl for stage in _STAGES)

# Merges, `{s}` is the quoted schema. ------------------------------------------------------

# Insert-or-ignore, except that an entity replaces the stored version when newer or as new.
# Within the batch: the first copy of an event, or the newest (then last) version of an entity.
_MERGE_EVENTS: Final = """
INSERT INTO {s}.events AS t (event_id, vendor, source, type, kind, vehicle_key, vehicle_id, vin,
    fleet_id, organization, occurred_at, received_at, version, signals, attributes, signal_times)
SELECT DISTINCT ON (event_id) event_id, vendor, source, type, kind, vehicle_key, vehicle_id, vin,
    fleet_id, organization, occurred_at, received_at, version, signals, attributes, signal_times
FROM pg_temp.fs_stage_events
ORDER BY event_id,
    CASE WHEN kind = 'entity' THEN occurred_at END DESC NULLS LAST,
    CASE WHEN kind = 'entity' THEN ord END DESC NULLS LAST,
    ord
ON CONFLICT (event_id) DO UPDATE SET
    version = excluded.version, occurred_at = excluded.occurred_at,
    received_at = excluded.received_at, signals = excluded.signals,
    attributes = excluded.attributes, signal_times = excluded.signal_times
WHERE excluded.kind = 'entity' AND excluded.occurred_at >= t.occurred_at
"""

# The vendor, ids and organization of the first event, the last VIN given, the first fleet
# given (kept only while no membership event has set the fleet), and the time span.
_MERGE_VEHICLES: Final = """
INSERT INTO {s}.vehicles AS t (vehicle_key, vendor, vehicle_id, vin, organization, fleet_id,
    first_seen_at, last_event_at)
SELECT vehicle_key,
    (array_agg(vendor ORDER BY ord))[1],
    (array_agg(vehicle_id ORDER BY ord))[1],
    (array_agg(vin ORDER BY ord DESC) FILTER (WHERE vin IS NOT NULL))[1],
    (array_agg(organization ORDER BY ord))[1],
    (array_agg(fleet_id ORDER BY ord) FILTER (WHERE fleet_id IS NOT NULL))[1],
    min(occurred_at), max(occurred_at)
FROM pg_temp.fs_stage_events
WHERE vehicle_id IS NOT NULL OR vin IS NOT NULL
GROUP BY vehicle_key
ORDER BY vehicle_key
ON CONFLICT (vehicle_key) DO UPDATE SET
    vin = coalesce(excluded.vin, t.vin),
    fleet_id = CASE WHEN t.fleet_changed_at IS NULL
                    THEN coalesce(t.fleet_id, excluded.fleet_id)
                    ELSE t.fleet_id END,
    first_seen_at = least(t.first_seen_at, excluded.first_seen_at),
    last_event_at = greatest(t.last_event_at, excluded.last_event_at)
"""

_OBSERVATIONS: Final = """
SELECT e.vehicle_key, sig.key AS path, sig.value, e.event_id, e.ord,
    coalesce((e.signal_times ->> sig.key)::timestamptz, e.occurred_at) AS observed_at
FROM pg_temp.fs_stage_events AS e, jsonb_each(e.signals) AS sig
"""

_MERGE_LATEST: Final = f"""
INSERT INTO {{s}}.latest_signals AS t (vehicle_key, path, value, observed_at, event_id)
SELECT DISTINCT ON (vehicle_key, path) vehicle_key, path, value, observed_at, event_id
FROM ({_OBSERVATIONS}) AS o
ORDER BY vehicle_key, path, observed_at DESC, ord DESC
ON CONFLICT (vehicle_key, path) DO UPDATE SET
    value = excluded.value, observed_at = excluded.observed_at, event_id = excluded.event_id
WHERE excluded.observed_at >= t.observed_at
"""

_MERGE_SIGNALS: Final = f"""
INSERT INTO {{s}}.signals (vehicle_key, path, observed_at, value, event_id)
SELECT vehicle_key, path, observed_at, value, event_id
FROM ({_OBSERVATIONS}) AS o
ORDER BY vehicle_key, path, observed_at, event_id
ON CONFLICT DO NOTHING
"""

_MERGE_VEHICLE_ACCESS: Final = """
UPDATE {s}.vehicles AS t SET access_state = a.state, access_changed_at = a.changed_at
FROM (
    SELECT DISTINCT ON (vehicle_key) vehicle_key, state, changed_at
    FROM pg_temp.fs_stage_vehicle_access
    ORDER BY vehicle_key, changed_at DESC, ord DESC
) AS a
WHERE t.vehicle_key = a.vehicle_key
  AND (t.access_changed_at IS NULL OR t.access_changed_at <= a.changed_at)
"""

_MERGE_FLEET_ACCESS: Final = """
INSERT INTO {s}.fleets AS t (fleet_key, vendor, organization, fleet_id, access_state,
    access_changed_at)
SELECT DISTINCT ON (fleet_key) fleet_key, vendor, organization, fleet_id, state, changed_at
FROM pg_temp.fs_stage_fleet_access
ORDER BY fleet_key, changed_at DESC, ord DESC
ON CONFLICT (fleet_key) DO UPDATE SET
    access_state = excluded.access_state, access_changed_at = excluded.access_changed_at
WHERE excluded.access_changed_at >= t.access_changed_at
"""

# One join ($2 set) or leave of fleet $3 ($2 NULL), as the SQLite sink's two statements.
_FLEET_MEMBERSHIP: Final = """
UPDATE {s}.vehicles SET fleet_id = $2::text, fleet_changed_at = $4
WHERE vehicle_key = $1
  AND (fleet_changed_at IS NULL OR fleet_changed_at <= $4)
  AND ($2::text IS NOT NULL OR fleet_id = $3::text)
"""

_MERGE_DTCS: Final = """
INSERT INTO {s}.active_dtcs AS t (vehicle_key, ecu, code, status, active, changed_at, event_id)
SELECT DISTINCT ON (vehicle_key, ecu, code)
    vehicle_key, ecu, code, status, active, changed_at, event_id
FROM pg_temp.fs_stage_dtcs
ORDER BY vehicle_key, ecu, code, changed_at DESC, ord DESC
ON CONFLICT (vehicle_key, ecu, code) DO UPDATE SET
    status = excluded.status, active = excluded.active, changed_at = excluded.changed_at,
    event_id = excluded.event_id
WHERE excluded.changed_at >= t.changed_at
"""

# DTCList of every vehicle the batch touched: its active codes in code-point order, dated by
# its most recent change.
_REFRESH_DTC_LIST: Final = """
INSERT INTO {s}.latest_signals AS t (vehicle_key, path, value, observed_at, event_id)
SELECT v.vehicle_key, $1::text, codes.list, newest.changed_at, newest.event_id
FROM (SELECT DISTINCT vehicle_key FROM pg_temp.fs_stage_dtcs) AS v
CROSS JOIN LATERAL (
    SELECT coalesce(jsonb_agg(c.code ORDER BY c.code COLLATE "C"), '[]'::jsonb) AS list
    FROM (
        SELECT DISTINCT code FROM {s}.active_dtcs WHERE vehicle_key = v.vehicle_key AND active
    ) AS c
) AS codes
CROSS JOIN LATERAL (
    SELECT changed_at, event_id FROM {s}.active_dtcs WHERE vehicle_key = v.vehicle_key
    ORDER BY changed_at DESC, code COLLATE "C", ecu COLLATE "C"
    LIMIT 1
) AS newest
ORDER BY v.vehicle_key
ON CONFLICT (vehicle_key, path) DO UPDATE SET
    value = excluded.value, observed_at = excluded.observed_at, event_id = excluded.event_id
WHERE excluded.observed_at >= t.observed_at
"""

_MERGE_SESSIONS: Final = """
INSERT INTO {s}.charging_sessions AS t (vehicle_key, session_id, event_id, version, start_time,
    end_time, charge_duration_secs, charged_energy_kwh, charged_soc_percent,
    outside_temperature_celsius, latitude, longitude, charging_points, occurred_at, received_at)
SELECT DISTINCT ON (vehicle_key, session_id) vehicle_key, session_id, event_id, version,
    start_time, end_time, charge_duration_secs, charged_energy_kwh, charged_soc_percent,
    outside_temperature_celsius, latitude, longitude, charging_points, occurred_at, received_at
FROM pg_temp.fs_stage_sessions
ORDER BY vehicle_key, session_id, occurred_at DESC, ord DESC
ON CONFLICT (vehicle_key, session_id) DO UPDATE SET
    event_id = excluded.event_id, version = excluded.version, start_time = excluded.start_time,
    end_time = excluded.end_time, charge_duration_secs = excluded.charge_duration_secs,
    charged_energy_kwh = excluded.charged_energy_kwh,
    charged_soc_percent = excluded.charged_soc_percent,
    outside_temperature_celsius = excluded.outside_temperature_celsius,
    latitude = excluded.latitude, longitude = excluded.longitude,
    charging_points = excluded.charging_points, occurred_at = excluded.occurred_at,
    received_at = excluded.received_at
WHERE excluded.occurred_at >= t.occurred_at
"""

# Once per digest: the first record's fields, the last record's time, one occurrence per record.
_MERGE_QUARANTINE: Final = """
INSERT INTO {s}.quarantine AS t (digest, source, decoder, reason, error, raw, metadata,
    received_at, last_received_at, occurrences)
SELECT f.digest, f.source, f.decoder, f.reason, f.error, f.raw, f.metadata, f.received_at,
    l.received_at, g.n
FROM (
    SELECT digest, count(*) AS n, min(ord) AS first_ord, max(ord) AS last_ord
    FROM pg_temp.fs_stage_quarantine GROUP BY digest
) AS g
JOIN pg_temp.fs_stage_quarantine AS f ON f.ord = g.first_ord
JOIN pg_temp.fs_stage_quarantine AS l ON l.ord = g.last_ord
ORDER BY g.first_ord
ON CONFLICT (digest) DO UPDATE SET
    occurrences = t.occurrences + excluded.occurrences,
    last_received_at = excluded.last_received_at
"""


@dataclass(frozen=True, slots=True)
class _Statements:
    events: str
    vehicles: str
    latest: str
    signals: str
    vehicle_access: str
    fleet_access: str
    fleet_membership: str
    dtcs: str
    dtc_list: str
    sessions: str
    quarantine: str

    @classmethod
    def for_schema(cls, schema: str) -> _Statements:
        s = quote_ident(schema)
        return cls(
            events=_MERGE_EVENTS.format(s=s),
            vehicles=_MERGE_VEHICLES.format(s=s),
            latest=_MERGE_LATEST.format(s=s),
            signals=_MERGE_SIGNALS.format(s=s),
            vehicle_access=_MERGE_VEHICLE_ACCESS.format(s=s),
            fleet_access=_MERGE_FLEET_ACCESS.format(s=s),
            fleet_membership=_FLEET_MEMBERSHIP.format(s=s),
            dtcs=_MERGE_DTCS.format(s=s),
            dtc_list=_REFRESH_DTC_LIST.format(s=s),
            sessions=_MERGE_SESSIONS.format(s=s),
            quarantine=_MERGE_QUARANTINE.format(s=s),
        )


# The sink. --------------------------------------------------------------------------------


class PostgresSink:
    def __init__(
        self, config: PostgresSinkConfig, *, migrations: Sequence[Migration] = MIGRATIONS
    ) -> None:
        """`migrations` is for tests that build an older schema; the daemon uses them all."""
        self.name = config.name
        self.schema = config.db_schema
        self.application_name = f"fleetstream-{config.name}"
        self.hypertables: tuple[str, ...] = ()
        """Tables made TimescaleDB hypertables at start (empty without TimescaleDB)."""
        self._dsn = config.dsn.get_secret_value()
        self._where = describe_dsn(self._dsn)
        self._pool_max_size = config.pool_max_size
        self._timeout = config.command_timeout_secs
        self._signals_table = config.signals_table
        self._timescaledb = config.timescaledb
        self._migrations = tuple(migrations)
        self._sql = _Statements.for_schema(config.db_schema)
        self._pool: Any = None

    async def start(self) -> None:
        settings = {"application_name": self.application_name}
        try:
            conn = await asyncpg.connect(
                self._dsn, timeout=self._timeout, command_timeout=None, server_settings=settings
            )
        except DB_ERRORS as exc:
            raise FatalError(
                f"postgres sink {self.name}: cannot connect to {self._where}: {_text_of(exc)}"
            ) from exc
        try:
            applied = await migrate(conn, self.schema, self._migrations)
            self.hypertables = await self._make_hypertables(conn)
        except SchemaVersionError as exc:
            raise SchemaVersionError(f"postgres sink {self.name} on {self._where}: {exc}") from exc
        except DB_ERRORS as exc:
            raise FatalError(
                f"postgres sink {self.name}: cannot prepare schema {self.schema} on "
                f"{self._where}: {_text_of(exc)}"
            ) from exc
        finally:
            await _close_quietly(conn, self._timeout)
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_max_size,
                timeout=self._timeout,
                command_timeout=self._timeout,
                server_settings=settings,
                init=_create_staging_tables,
            )
        except DB_ERRORS as exc:
            raise FatalError(
                f"postgres sink {self.name}: cannot open the connection pool to "
                f"{self._where}: {_text_of(exc)}"
            ) from exc
        log.info(
            "postgres_sink_started",
            sink=self.name,
            server=self._where,
            schema=self.schema,
            schema_version=self._migrations[-1].version if self._migrations else 0,
            migrations_applied=applied,
            hypertables=list(self.hypertables),
            signals_table=self._signals_table,
        )

    async def write(
        self, events: Sequence[VehicleEvent], quarantine: Sequence[QuarantineRecord]
    ) -> None:
        if not events and not quarantine:
            return
        pool = self._pool
        if pool is None:
            raise RetryableSinkError(f"postgres sink {self.name}: sink is not started")
        rows = _rows(events, quarantine)
        deadline = _Deadline(self._timeout)
        try:
            async with pool.acquire(timeout=deadline.left()) as conn:
                try:
                    async with conn.transaction():
                        await self._apply(conn, rows, deadline)
                except BaseException as exc:
                    if not _reusable_after(exc):
                        # The pool replaces it and the server rolls back. A connection that
                        # closed itself is already detached from the pool.
                        with contextlib.suppress(asyncpg.InterfaceError):
                            conn.terminate()
                    raise
        except DB_ERRORS as exc:
            raise RetryableSinkError(f"postgres sink {self.name}: {_text_of(exc)}") from exc

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self._timeout)
        except DB_ERRORS:
            pool.terminate()

    async def _apply(self, conn: Any, rows: _Rows, deadline: _Deadline) -> None:
        sql = self._sql

        async def stage(stage: _Stage, records: list[tuple[Any, ...]]) -> None:
            await conn.copy_records_to_table(
                stage.table,
                records=records,
                columns=stage.names,
                schema_name="pg_temp",
                timeout=deadline.left(),
            )

        if rows.events:
            await stage(_STAGE_EVENTS, rows.events)
            await conn.execute(sql.events, timeout=deadline.left())
            await conn.execute(sql.vehicles, timeout=deadline.left())
            await conn.execute(sql.latest, timeout=deadline.left())
            if self._signals_table:
                await conn.execute(sql.signals, timeout=deadline.left())
        if rows.vehicle_access:
            await stage(_STAGE_VEHICLE_ACCESS, rows.vehicle_access)
            await conn.execute(sql.vehicle_access, timeout=deadline.left())
        if rows.fleet_access:
            await stage(_STAGE_FLEET_ACCESS, rows.fleet_access)
            await conn.execute(sql.fleet_access, timeout=deadline.left())
        if rows.fleet_membership:
            await conn.executemany(
                sql.fleet_membership, rows.fleet_membership, timeout=deadline.left()
            )
        if rows.dtcs:
            await stage(_STAGE_DTCS, rows.dtcs)
            await conn.execute(sql.dtcs, timeout=deadline.left())
            await conn.execute(sql.dtc_list, vss.DTC_LIST, timeout=deadline.left())
        if rows.sessions:
            await stage(_STAGE_SESSIONS, rows.sessions)
            await conn.execute(sql.sessions, timeout=deadline.left())
        if rows.quarantine:
            await stage(_STAGE_QUARANTINE, rows.quarantine)
            await conn.execute(sql.quarantine, timeout=deadline.left())

    async def _make_hypertables(self, conn: Any) -> tuple[str, ...]:
        """Make `signals` a hypertable when asked to and TimescaleDB can be had."""
        if not self._timescaledb:
            return ()
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", migration_lock_key(self.schema))
            extension_schema = await conn.fetchval(_TIMESCALEDB_SCHEMA)
            if extension_schema is None:
                if not await conn.fetchval(_TIMESCALEDB_AVAILABLE):
                    log.info("postgres_timescaledb_absent", sink=self.name, tables="plain")
                    return ()
                try:
                    async with conn.transaction():
                        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                except asyncpg.PostgresError as exc:
                    log.warning(
                        "postgres_timescaledb_unusable",
                        sink=self.name,
                        tables="plain",
                        error=_text_of(exc),
                    )
                    return ()
                extension_schema = await conn.fetchval(_TIMESCALEDB_SCHEMA)
            await conn.execute(
                f"SELECT {quote_ident(str(extension_schema))}.create_hypertable("
                "$1::text::regclass, $2::name, if_not_exists => TRUE, migrate_data => TRUE)",
                f"{quote_ident(self.schema)}.signals",
                "observed_at",
            )
        return ("signals",)


_TIMESCALEDB_SCHEMA: Final = """
SELECT n.nspname FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
WHERE e.extname = 'timescaledb'
"""
_TIMESCALEDB_AVAILABLE: Final = (
    "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
)


def _reusable_after(exc: BaseException) -> bool:
    """Whether a connection is known to be sound after `exc`: only when the server reported an
    ordinary error (the transaction was rolled back and the session goes on). After a network,
    protocol, timeout or cancellation error its state is unknown, so it is not given back."""
    return isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, _CONNECTION_LOST)


async def _close_quietly(conn: Any, limit_secs: float) -> None:
    try:
        await conn.close(timeout=limit_secs)
    except DB_ERRORS:
        conn.terminate()


async def _create_staging_tables(conn: Any) -> None:
    """Pool `init`: runs once on every new connection."""
    await conn.execute(_STAGING_DDL)


class _Deadline:
    """What is left of a batch's time budget, for each statement's `timeout`."""

    def __init__(self, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._seconds = seconds
        self._end = self._loop.time() + seconds

    def left(self) -> float:
        remaining = self._end - self._loop.time()
        if remaining <= 0:
            raise TimeoutError(f"batch took longer than {self._seconds:g} s")
        return remaining


# Migrations. ------------------------------------------------------------------------------


def migration_lock_key(schema: str) -> int:
    """The advisory lock (a signed 64-bit key) that serialises schema changes of `schema`."""
    digest = hashlib.sha256(f"fleetstream-postgres-schema:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def migrate(
    conn: Any, schema: str, migrations: Sequence[Migration] = MIGRATIONS
) -> list[int]:
    """Bring `schema` up to the newest of `migrations`; return the versions applied now.

    One transaction per migration, each holding the schema's advisory lock: a replica that
    starts at the same time waits, then finds the work done. Raises `SchemaVersionError` when the
    database has a version newer than the newest migration given.
    """
    known = migrations[-1].version if migrations else 0
    key = migration_lock_key(schema)
    s = quote_ident(schema)
    applied: list[int] = []
    while True:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", key)
            # Checked first: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege on the
            # database even when the schema exists (an operator may have made it for us).
            if not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema
            ):
                await conn.execute(f"CREATE SCHEMA {s}")
            if not await conn.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", f"{s}.schema_migrations"
            ):
                await conn.execute(
                    f"CREATE TABLE {s}.schema_migrations ("
                    "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
            current = int(
                await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {s}.schema_migrations")
            )
            if current > known:
                raise SchemaVersionError(
                    f"schema {schema} is at version {current}; this fleetstream knows up to "
                    f"version {known}: upgrade fleetstream (or use another db_schema)"
                )
            pending = [m for m in migrations if m.version > current]
            if not pending:
                return applied
            step = pending[0]
            await conn.execute(f"SET LOCAL search_path TO {s}")
            await conn.execute(step.sql)
            await conn.execute(
                f"INSERT INTO {s}.schema_migrations (version) VALUES ($1)", step.version
            )
        applied.append(step.version)
        log.info(
            "postgres_migration_applied",
            schema=schema,
            version=step.version,
            description=step.description,
        )


# Rows. ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Rows:
    events: list[tuple[Any, ...]] = field(default_factory=list)
    vehicle_access: list[tuple[Any, ...]] = field(default_factory=list)
    fleet_access: list[tuple[Any, ...]] = field(default_factory=list)
    fleet_membership: list[tuple[Any, ...]] = field(default_factory=list)
    dtcs: list[tuple[Any, ...]] = field(default_factory=list)
    sessions: list[tuple[Any, ...]] = field(default_factory=list)
    quarantine: list[tuple[Any, ...]] = field(default_factory=list)


def _rows(events: Sequence[VehicleEvent], quarantine: Sequence[QuarantineRecord]) -> _Rows:
    """Staging rows; `ord`, each row's position in the batch, breaks ties as batch order does."""
    rows = _Rows()
    for ord_, e in enumerate(events):
        rows.events.append(_event_row(ord_, e))
        occurred = e.occurred_at
        change = derive.access_change(e)
        if isinstance(change, derive.VehicleAccessChange):
            rows.vehicle_access.append((ord_, _text(change.vehicle_key), change.state, occurred))
        elif isinstance(change, derive.FleetAccessChange):
            rows.fleet_access.append(
                (
                    ord_,
                    _text(change.fleet_key),
                    _text(change.vendor),
                    _opt_text(change.organization),
                    _text(change.fleet_id),
                    change.state,
                    occurred,
                )
            )
        membership = derive.fleet_membership_change(e)
        if membership is not None:
            rows.fleet_membership.append(
                (
                    _text(membership.vehicle_key),
                    _opt_text(membership.fleet_id),
                    _opt_text(membership.left_fleet_id),
                    occurred,
                )
            )
        dtc = derive.dtc_change(e)
        if dtc is not None:
            rows.dtcs.append(
                (
                    ord_,
                    _text(dtc.vehicle_key),
                    _text(dtc.ecu),
                    _text(dtc.code),
                    _opt_text(dtc.status),
                    dtc.active,
                    occurred,
                    _text(e.event_id),
                )
            )
        if e.type == "charging_session" and e.kind == "entity":
            rows.sessions.append(_session_row(ord_, e))
    rows.quarantine = [_quarantine_row(ord_, q) for ord_, q in enumerate(quarantine)]
    return rows


def _event_row(ord_: int, e: VehicleEvent) -> tuple[Any, ...]:
    v = e.vehicle
    return (
        ord_,
        _text(e.event_id),
        _text(e.vendor),
        _text(e.source),
        _text(e.type),
        e.kind,
        _text(e.vehicle_key),
        _opt_text(v.vendor_id),
        _opt_text(v.vin),
        _opt_text(v.fleet_id),
        _opt_text(v.organization),
        e.occurred_at,
        e.received_at,
        _opt_text(e.version),
        _jsonb(_plain(e.signals)),
        _jsonb(_plain(e.attributes)),
        _jsonb({k: ts(t) for k, t in e.signal_times.items()}) if e.signal_times else None,
    )


def _session_row(ord_: int, e: VehicleEvent) -> tuple[Any, ...]:
    a = e.attributes
    return (
        ord_,
        _text(e.vehicle_key),
        _text(str(a.get("session_id"))),
        _text(e.event_id),
        _opt_text(e.version),
        _time(a.get("start_time")),
        _time(a.get("end_time")),
        _num(a.get("charge_duration_secs")),
        _num(a.get("charged_energy_kwh")),
        _num(a.get("charged_soc_percent")),
        _num(a.get("outside_temperature_celsius")),
        _num(e.signals.get(vss.LATITUDE)),
        _num(e.signals.get(vss.LONGITUDE)),
        _jsonb(a.get("charging_points") or []),
        e.occurred_at,
        e.received_at,
    )


def _quarantine_row(ord_: int, q: QuarantineRecord) -> tuple[Any, ...]:
    return (
        ord_,
        q.digest,
        _text(q.source),
        _text(q.decoder),
        _text(q.reason),
        _text(q.error),
        q.raw,
        _jsonb(dict(q.metadata)),
        q.received_at,
    )


# Values. ----------------------------------------------------------------------------------

# PostgreSQL text cannot hold NUL and jsonb rejects the escape `\u0000`; a batch carrying one
# would fail on every retry and stall its sources, so NUL is stored as U+FFFD instead.
_NUL: Final = "\x00"
_NUL_ESCAPE: Final = re.compile(r"(\\+)u0000")


def _text(value: str) -> str:
    return value.replace(_NUL, "\ufffd") if _NUL in value else value


def _opt_text(value: str | None) -> str | None:
    return None if value is None else _text(value)


def _unescape_nul(match: re.Match[str]) -> str:
    slashes = match.group(1)
    # An odd run of backslashes ends in the one that starts the escape; an even run is literal.
    return slashes + ("ufffd" if len(slashes) % 2 else "u0000")


def _jsonb(value: Any) -> str:
    text = orjson.dumps(value, default=str).decode()
    return _NUL_ESCAPE.sub(_unescape_nul, text) if "\\u0000" in text else text


def _plain(value: Mapping[str, Any]) -> dict[str, Any]:
    return value if isinstance(value, dict) else dict(value)


def ts(value: datetime) -> str:
    """Fixed-width UTC text, as the per-signal times inside the `signal_times` document."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _time(value: Any) -> datetime | None:
    """An RFC 3339 attribute as a time; anything else is NULL (the event keeps the original)."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def describe_dsn(dsn: str) -> str:
    """`host:port/database` of a DSN, without user or password, for messages."""
    try:
        parts = urlsplit(dsn)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "the configured PostgreSQL server"
    database = parts.path.lstrip("/") or "(default database)"
    return f"{host or 'localhost'}:{port or 5432}/{database}"


def _text_of(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
