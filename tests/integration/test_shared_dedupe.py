"""The shared dedupe stores against a real Redis and a real PostgreSQL on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest
import redis.asyncio as redis
from pydantic import SecretStr
from redis.asyncio.connection import AbstractConnection

from fleetstream.config.model import PostgresDedupeConfig, RedisDedupeConfig
from fleetstream.normalize.dedupe import DedupeStore, build_dedupe
from fleetstream.normalize.dedupe_postgres import APPLICATION_NAME, PostgresDedupe
from fleetstream.normalize.dedupe_redis import RedisDedupe

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("FLEETSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get(
    "FLEETSTREAM_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_HINT = (
    "start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' "
    "--appendonly no`, or set FLEETSTREAM_TEST_REDIS_URL to another server"
)
POSTGRES_HINT = (
    "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, "
    "or set FLEETSTREAM_TEST_POSTGRES_DSN to another database"
)

_T = TypeVar("_T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def poll(check: Callable[[], Awaitable[_T]], until: _T, timeout_secs: float = 5.0) -> _T:
    """Call `check` until it returns `until` or the time is up; returns the last answer."""
    deadline = time.monotonic() + timeout_secs
    while True:
        answer = await check()
        if answer == until or time.monotonic() >= deadline:
            return answer
        await asyncio.sleep(0.05)


async def random_interleaving(stores: Sequence[DedupeStore], seed: int) -> list[str]:
    """Random unseen / mark_seen calls across replicas; describes every call that reported a key
    seen which no replica had marked, or hid a marked key as unseen (so `[]` is correct)."""
    rng = random.Random(seed)
    universe = [f"ev-{i}" for i in range(40)]
    marked: set[str] = set()
    wrong: list[str] = []
    for step in range(150):
        store = rng.choice(stores)
        keys = rng.sample(universe, rng.randint(1, 12))
        if rng.random() < 0.3:
            await store.mark_seen(keys)
            marked.update(keys)
        else:
            expected = set(keys) - marked
            actual = await store.unseen(keys)
            if expected != actual:
                wrong.append(f"step {step}: expected {sorted(expected)}, got {sorted(actual)}")
    return wrong


# Redis -------------------------------------------------------------------------------------


@pytest.fixture
async def redis_admin() -> AsyncIterator[redis.Redis]:
    """A plain client on the test server, checked to answer."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except redis.RedisError as exc:
        await client.aclose()
        pytest.fail(f"no Redis at {REDIS_URL} ({exc}): {REDIS_HINT}")
    yield client
    await client.aclose()


