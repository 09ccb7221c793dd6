"""Seen ids in PostgreSQL, shared by every replica pointed at the same database and schema.

Table `{db_schema}.seen (key text PRIMARY KEY, seen_at timestamptz)`, created at start together
with its schema. Times come from the database server's clock, so replicas with skewed clocks
still agree on the window. `unseen` is one `SELECT ... WHERE key = ANY($1)`; `mark_seen` is one
upsert of the whole batch. Rows older than the window are deleted by a background task every
`PRUNE_EVERY_SECS`, in chunks that skip rows another session holds, so pruning neither slows a
batch nor deadlocks with a replica's upsert.

Semantics, as in the Redis store (see `dedupe_redis`): a key counts as seen only once some
replica's `mark_seen` stored it, which the pipeline calls after every sink committed the event.
`unseen` only reads and claims nothing, because a claim would let another replica drop a copy
of an event whose write then fails or dies with its replica: that copy would be acked unwritten
and lost. So two replicas that get the same event at the same moment may both write it, and
the sinks' unique keys keep one copy; no replica skips an event that was not stored.

Errors surface as asyncpg or OS exceptions; the pipeline writes the whole batch when `unseen`
fails and only logs a failed `mark_seen`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import structlog

from fleetstream.config.model import PostgresDedupeConfig

log = structlog.get_logger("fleetstream.dedupe")

APPLICATION_NAME: Final = "fleetstream-dedupe"
"""Shown in `pg_stat_activity`, so an operator can tell fleetstream's sessions apart."""

PRUNE_EVERY_SECS: Final = 60.0
"""How often each replica deletes rows older than the window."""

PRUNE_CHUNK_ROWS: Final = 10_000
"""Rows deleted per statement, so one prune never holds many row locks for long."""

COMMAND_TIMEOUT_SECS: Final = 30.0
POOL_MAX_SIZE: Final = 2
"""One batch is deduped at a time; the second connection serves the prune task."""

_DDL_ATTEMPTS: Final = 3


class PostgresDedupe:
    def __init__(
        self, config: PostgresDedupeConfig, prune_every_secs: float = PRUNE_EVERY_SECS
    ) -> None:
        self._dsn = config.dsn.get_secret_value()
        self._window = config.window_secs
        self._prune_every = prune_every_secs
        table = f'"{config.db_schema}".seen'
        self._ddl = (
            f'CREATE SCHEMA IF NOT EXISTS "{config.db_schema}";'
            f" CREATE TABLE IF NOT EXISTS {table}"
            " (key text PRIMARY KEY, seen_at timestamptz NOT NULL);"
            f" CREATE INDEX IF NOT EXISTS seen_seen_at ON {table} (seen_at)"
        )
        self._select = (
            f"SELECT key FROM {table}"
            " WHERE key = ANY($1::text[]) AND seen_at >= now() - make_interval(secs => $2)"
        )
        # Sorted, distinct keys: an upsert may not touch a row twice, and two replicas marking
        # overlapping batches lock the rows in the same order, so they cannot deadlock.
        self._upsert = (
            f"INSERT INTO {table} AS s (key, seen_at)"
            " SELECT key, now() FROM unnest($1::text[]) AS k(key)"
            " ON CONFLICT (key) DO UPDATE SET seen_at = greatest(s.seen_at, excluded.seen_at)"
        )
        self._prune = (
            f"DELETE FROM {table} WHERE key IN (SELECT key FROM {table}"
            " WHERE seen_at < now() - make_interval(secs => $1)"
            " LIMIT $2 FOR UPDATE SKIP LOCKED)"
        )
        self._pool: asyncpg.Pool[Any] | None = None
        self._prune_task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Connect, create the schema and table if missing, and start pruning."""
        self._check_open()
        pool = await asyncpg.create_pool(
            self._dsn,
            min_size=1,
            max_size=POOL_MAX_SIZE,
            command_timeout=COMMAND_TIMEOUT_SECS,
            server_settings={"application_name": APPLICATION_NAME},
        )
        try:
            await self._create_table(pool)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        self._prune_task = asyncio.create_task(self._prune_loop(), name="postgres-dedupe-prune")

    async def unseen(self, keys: Sequence[str]) -> set[str]:
        pool = self._connected()
        unique = set(keys)
        if not unique:
            return set()
        rows = await pool.fetch(self._select, list(unique), self._window)
        return unique - {row["key"] for row in rows}

    async def mark_seen(self, keys: Sequence[str]) -> None:
        pool = self._connected()
        unique = sorted(set(keys))
        if unique:
            await pool.execute(self._upsert, unique)

    async def prune(self) -> int:
        """Delete the rows older than the window; returns how many went."""
        pool = self._connected()
        deleted = 0
        while True:
            status = await pool.execute(self._prune, self._window, PRUNE_CHUNK_ROWS)
            count = int(status.rsplit(" ", 1)[-1])
            deleted += count
            if count < PRUNE_CHUNK_ROWS:
                return deleted

    async def close(self) -> None:
        self._closed = True
        task, self._prune_task = self._prune_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _create_table(self, pool: asyncpg.Pool[Any]) -> None:
        # Replicas starting together race on `IF NOT EXISTS`: the loser of a concurrent
        # CREATE gets a unique violation on the catalog, and a second try finds the object.
        for attempt in range(1, _DDL_ATTEMPTS + 1):
            try:
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute(self._ddl)
                return
            except asyncpg.UniqueViolationError:
                if attempt == _DDL_ATTEMPTS:
                    raise

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(self._prune_every)
            try:
                deleted = await self.prune()
            except Exception as exc:
                log.warning("dedupe_prune_failed", error=str(exc), error_type=type(exc).__name__)
            else:
                if deleted:
                    log.debug("dedupe_pruned", rows=deleted)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the PostgreSQL dedupe store is closed")

    def _connected(self) -> asyncpg.Pool[Any]:
        self._check_open()
        if self._pool is None:
            raise RuntimeError("the PostgreSQL dedupe store is not started")
        return self._pool
