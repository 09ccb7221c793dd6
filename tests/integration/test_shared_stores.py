"""The Kafka source into the shared stores (PostgreSQL sink, Redis dedupe) across failures: a
PostgreSQL restart mid-stream, and two replicas of which one is killed mid-stream."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest
import redis

from tests.integration.conftest import Daemon, KafkaBroker, free_port, kafka_source
from tests.integration.test_kafka import create_topic, metric, mobito_uuid, produce, wait_for

# Group joins, a killed member's session timeout and a deliberate database outage take seconds.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SHARED_DSN = os.environ.get(
    "FLEETSTREAM_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("FLEETSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def pg_fetch(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    """Run one query on a fresh connection and return the rows as tuples."""

    async def run() -> list[tuple[Any, ...]]:
        connection = await asyncpg.connect(dsn, timeout=5)
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    return asyncio.run(run())


def stored_count(dsn: str, schema: str) -> int:
    """Rows in `schema.events`, 0 while the table does not exist or the server is down."""
    try:
        return int(pg_fetch(dsn, f"SELECT count(*) FROM {schema}.events")[0][0])
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return 0


def counts(dsn: str, schema: str) -> tuple[int, int]:
    (total, distinct), *_ = pg_fetch(
        dsn, f"SELECT count(*), count(DISTINCT event_id) FROM {schema}.events"
    )
    return int(total), int(distinct)


def stored_ids(dsn: str, schema: str) -> list[str]:
    return sorted(row[0] for row in pg_fetch(dsn, f"SELECT event_id FROM {schema}.events"))


def expected_ids(count: int) -> list[str]:
    return sorted(f"mobito:{mobito_uuid(n)}" for n in range(count))


def metric_or_zero(daemon: Daemon, line_prefix: str) -> float:
    value = metric(daemon, line_prefix)
    return 0.0 if value is None else value


@dataclass
class PrivatePostgres:
    """A PostgreSQL 15 cluster of the test's own, which the test may stop and start again."""

    data_dir: Path
    port: int

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        command = [str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            log = self.data_dir / "server.log"
            raise RuntimeError(
                f"pg_ctl {args[-1]} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                f"\n{log.read_text() if log.exists() else ''}"
            )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1"
        self._pg_ctl("-o", options, "-l", str(self.data_dir / "server.log"), "-w", "start")

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop")

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A private cluster (initdb, trust auth) on a free port, removed afterwards."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"{PG_BIN / 'initdb'} is missing: install Debian's postgresql-15")
    # Outside pytest's 0700 tmp tree: initdb refuses root, so the cluster belongs to postgres.
    data_dir = Path(tempfile.mkdtemp(prefix="fleetstream-pg-"))
    initdb = [str(PG_BIN / "initdb"), "-D", str(data_dir), "-A", "trust", "-U", "postgres"]
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(data_dir, user.pw_uid, user.pw_gid)
        initdb = ["runuser", "-u", "postgres", "--", *initdb]
    cluster = PrivatePostgres(data_dir, free_port())
    try:
        result = subprocess.run(initdb, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            pytest.fail(f"initdb failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        cluster.start()
        yield cluster
    finally:
        if cluster.running():
            cluster.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def shared_schema() -> Iterator[str]:
    """A fresh schema name on the machine's PostgreSQL, dropped afterwards."""
    schema = f"fs_shared_{uuid.uuid4().hex[:8]}"
    yield schema
    pg_fetch(SHARED_DSN, f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A unique key prefix on the machine's Redis; its keys are deleted afterwards."""
    prefix = f"fs-test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


def test_postgres_restart_mid_stream_loses_nothing(
    make_daemon: Callable[..., Daemon],
    kafka_broker: KafkaBroker,
    private_postgres: PrivatePostgres,
) -> None:
    """PostgreSQL stopped for a few seconds mid-stream: all N events end up stored, each once."""
    topic, group, count, schema = create_topic(kafka_broker.bootstrap), "g-pg-restart", 2000, "fs"
    dsn = private_postgres.dsn

    def tweak(config: dict[str, Any]) -> None:
        config["sources"] = [
            kafka_source(kafka_broker.bootstrap, topic, group, max_in_flight_messages=100)
        ]
        config["sinks"] = [{"type": "postgres", "name": "private", "dsn": dsn, "db_schema": schema}]
        config["pipeline"]["batch_max_events"] = 50
        config["pipeline"]["write_retry"] = {
            "attempts": 3,
            "backoff_initial_secs": 0.1,
            "backoff_max_secs": 0.5,
        }

    # Half before the outage, half during it: the outage is sure to hit records in flight.
    produce(kafka_broker.bootstrap, topic, range(count // 2))
    daemon = make_daemon(tweak)
    wait_for(lambda: stored_count(dsn, schema) >= 100, 60, "100 events before the outage")

    before_outage = stored_count(dsn, schema)
    private_postgres.stop()
    produce(kafka_broker.bootstrap, topic, range(count // 2, count))
    time.sleep(4)  # the deliberate outage
    failures_during_outage = metric_or_zero(
        daemon, 'fleetstream_sink_write_failures_total{sink="private"}'
    )
    alive_during_outage = daemon.process is not None and daemon.process.poll() is None
    private_postgres.start()

    wait_for(lambda: stored_count(dsn, schema) >= count, 120, f"{count} events after restart")
    daemon.signal(signal.SIGTERM)

    assert (True, True) == (100 <= before_outage < count, alive_during_outage)
    assert 0 < failures_during_outage
    assert 0 == daemon.wait()
    assert (count, count) == counts(dsn, schema)
    assert expected_ids(count) == stored_ids(dsn, schema)


def test_two_daemons_one_postgres_with_redis_dedupe(
    make_daemon: Callable[..., Daemon],
    kafka_broker: KafkaBroker,
    shared_schema: str,
    redis_prefix: str,
) -> None:
    """Two replicas in one group, one SIGKILLed mid-stream: the survivor completes the set and
    `events` holds each of the N ids exactly once."""
    partitions, count = 4, 1000
    topic, group = create_topic(kafka_broker.bootstrap, partitions), f"g-two-{uuid.uuid4().hex[:6]}"

    def tweak(config: dict[str, Any]) -> None:
        config["sources"] = [
            kafka_source(kafka_broker.bootstrap, topic, group, max_in_flight_messages=20)
        ]
        config["sinks"] = [
            {"type": "postgres", "name": "shared", "dsn": SHARED_DSN, "db_schema": shared_schema}
        ]
        config["dedupe"] = {"type": "redis", "url": REDIS_URL, "key_prefix": redis_prefix}
        config["pipeline"]["batch_max_events"] = 20

    victim = make_daemon(tweak, data_name="victim")
    survivor = make_daemon(tweak, data_name="survivor")
    written = 'fleetstream_events_written_total{sink="shared"}'
    produce(kafka_broker.bootstrap, topic, range(count), partitions)
    wait_for(
        lambda: metric_or_zero(victim, written) > 0 and metric_or_zero(survivor, written) > 0,
        60,
        "both replicas writing",
    )

    victim.signal(signal.SIGKILL)
    victim.wait()
    at_kill = stored_count(SHARED_DSN, shared_schema)
    wait_for(
        lambda: stored_count(SHARED_DSN, shared_schema) >= count,
        120,
        f"{count} events after the kill",
    )
    duplicates = metric_or_zero(survivor, 'fleetstream_duplicates_dropped_total{source="mobito"}')
    survivor.signal(signal.SIGTERM)

    assert 0 < at_kill < count
    assert 0 == survivor.wait()
    assert (count, count) == counts(SHARED_DSN, shared_schema)
    assert expected_ids(count) == stored_ids(SHARED_DSN, shared_schema)
    assert 0 <= duplicates