@pytest.fixture
async def redis_prefix(redis_admin: redis.Redis) -> AsyncIterator[str]:
    """A key prefix of the test's own; its keys are deleted afterwards."""
    prefix = f"fleetstream-test:{uuid.uuid4().hex}:"
    yield prefix
    keys = [key async for key in redis_admin.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await redis_admin.delete(*keys)


@pytest.fixture
async def make_redis(redis_prefix: str) -> AsyncIterator[Callable[..., Awaitable[RedisDedupe]]]:
    """Factory of started Redis stores on the test's prefix, closed afterwards."""
    stores: list[RedisDedupe] = []

    async def make(window_secs: float = 3600.0) -> RedisDedupe:
        config = RedisDedupeConfig(
            type="redis", url=SecretStr(REDIS_URL), key_prefix=redis_prefix, window_secs=window_secs
        )
        store = RedisDedupe(config)
        stores.append(store)
        await store.start()
        return store

    yield make
    for store in stores:
        await store.close()


async def test_redis_marked_keys_are_seen(
    make_redis: Callable[..., Awaitable[RedisDedupe]],
) -> None:
    """Everything is unseen at first; after `mark_seen` only the unmarked keys are."""
    store = await make_redis()
    before = await store.unseen(["a", "b", "c"])
    await store.mark_seen(["a", "b"])
    after = await store.unseen(["a", "b", "c"])
    expected: tuple[set[str], set[str]] = ({"a", "b", "c"}, {"c"})
    assert expected == (before, after)


async def test_redis_keys_carry_prefix_and_window_ttl(
    make_redis: Callable[..., Awaitable[RedisDedupe]], redis_admin: redis.Redis, redis_prefix: str
) -> None:
    """A mark is the key `prefix + event key` with a TTL of the window."""
    store = await make_redis(window_secs=100.0)
    await store.mark_seen(["ev-1"])
    ttl_ms = await redis_admin.pttl(f"{redis_prefix}ev-1")
    expected = (True, b"1")
    assert expected == (99_000 < ttl_ms <= 100_000, await redis_admin.get(f"{redis_prefix}ev-1"))


async def test_redis_duplicate_keys_in_one_call(
    make_redis: Callable[..., Awaitable[RedisDedupe]],
) -> None:
    """Duplicate keys in one mark or query call are handled and reported once."""
    store = await make_redis()
    await store.mark_seen(["a", "a", "b", "a"])
    expected = {"c"}
    assert expected == await store.unseen(["a", "c", "a", "b", "c"])


async def test_redis_empty_calls(make_redis: Callable[..., Awaitable[RedisDedupe]]) -> None:
    """Empty key lists are accepted by both calls."""
    store = await make_redis()
    await store.mark_seen([])
    expected: set[str] = set()
    assert expected == await store.unseen([])


async def test_redis_many_keys_in_one_call(
    make_redis: Callable[..., Awaitable[RedisDedupe]],
) -> None:
    """Thousands of keys are marked and queried correctly in one call each."""
    store = await make_redis()
    marked = [f"k{i:05d}" for i in range(2500)]
    await store.mark_seen(marked)
    fresh = [f"n{i:05d}" for i in range(1200)]
    expected = set(fresh)
    assert expected == await store.unseen([*fresh[:600], *marked, *fresh[600:]])


async def test_redis_marks_expire_after_window(
    make_redis: Callable[..., Awaitable[RedisDedupe]],
) -> None:
    """With a 1 s window a mark counts at once and is gone about a second later."""
    store = await make_redis(window_secs=1.0)
    await store.mark_seen(["a"])
    marked_at = time.monotonic()
    right_after = await store.unseen(["a", "b"])
    later = await poll(lambda: store.unseen(["a", "b"]), until={"a", "b"})
    waited = time.monotonic() - marked_at
    expected: tuple[set[str], set[str], bool] = ({"b"}, {"a", "b"}, True)
    assert expected == (right_after, later, 0.5 < waited < 3.0)


async def test_redis_replicas_share_marks(
    make_redis: Callable[..., Awaitable[RedisDedupe]],
) -> None:
    """A key marked by one store instance is seen by another on the same server and prefix."""
    first, second = await make_redis(), await make_redis()
    await first.mark_seen(["a"])
    await second.mark_seen(["b"])
    expected: tuple[set[str], set[str]] = ({"c"}, {"c"})
    assert expected == (await first.unseen(["a", "b", "c"]), await second.unseen(["a", "b", "c"]))


async def test_redis_key_is_seen_only_after_mark(
    make_redis: Callable[..., Awaitable[RedisDedupe]],
) -> None:
    """Asking for a key claims nothing: it stays unseen for every replica until one marks it."""
    first, second = await make_redis(), await make_redis()
    answers = [
        await first.unseen(["a"]),
        await second.unseen(["a"]),  # the first replica's write is in flight, or failed
        await first.unseen(["a"]),  # the redelivery after a failed write
    ]
    await second.mark_seen(["a"])
    answers.append(await first.unseen(["a"]))
    expected: list[set[str]] = [{"a"}, {"a"}, {"a"}, set()]
    assert expected == answers


async def test_redis_random_interleaving_reports_only_marked_keys(
    make_redis: Callable[..., Awaitable[RedisDedupe]],
) -> None:
    """Across three replicas in random order, a key is seen exactly when some replica marked it."""
    stores = [await make_redis(), await make_redis(), await make_redis()]
    expected: list[str] = []
    assert expected == await random_interleaving(stores, seed=7)


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts writes to Redis sockets (one per command, or one per pipeline) as they happen."""
    sent: list[int] = []
    original = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sent.append(1)
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return sent


async def commandstats(client: redis.Redis, command: str) -> int:
    stats = await client.info("commandstats")
    entry: dict[str, int] = stats.get(f"cmdstat_{command}", {"calls": 0})
    return entry["calls"]


async def test_redis_unseen_is_one_command_in_one_round_trip(
    make_redis: Callable[..., Awaitable[RedisDedupe]],
    redis_admin: redis.Redis,
    round_trips: list[int],
) -> None:
    """Asking about 1000 keys sends one request, which the server counts as one MGET."""
    store = await make_redis()
    keys = [f"k{i}" for i in range(1000)]
    mgets_before = await commandstats(redis_admin, "mget")
    round_trips.clear()
    await store.unseen(keys)
    sent = len(round_trips)
    mgets = await commandstats(redis_admin, "mget") - mgets_before
    expected = (1, 1)
    assert expected == (sent, mgets)


async def test_redis_mark_seen_is_one_round_trip(
    make_redis: Callable[..., Awaitable[RedisDedupe]], round_trips: list[int]
) -> None:
    """Marking 1000 keys sends one pipelined request."""
    store = await make_redis()
    keys = [f"k{i}" for i in range(1000)]
    round_trips.clear()
    await store.mark_seen(keys)
    sent = len(round_trips)
    expected: tuple[int, set[str]] = (1, set())
    assert expected == (sent, await store.unseen(keys))


async def test_redis_closed_store_refuses_calls(
    make_redis: Callable[..., Awaitable[RedisDedupe]],
) -> None:
    """After `close` (twice is fine) both calls raise instead of quietly reconnecting."""
    store = await make_redis()
    await store.close()
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.unseen(["a"])
    with pytest.raises(RuntimeError, match="closed"):
        await store.mark_seen(["a"])


async def test_redis_unreachable_server_fails_start() -> None:
    """Nothing listening: `start` raises a Redis connection error."""
    config = RedisDedupeConfig(type="redis", url=SecretStr(f"redis://127.0.0.1:{free_port()}/0"))
    store = RedisDedupe(config)
    with pytest.raises(redis.ConnectionError):
        await store.start()
    with pytest.raises(RuntimeError, match="not started"):
        await store.unseen(["a"])


@pytest.fixture
def private_redis() -> Iterator[str]:
    """A redis-server of the test's own on a free port, which the test may shut down."""
    port = free_port()
    try:
        server = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        pytest.fail(f"redis-server is not installed: {REDIS_HINT}")
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"the private redis-server on port {port} did not start")
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(10)


