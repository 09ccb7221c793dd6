"""Versioned schema migrations of the PostgreSQL sink.

Each migration is a module `vNNNN_<what>.py` holding `VERSION`, `DESCRIPTION` and `SQL`, listed
in `MIGRATIONS` in order. The sink applies every migration newer than the version recorded in
`<schema>.schema_migrations`, one transaction each, with `search_path` set to the sink's schema
(so the SQL names tables without a schema). Never edit a released migration: add the next one.

Each migration runs inside a transaction, so statements that cannot (`CREATE INDEX
CONCURRENTLY`, `ALTER TYPE ... ADD VALUE` on old servers) do not belong here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from fleetstream.sinks.postgres_migrations import v0001_initial, v0002_signals_and_indexes


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    sql: str


MIGRATIONS: Final[tuple[Migration, ...]] = tuple(
    Migration(m.VERSION, m.DESCRIPTION, m.SQL) for m in (v0001_initial, v0002_signals_and_indexes)
)

if [m.version for m in MIGRATIONS] != list(range(1, len(MIGRATIONS) + 1)):
    raise RuntimeError("postgres migrations must be numbered 1, 2, 3, ... without gaps")
