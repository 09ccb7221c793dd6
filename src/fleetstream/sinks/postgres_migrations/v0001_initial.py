"""The tables of the SQLite sink, with PostgreSQL types."""

from __future__ import annotations

from typing import Final

VERSION: Final = 1
DESCRIPTION: Final = "the tables of the SQLite sink"

SQL: Final = """
CREATE TABLE events (
    event_id     text PRIMARY KEY,
    vendor       text NOT NULL,
    source       text NOT NULL,
    type         text NOT NULL,
    kind         text NOT NULL,
    vehicle_key  text NOT NULL,
    vehicle_id   text,
    vin          text,
    fleet_id     text,
    organization text,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    version      text,
    signals      jsonb NOT NULL,
    attributes   jsonb NOT NULL,
    signal_times jsonb
);
CREATE INDEX events_type_time ON events (type, occurred_at);
COMMENT ON TABLE events IS
    'fleetstream: every event; an entity event (kind = entity) is replaced by newer versions';

CREATE TABLE latest_signals (
    vehicle_key text NOT NULL,
    path        text NOT NULL,
    value       jsonb NOT NULL,
    observed_at timestamptz NOT NULL,
    event_id    text NOT NULL,
    PRIMARY KEY (vehicle_key, path)
) WITH (fillfactor = 80);
COMMENT ON TABLE latest_signals IS
    'fleetstream: newest value per vehicle and VSS path; an older observation never overwrites';

CREATE TABLE vehicles (
    vehicle_key       text PRIMARY KEY,
    vendor            text NOT NULL,
    vehicle_id        text,
    vin               text,
    organization      text,
    fleet_id          text,
    fleet_changed_at  timestamptz,
    access_state      text,
    access_changed_at timestamptz,
    first_seen_at     timestamptz NOT NULL,
    last_event_at     timestamptz NOT NULL
) WITH (fillfactor = 80);

CREATE TABLE fleets (
    fleet_key         text PRIMARY KEY,
    vendor            text NOT NULL,
    organization      text,
    fleet_id          text NOT NULL,
    access_state      text NOT NULL,
    access_changed_at timestamptz NOT NULL
);

CREATE TABLE active_dtcs (
    vehicle_key text NOT NULL,
    ecu         text NOT NULL,
    code        text NOT NULL,
    status      text,
    active      boolean NOT NULL,
    changed_at  timestamptz NOT NULL,
    event_id    text NOT NULL,
    PRIMARY KEY (vehicle_key, ecu, code)
);

CREATE TABLE charging_sessions (
    vehicle_key                 text NOT NULL,
    session_id                  text NOT NULL,
    event_id                    text NOT NULL,
    version                     text,
    start_time                  timestamptz,
    end_time                    timestamptz,
    charge_duration_secs        double precision,
    charged_energy_kwh          double precision,
    charged_soc_percent         double precision,
    outside_temperature_celsius double precision,
    latitude                    double precision,
    longitude                   double precision,
    charging_points             jsonb NOT NULL,
    occurred_at                 timestamptz NOT NULL,
    received_at                 timestamptz NOT NULL,
    PRIMARY KEY (vehicle_key, session_id)
);

CREATE TABLE quarantine (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    digest           text NOT NULL UNIQUE,
    source           text NOT NULL,
    decoder          text NOT NULL,
    reason           text NOT NULL,
    error            text NOT NULL,
    raw              bytea NOT NULL,
    metadata         jsonb NOT NULL,
    received_at      timestamptz NOT NULL,
    last_received_at timestamptz NOT NULL,
    occurrences      integer NOT NULL DEFAULT 1
);
COMMENT ON TABLE quarantine IS
    'fleetstream: undecodable input with its raw bytes, once per source and payload (digest)';
"""