async def test_redis_lost_server_raises_from_calls(private_redis: str) -> None:
    """A server that goes away after start makes `unseen` and `mark_seen` raise."""
    store = RedisDedupe(RedisDedupeConfig(type="redis", url=SecretStr(private_redis)))
    await store.start()
    healthy = await store.unseen(["a"])
    admin = redis.Redis.from_url(private_redis)
    with contextlib.suppress(redis.ConnectionError):
        await admin.shutdown(nosave=True)
    await admin.aclose()
    errors = []
    for call in (store.unseen, store.mark_seen):
        try:
            await call(["a"])
        except redis.ConnectionError as exc:
            errors.append(type(exc).__name__)
    await store.close()
    expected = ({"a"}, ["ConnectionError", "ConnectionError"])
    assert expected == (healthy, errors)


# PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture
async def pg_admin() -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test database, checked to answer."""
    try:
        conn = await asyncpg.connect(POSTGRES_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"no PostgreSQL at {POSTGRES_DSN} ({exc}): {POSTGRES_HINT}")
    yield conn
    await conn.close()


@pytest.fixture
async def pg_schema(pg_admin: asyncpg.Connection) -> AsyncIterator[str]:
    """A schema name of the test's own; the schema is dropped afterwards."""
    schema = f"fleetstream_test_{uuid.uuid4().hex[:16]}"
    yield schema
    await pg_admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
