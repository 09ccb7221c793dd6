"""The narrow `signals` table and the indexes for per-vehicle and quarantine time queries."""

from __future__ import annotations

from typing import Final

VERSION: Final = 2
DESCRIPTION: Final = "signals table; indexes on events (vehicle_key, occurred_at), quarantine"

# `signals` has its time column in the primary key, so TimescaleDB can make it a hypertable.
SQL: Final = """
CREATE TABLE signals (
    vehicle_key text NOT NULL,
    path        text NOT NULL,
    observed_at timestamptz NOT NULL,
    value       jsonb NOT NULL,
    event_id    text NOT NULL,
    PRIMARY KEY (vehicle_key, path, observed_at, event_id)
);
COMMENT ON TABLE signals IS
    'fleetstream: one row per signal observation, written when the sink has signals_table: true';

CREATE INDEX events_vehicle_time ON events (vehicle_key, occurred_at);
CREATE INDEX quarantine_received_at ON quarantine (received_at);
"""
