"""Unit tests for the dedupe stores: memory, SQLite and none."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from fleetstream.config.model import (
    MemoryDedupeConfig,
    NoDedupeConfig,
    SqliteDedupeConfig,
)
from fleetstream.normalize.dedupe import (
    MemoryDedupe,
    NoDedupe,
    SqliteDedupe,
    build_dedupe,
)


class Clock:
    """A settable clock to inject instead of `time.monotonic` / `time.time`."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def memory(
    window_secs: float = 3600.0, max_keys: int = 1000, clock: Clock | None = None
) -> MemoryDedupe:
    config = MemoryDedupeConfig(type="memory", window_secs=window_secs, max_keys=max_keys)
    return MemoryDedupe(config, clock=clock or Clock())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sqlite_store(tmp_path: Path, clock: Clock) -> AsyncIterator[SqliteDedupe]:
    store = SqliteDedupe(
        SqliteDedupeConfig(type="sqlite", path=tmp_path / "dedupe.db", window_secs=100.0),
        clock=clock,
    )
    await store.start()
    yield store
    await store.close()


# MemoryDedupe ------------------------------------------------------------------------------


async def test_memory_everything_unseen_at_first() -> None:
    """A fresh memory store reports every key as unseen."""
    store = memory()
    await store.start()
    expected = {"a", "b"}
    assert expected == await store.unseen(["a", "b"])


async def test_memory_marked_keys_are_seen() -> None:
    """Keys passed to `mark_seen` are no longer unseen; other keys still are."""
    store = memory()
    await store.mark_seen(["a", "b"])
    expected = {"c"}
    assert expected == await store.unseen(["a", "b", "c"])


async def test_memory_duplicate_keys_in_query() -> None:
    """A key asked for twice in one call is reported once."""
    store = memory()
    expected = {"a"}
    assert expected == await store.unseen(["a", "a"])


async def test_memory_window_expiry() -> None:
    """A key is seen up to `window_secs` after marking and unseen after that."""
    clock = Clock(100.0)
    store = memory(window_secs=10.0, clock=clock)
    await store.mark_seen(["a"])
    clock.now = 110.0
    at_edge = await store.unseen(["a"])
    clock.now = 110.5
    after = await store.unseen(["a"])
    expected: tuple[set[str], set[str]] = (set(), {"a"})
    assert expected == (at_edge, after)


async def test_memory_remark_extends_window() -> None:
    """Marking a key again restarts its window."""
    clock = Clock(100.0)
    store = memory(window_secs=10.0, clock=clock)
    await store.mark_seen(["a"])
    clock.now = 105.0
    await store.mark_seen(["a"])
    clock.now = 114.0
    expected: set[str] = set()
    assert expected == await store.unseen(["a"])


async def test_memory_marking_prunes_expired_keys() -> None:
    """A mark after the window forgets the expired keys, so they do not count toward max_keys."""
    clock = Clock(100.0)
    store = memory(window_secs=10.0, max_keys=2, clock=clock)
    await store.mark_seen(["old"])
    clock.now = 200.0
    await store.mark_seen(["x", "y"])
    expected = {"old"}
    assert expected == await store.unseen(["old", "x", "y"])


async def test_memory_max_keys_evicts_oldest() -> None:
    """Beyond `max_keys` the oldest marked keys are forgotten first."""
    clock = Clock(100.0)
    store = memory(max_keys=3, clock=clock)
    for key in ["a", "b", "c", "d", "e"]:
        clock.now += 1
        await store.mark_seen([key])
    expected = {"a", "b"}
    assert expected == await store.unseen(["a", "b", "c", "d", "e"])


async def test_memory_max_keys_counts_recent_marks_as_newest() -> None:
    """A key marked again moves to the newest end and survives eviction."""
    store = memory(max_keys=2)
    await store.mark_seen(["a", "b"])
    await store.mark_seen(["a"])
    await store.mark_seen(["c"])
    expected = {"b"}
    assert expected == await store.unseen(["a", "b", "c"])


async def test_memory_close_forgets() -> None:
    """Closing the memory store forgets every key."""
    store = memory()
    await store.mark_seen(["a"])
    await store.close()
    expected = {"a"}
    assert expected == await store.unseen(["a"])


# SqliteDedupe ------------------------------------------------------------------------------