async def make_pg(pg_schema: str) -> AsyncIterator[Callable[..., Awaitable[PostgresDedupe]]]:
    """Factory of PostgreSQL stores on the test's schema (started unless told), closed after."""
    stores: list[PostgresDedupe] = []

    async def make(
        window_secs: float = 3600.0, prune_every_secs: float = 3600.0, start: bool = True
    ) -> PostgresDedupe:
        config = PostgresDedupeConfig(
            type="postgres",
            dsn=SecretStr(POSTGRES_DSN),
            db_schema=pg_schema,
            window_secs=window_secs,
        )
        store = PostgresDedupe(config, prune_every_secs=prune_every_secs)
        stores.append(store)
        if start:
            await store.start()
        return store

    yield make
    for store in stores:
        await store.close()


async def test_pg_start_creates_schema_and_table(
    make_pg: Callable[..., Awaitable[PostgresDedupe]], pg_admin: asyncpg.Connection, pg_schema: str
) -> None:
    """`start` creates the missing schema and its `seen` table with a primary key on `key`."""
    await make_pg()
    columns = await pg_admin.fetch(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = $1 AND table_name = 'seen' ORDER BY ordinal_position",
        pg_schema,
    )
    primary_key = await pg_admin.fetchval(
        "SELECT a.attname FROM pg_index i"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = $1::regclass AND i.indisprimary",
        f"{pg_schema}.seen",
    )
    expected = ([("key", "text"), ("seen_at", "timestamp with time zone")], "key")
    assert expected == ([tuple(row) for row in columns], primary_key)


async def test_pg_replicas_starting_together_both_start(
    make_pg: Callable[..., Awaitable[PostgresDedupe]],
) -> None:
    """Two stores creating the same missing schema at once both start and share marks."""
    first, second = await make_pg(start=False), await make_pg(start=False)
    await asyncio.gather(first.start(), second.start())
    await first.mark_seen(["a"])
    expected = {"b"}
    assert expected == await second.unseen(["a", "b"])


async def test_pg_sessions_carry_application_name(
    make_pg: Callable[..., Awaitable[PostgresDedupe]], pg_admin: asyncpg.Connection
) -> None:
    """The store's sessions show up in `pg_stat_activity` under its application name."""
    before = await pg_admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", APPLICATION_NAME
    )
    store = await make_pg()
    await store.unseen(["a"])
    during = await pg_admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", APPLICATION_NAME
    )
    expected = True
    assert expected == (during > before)


async def test_pg_marked_keys_are_seen(make_pg: Callable[..., Awaitable[PostgresDedupe]]) -> None:
    """Everything is unseen at first; after `mark_seen` only the unmarked keys are."""
    store = await make_pg()
    before = await store.unseen(["a", "b", "c"])
    await store.mark_seen(["a", "b"])
    after = await store.unseen(["a", "b", "c"])
    expected: tuple[set[str], set[str]] = ({"a", "b", "c"}, {"c"})
    assert expected == (before, after)


async def test_pg_duplicate_keys_in_one_call(
    make_pg: Callable[..., Awaitable[PostgresDedupe]],
) -> None:
    """Duplicate keys in one mark (one upsert) or query call are handled and reported once."""
    store = await make_pg()
    await store.mark_seen(["a", "a", "b", "a"])
    expected = {"c"}
    assert expected == await store.unseen(["a", "c", "a", "b", "c"])


async def test_pg_empty_calls(make_pg: Callable[..., Awaitable[PostgresDedupe]]) -> None:
    """Empty key lists are accepted by both calls."""
    store = await make_pg()
    await store.mark_seen([])
    expected: set[str] = set()
    assert expected == await store.unseen([])


async def test_pg_many_keys_in_one_call(make_pg: Callable[..., Awaitable[PostgresDedupe]]) -> None:
    """Thousands of keys are marked and queried correctly in one call each."""
    store = await make_pg()
    marked = [f"k{i:05d}" for i in range(2500)]
    await store.mark_seen(marked)
    fresh = [f"n{i:05d}" for i in range(1200)]
    expected = set(fresh)
    assert expected == await store.unseen([*fresh[:600], *marked, *fresh[600:]])


