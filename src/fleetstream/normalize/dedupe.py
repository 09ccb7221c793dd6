"""Dedupe stores: which event ids were already written.

The pipeline asks `unseen` before writing and calls `mark_seen` only after every sink committed.
Marking before writing would lose an event on a crash between the two; marking after means a
crash can at worst write an event twice, which the sinks' unique keys absorb. Dedupe is an
optimisation in front of idempotent sinks, never the guarantee itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

from fleetstream.config.model import (
    DedupeConfig,
    MemoryDedupeConfig,
    NoDedupeConfig,
    PostgresDedupeConfig,
    RedisDedupeConfig,
    SqliteDedupeConfig,
)

_SQL_CHUNK = 500
_T = TypeVar("_T")


class DedupeStore(Protocol):
    async def start(self) -> None: ...

    async def unseen(self, keys: Sequence[str]) -> set[str]:
        """The subset of `keys` not seen within the window."""
        ...

    async def mark_seen(self, keys: Sequence[str]) -> None: ...

    async def close(self) -> None: ...


class NoDedupe:
    async def start(self) -> None:
        return None

    async def unseen(self, keys: Sequence[str]) -> set[str]:
        return set(keys)

    async def mark_seen(self, keys: Sequence[str]) -> None:
        return None

    async def close(self) -> None:
        return None


class MemoryDedupe:
    """Bounded LRU with a time window. Lost on restart; the sinks still drop duplicates."""

    def __init__(
        self, config: MemoryDedupeConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window = config.window_secs
        self._max_keys = config.max_keys
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    async def start(self) -> None:
        return None

    async def unseen(self, keys: Sequence[str]) -> set[str]:
        horizon = self._clock() - self._window
        return {k for k in keys if self._seen.get(k, horizon - 1) < horizon}

    async def mark_seen(self, keys: Sequence[str]) -> None:
        now = self._clock()
        for key in keys:
            self._seen[key] = now
            self._seen.move_to_end(key)
        while len(self._seen) > self._max_keys:
            self._seen.popitem(last=False)
        horizon = now - self._window
        while self._seen:
            oldest_key, oldest_time = next(iter(self._seen.items()))
            if oldest_time >= horizon:
                break
            del self._seen[oldest_key]

    async def close(self) -> None:
        self._seen.clear()


class SqliteDedupe:
    """Persistent seen-id store in its own SQLite file, pruned to a time window.

    It runs with `synchronous=NORMAL`: a power loss may forget the last marks, which costs an
    idempotent rewrite, never an event.
    """

    _PRUNE_EVERY_SECS = 60.0

    def __init__(self, config: SqliteDedupeConfig, clock: Callable[[], float] = time.time) -> None:
        self._path = config.path
        self._window = config.window_secs
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-dedupe")
        self._conn: sqlite3.Connection | None = None
        self._last_prune = 0.0

    async def start(self) -> None:
        await self._call(self._open)

    async def unseen(self, keys: Sequence[str]) -> set[str]:
        return await self._call(self._unseen, keys)

    async def mark_seen(self, keys: Sequence[str]) -> None:
        await self._call(self._mark, keys)

    async def close(self) -> None:
        await self._call(self._close)
        self._executor.shutdown(wait=True)

    async def _call(self, fn: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> None:
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, seen_at REAL NOT NULL)"
            " WITHOUT ROWID"
        )
        conn.execute("CREATE INDEX IF NOT EXISTS seen_at ON seen (seen_at)")
        self._conn = conn

    def _unseen(self, keys: Sequence[str]) -> set[str]:
        assert self._conn is not None
        horizon = self._clock() - self._window
        unique = list(dict.fromkeys(keys))
        seen: set[str] = set()
        for i in range(0, len(unique), _SQL_CHUNK):
            chunk = unique[i : i + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT key FROM seen WHERE seen_at >= ? AND key IN ({marks})",
                (horizon, *chunk),
            )
            seen.update(row[0] for row in rows)
        return set(unique) - seen

    def _mark(self, keys: Sequence[str]) -> None:
        assert self._conn is not None
        now = self._clock()
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.executemany(
                "INSERT INTO seen (key, seen_at) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET seen_at = excluded.seen_at",
                [(k, now) for k in keys],
            )
        if now - self._last_prune >= self._PRUNE_EVERY_SECS:
            self._conn.execute("DELETE FROM seen WHERE seen_at < ?", (now - self._window,))
            self._last_prune = now

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def build_dedupe(config: DedupeConfig) -> DedupeStore:
    if isinstance(config, MemoryDedupeConfig):
        return MemoryDedupe(config)
    if isinstance(config, SqliteDedupeConfig):
        return SqliteDedupe(config)
    # The shared stores import their client library only when configured.
    if isinstance(config, RedisDedupeConfig):
        from fleetstream.normalize.dedupe_redis import RedisDedupe

        return RedisDedupe(config)
    if isinstance(config, PostgresDedupeConfig):
        from fleetstream.normalize.dedupe_postgres import PostgresDedupe

        return PostgresDedupe(config)
    assert isinstance(config, NoDedupeConfig)
    return NoDedupe()