async def test_sqlite_marked_keys_are_seen(sqlite_store: SqliteDedupe) -> None:
    """Keys marked in the SQLite store are no longer unseen."""
    await sqlite_store.mark_seen(["a", "b"])
    expected = {"c"}
    assert expected == await sqlite_store.unseen(["a", "b", "c"])


async def test_sqlite_persists_across_reopen(tmp_path: Path) -> None:
    """Marks survive closing the store and opening a new one on the same file."""
    config = SqliteDedupeConfig(type="sqlite", path=tmp_path / "sub" / "dedupe.db")
    clock = Clock()
    first = SqliteDedupe(config, clock=clock)
    await first.start()
    await first.mark_seen(["a", "b"])
    await first.close()
    second = SqliteDedupe(config, clock=clock)
    await second.start()
    try:
        unseen = await second.unseen(["a", "b", "c"])
    finally:
        await second.close()
    expected = {"c"}
    assert expected == unseen


async def test_sqlite_window_expiry(sqlite_store: SqliteDedupe, clock: Clock) -> None:
    """A key is seen up to `window_secs` after marking and unseen after that."""
    start = clock.now
    await sqlite_store.mark_seen(["a"])
    clock.now = start + 100.0
    at_edge = await sqlite_store.unseen(["a"])
    clock.now = start + 100.5
    after = await sqlite_store.unseen(["a"])
    expected: tuple[set[str], set[str]] = (set(), {"a"})
    assert expected == (at_edge, after)


async def test_sqlite_remark_extends_window(sqlite_store: SqliteDedupe, clock: Clock) -> None:
    """Marking a key again restarts its window."""
    start = clock.now
    await sqlite_store.mark_seen(["a"])
    clock.now = start + 50.0
    await sqlite_store.mark_seen(["a"])
    clock.now = start + 140.0
    expected: set[str] = set()
    assert expected == await sqlite_store.unseen(["a"])


async def test_sqlite_prunes_expired_rows(tmp_path: Path, clock: Clock) -> None:
    """Rows older than the window are deleted from the file when marking later."""
    path = tmp_path / "dedupe.db"
    store = SqliteDedupe(SqliteDedupeConfig(type="sqlite", path=path, window_secs=100.0), clock)
    await store.start()
    await store.mark_seen(["old"])
    clock.now += 1000.0
    await store.mark_seen(["new"])
    await store.close()
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT key FROM seen ORDER BY key").fetchall()
    expected = [("new",)]
    assert expected == rows


async def test_sqlite_more_than_chunk_size_keys(sqlite_store: SqliteDedupe) -> None:
    """More than 500 keys in one call are marked and queried correctly across SQL chunks."""
    marked = [f"k{i:04d}" for i in range(1200)]
    await sqlite_store.mark_seen(marked)
    fresh = [f"n{i:04d}" for i in range(700)]
    queried = [*fresh[:350], *marked, *fresh[350:]]
    expected = set(fresh)
    assert expected == await sqlite_store.unseen(queried)


async def test_sqlite_duplicate_keys_in_one_call(sqlite_store: SqliteDedupe) -> None:
    """Duplicate keys in one mark or query call are handled without error."""
    await sqlite_store.mark_seen(["a", "a", "b", "a"])
    expected = {"c"}
    assert expected == await sqlite_store.unseen(["a", "c", "a", "b", "c"])


async def test_sqlite_empty_calls(sqlite_store: SqliteDedupe) -> None:
    """Empty key lists are accepted by both calls."""
    await sqlite_store.mark_seen([])
    expected: set[str] = set()
    assert expected == await sqlite_store.unseen([])


# NoDedupe and the factory ---------------------------------------------------------------------


async def test_no_dedupe_never_sees_anything() -> None:
    """NoDedupe reports every key as unseen, even after marking it."""
    store = NoDedupe()
    await store.start()
    await store.mark_seen(["a", "b"])
    unseen = await store.unseen(["a", "b", "a"])
    await store.close()
    expected = {"a", "b"}
    assert expected == unseen


def test_build_dedupe_picks_the_configured_store(tmp_path: Path) -> None:
    """`build_dedupe` returns the store class matching each config type."""
    built = [
        build_dedupe(MemoryDedupeConfig(type="memory")),
        build_dedupe(SqliteDedupeConfig(type="sqlite", path=tmp_path / "d.db")),
        build_dedupe(NoDedupeConfig(type="none")),
    ]
    expected = [MemoryDedupe, SqliteDedupe, NoDedupe]
    assert expected == [type(store) for store in built]