async def test_pg_window_expiry(
    make_pg: Callable[..., Awaitable[PostgresDedupe]], pg_admin: asyncpg.Connection, pg_schema: str
) -> None:
    """A mark counts inside the window and not once it is older than `window_secs`."""
    store = await make_pg(window_secs=100.0)
    await store.mark_seen(["inside", "outside"])
    await pg_admin.execute(
        f'UPDATE "{pg_schema}".seen SET seen_at = now() - CASE key'
        " WHEN 'inside' THEN interval '99 seconds' ELSE interval '101 seconds' END"
    )
    expected = {"outside"}
    assert expected == await store.unseen(["inside", "outside"])


async def test_pg_tiny_window_expires_in_real_time(
    make_pg: Callable[..., Awaitable[PostgresDedupe]],
) -> None:
    """With a 0.5 s window a mark counts at once and is gone shortly after."""
    store = await make_pg(window_secs=0.5)
    await store.mark_seen(["a"])
    right_after = await store.unseen(["a", "b"])
    later = await poll(lambda: store.unseen(["a", "b"]), until={"a", "b"})
    expected: tuple[set[str], set[str]] = ({"b"}, {"a", "b"})
    assert expected == (right_after, later)


async def test_pg_remark_restarts_window(
    make_pg: Callable[..., Awaitable[PostgresDedupe]], pg_admin: asyncpg.Connection, pg_schema: str
) -> None:
    """Marking an expired key again makes it seen again."""
    store = await make_pg(window_secs=100.0)
    await store.mark_seen(["a"])
    await pg_admin.execute(f"UPDATE \"{pg_schema}\".seen SET seen_at = now() - interval '1 day'")
    expired = await store.unseen(["a"])
    await store.mark_seen(["a"])
    expected: tuple[set[str], set[str]] = ({"a"}, set())
    assert expected == (expired, await store.unseen(["a"]))


async def test_pg_prune_deletes_only_expired_rows(
    make_pg: Callable[..., Awaitable[PostgresDedupe]], pg_admin: asyncpg.Connection, pg_schema: str
) -> None:
    """`prune` deletes the rows older than the window, across several chunks, and no others."""
    store = await make_pg(window_secs=100.0)
    old = [f"old{i:05d}" for i in range(12_345)]
    await store.mark_seen([*old, "new"])
    await pg_admin.execute(
        f"UPDATE \"{pg_schema}\".seen SET seen_at = now() - interval '1 day' WHERE key <> 'new'"
    )
    deleted = await store.prune()
    rows = await pg_admin.fetch(f'SELECT key FROM "{pg_schema}".seen')
    expected = (12_345, ["new"])
    assert expected == (deleted, [row["key"] for row in rows])


async def test_pg_prunes_in_background(
    make_pg: Callable[..., Awaitable[PostgresDedupe]], pg_admin: asyncpg.Connection, pg_schema: str
) -> None:
    """The store prunes expired rows by itself every `prune_every_secs`."""
    store = await make_pg(window_secs=100.0, prune_every_secs=0.05)
    await store.mark_seen(["old", "new"])
    await pg_admin.execute(
        f"UPDATE \"{pg_schema}\".seen SET seen_at = now() - interval '1 day' WHERE key = 'old'"
    )

    async def remaining() -> list[str]:
        return [r["key"] for r in await pg_admin.fetch(f'SELECT key FROM "{pg_schema}".seen')]

    expected = ["new"]
    assert expected == await poll(remaining, until=["new"])


async def test_pg_replicas_share_marks(make_pg: Callable[..., Awaitable[PostgresDedupe]]) -> None:
    """A key marked by one store instance is seen by another on the same schema."""
    first, second = await make_pg(), await make_pg()
    await first.mark_seen(["a"])
    await second.mark_seen(["b"])
    expected: tuple[set[str], set[str]] = ({"c"}, {"c"})
    assert expected == (await first.unseen(["a", "b", "c"]), await second.unseen(["a", "b", "c"]))


async def test_pg_concurrent_overlapping_marks(
    make_pg: Callable[..., Awaitable[PostgresDedupe]],
) -> None:
    """Replicas marking overlapping batches in opposite orders at once all succeed."""
    first, second = await make_pg(), await make_pg()
    keys = [f"k{i:04d}" for i in range(2000)]
    for _ in range(5):
        await asyncio.gather(first.mark_seen(keys), second.mark_seen(keys[::-1]))
    expected: set[str] = set()
    assert expected == await first.unseen(keys)


async def test_pg_key_is_seen_only_after_mark(
    make_pg: Callable[..., Awaitable[PostgresDedupe]],
) -> None:
    """Asking for a key claims nothing: it stays unseen for every replica until one marks it."""
    first, second = await make_pg(), await make_pg()
    answers = [
        await first.unseen(["a"]),
        await second.unseen(["a"]),  # the first replica's write is in flight, or failed
        await first.unseen(["a"]),  # the redelivery after a failed write
    ]
    await second.mark_seen(["a"])
    answers.append(await first.unseen(["a"]))
    expected: list[set[str]] = [{"a"}, {"a"}, {"a"}, set()]
    assert expected == answers


async def test_pg_random_interleaving_reports_only_marked_keys(
    make_pg: Callable[..., Awaitable[PostgresDedupe]],
) -> None:
    """Across three replicas in random order, a key is seen exactly when some replica marked it."""
    stores = [await make_pg(), await make_pg(), await make_pg()]
    expected: list[str] = []
    assert expected == await random_interleaving(stores, seed=7)


async def test_pg_closed_store_refuses_calls(
    make_pg: Callable[..., Awaitable[PostgresDedupe]],
) -> None:
    """After `close` (twice is fine) every call raises, naming the closed store."""
    store = await make_pg()
    await store.close()
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.unseen(["a"])
    with pytest.raises(RuntimeError, match="closed"):
        await store.mark_seen(["a"])
    with pytest.raises(RuntimeError, match="closed"):
        await store.prune()


async def test_pg_close_releases_sessions(
    make_pg: Callable[..., Awaitable[PostgresDedupe]], pg_admin: asyncpg.Connection
) -> None:
    """After `close` the store's sessions are gone from the server."""

    async def sessions() -> int:
        count: int = await pg_admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", APPLICATION_NAME
        )
        return count

    before = await sessions()
    store = await make_pg()
    await store.unseen(["a"])
    during = await sessions()
    await store.close()
    after = await poll(sessions, until=before)
    expected = (True, before)
    assert expected == (during > before, after)


async def test_pg_unreachable_server_fails_start() -> None:
    """Nothing listening: `start` raises a connection error."""
    config = PostgresDedupeConfig(
        type="postgres", dsn=SecretStr(f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    )
    store = PostgresDedupe(config)
    with pytest.raises(ConnectionRefusedError):
        await store.start()
    with pytest.raises(RuntimeError, match="not started"):
        await store.unseen(["a"])


# The factory -------------------------------------------------------------------------------


def test_build_dedupe_picks_the_shared_stores() -> None:
    """`build_dedupe` returns the Redis and PostgreSQL stores for their config types."""
    built = [
        build_dedupe(RedisDedupeConfig(type="redis")),
        build_dedupe(PostgresDedupeConfig(type="postgres", dsn=SecretStr(POSTGRES_DSN))),
    ]
    expected = [RedisDedupe, PostgresDedupe]
    assert expected == [type(store) for store in built]


def test_dedupe_module_does_not_import_clients() -> None:
    """Importing the dedupe module (as every operator does) loads neither redis nor asyncpg."""
    code = (
        "import sys, fleetstream.normalize.dedupe as d; "
        "d.build_dedupe(d.SqliteDedupeConfig(type='sqlite')); "
        "print(sorted(m for m in ('redis', 'asyncpg') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    expected = "[]"
    assert expected == result.stdout.strip()
