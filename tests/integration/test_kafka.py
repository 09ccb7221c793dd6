"""The Kafka source against a real Kafka-compatible broker (Tansu), with the MOBITO decoder."""

from __future__ import annotations

import signal
import sqlite3
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.conftest import Daemon, KafkaBroker, kafka_source

# Group joins, a killed member's session timeout and a deliberate stall take real seconds.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PARTITIONS = 3


def create_topic(bootstrap: str, partitions: int = PARTITIONS) -> str:
    name = f"mobito-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(15)
    return name


def mobito_uuid(number: int) -> str:
    return f"00000000-0000-4000-8000-{number:012d}"


def mobito_message(number: int, **fields: Any) -> bytes:
    body = {
        "vin": f"WBA00000000{number % 17:06d}",
        "fleet_id": "fleet-a",
        "uuid": mobito_uuid(number),
        "mileage": f"{10_000 + number}.0",
        "fuel_level": 50,
        "battery_voltage": "12.56",
        "vehicle_is_locked": "LOCKED",
        "latitude": "36.8",
        "longitude": "21.7",
    }
    body.update(fields)
    return orjson.dumps(body)


def produce(bootstrap: str, topic: str, numbers: range, partitions: int = PARTITIONS) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for number in numbers:
        producer.produce(
            topic,
            value=mobito_message(number),
            key=f"vin-{number % 17}".encode(),
            partition=number % partitions,
            timestamp=1_714_564_800_000 + number,
            headers=[("source", b"test")],
        )
    assert 0 == producer.flush(15)


def produce_raw(bootstrap: str, topic: str, values: list[tuple[int, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for partition, value in values:
        producer.produce(topic, value=value, partition=partition)
    assert 0 == producer.flush(15)


def stored_ids(daemon: Daemon) -> list[str]:
    if not daemon.db_path.exists():
        return []
    try:
        return [row[0] for row in daemon.query("SELECT event_id FROM events")]
    except sqlite3.OperationalError:
        return []  # schema not created yet


def wait_for(condition: Callable[[], bool], timeout_secs: float, what: str) -> None:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_secs}s waiting for {what}")


def committed(bootstrap: str, topic: str, group: str, partitions: int = PARTITIONS) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        found = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
        return [tp.offset for tp in found]
    finally:
        consumer.close()


def metric(daemon: Daemon, line_prefix: str) -> float | None:
    with urllib.request.urlopen(f"{daemon.url}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(line_prefix):
                return float(line.rsplit(" ", 1)[1])
    return None


def kafka_only(
    broker: KafkaBroker, topic: str, group: str, **source: Any
) -> Callable[[dict[str, Any]], None]:
    def tweak(config: dict[str, Any]) -> None:
        config["sources"] = [kafka_source(broker.bootstrap, topic, group, **source)]

    return tweak


def test_all_records_over_three_partitions_stored_once(
    make_daemon: Callable[..., Daemon], kafka_broker: KafkaBroker
) -> None:
    """N records over 3 partitions become N events with the record time; SIGTERM commits every
    partition's offset to its end."""
    topic, group, count = create_topic(kafka_broker.bootstrap), "g-all", 300
    produce(kafka_broker.bootstrap, topic, range(count))

    daemon = make_daemon(kafka_only(kafka_broker, topic, group))
    wait_for(lambda: len(stored_ids(daemon)) >= count, 60, f"{count} events")
    daemon.signal(signal.SIGTERM)

    assert 0 == daemon.wait()
    assert sorted(f"mobito:{mobito_uuid(n)}" for n in range(count)) == sorted(stored_ids(daemon))
    assert [count // PARTITIONS] * PARTITIONS == committed(kafka_broker.bootstrap, topic, group)
    occurred, signals = daemon.query(
        "SELECT occurred_at, signals FROM events WHERE event_id = ?",
        (f"mobito:{mobito_uuid(7)}",),
    )[0]
    assert ("2024-05-01T12:00:00.007000Z", 10_007_000.0) == (
        occurred,
        orjson.loads(signals)["Vehicle.TraveledDistance"],
    )


def test_poison_records_quarantined_and_committed_past(
    make_daemon: Callable[..., Daemon], kafka_broker: KafkaBroker
) -> None:
    """A record without vin and a garbage record go to quarantine with topic, partition and
    offset; the records around them are stored and the offsets move past all of them."""
    topic, group = create_topic(kafka_broker.bootstrap, partitions=1), "g-poison"
    no_vin = orjson.dumps({"uuid": mobito_uuid(900), "mileage": "1.0"})
    produce_raw(
        kafka_broker.bootstrap,
        topic,
        [(0, mobito_message(1)), (0, no_vin), (0, b"\x00garbage"), (0, mobito_message(2))],
    )

    daemon = make_daemon(kafka_only(kafka_broker, topic, group))
    wait_for(lambda: len(stored_ids(daemon)) >= 2, 60, "the two good records")
    wait_for(lambda: [4] == committed(kafka_broker.bootstrap, topic, group, 1), 30, "commit past 4")

    quarantined = daemon.query("SELECT reason, raw, metadata FROM quarantine ORDER BY id")
    expected = [("missing_vin", no_vin, 1), ("invalid_json", b"\x00garbage", 2)]
    assert expected == [
        (reason, raw, orjson.loads(meta)["offset"]) for reason, raw, meta in quarantined
    ]
    assert {"topic": topic, "partition": 0} == {
        k: orjson.loads(quarantined[0][2])[k] for k in ("topic", "partition")
    }
    assert sorted([f"mobito:{mobito_uuid(1)}", f"mobito:{mobito_uuid(2)}"]) == sorted(
        stored_ids(daemon)
    )


def test_sigkill_mid_stream_loses_nothing(
    make_daemon: Callable[..., Daemon], kafka_broker: KafkaBroker
) -> None:
    """Killed with SIGKILL while consuming, the restarted daemon resumes from the committed
    offsets: all N events are there, each once."""
    topic, group, count = create_topic(kafka_broker.bootstrap), "g-kill", 3000
    produce(kafka_broker.bootstrap, topic, range(count))

    def slow_batches(config: dict[str, Any]) -> None:
        kafka_only(kafka_broker, topic, group, max_in_flight_messages=20)(config)
        config["pipeline"]["batch_max_events"] = 20

    daemon = make_daemon(slow_batches)
    wait_for(lambda: len(stored_ids(daemon)) >= 300, 60, "300 events before the kill")
    daemon.signal(signal.SIGKILL)
    daemon.wait()
    before_restart = len(stored_ids(daemon))
    daemon.start()
    wait_for(lambda: len(stored_ids(daemon)) >= count, 120, f"{count} events after restart")

    assert 0 < before_restart < count
    assert [(count, count)] == daemon.query("SELECT count(*), count(DISTINCT event_id) FROM events")
    assert sorted(f"mobito:{mobito_uuid(n)}" for n in range(count)) == sorted(stored_ids(daemon))


def test_two_members_split_partitions_and_hand_over(
    make_daemon: Callable[..., Daemon], kafka_broker: KafkaBroker
) -> None:
    """Two daemons in one group share the partitions; when one stops, the other takes its
    partitions over from the committed offsets and nothing is lost."""
    topic, group = create_topic(kafka_broker.bootstrap, partitions=4), "g-pair"
    tweak = kafka_only(kafka_broker, topic, group)
    first = make_daemon(tweak, data_name="first")
    second = make_daemon(tweak, data_name="second")

    def assigned(daemon: Daemon) -> int | None:
        value = metric(daemon, 'fleetstream_kafka_rebalances_total{kind="assign",source="mobito"}')
        return int(value) if value else None

    wait_for(lambda: bool(assigned(first) and assigned(second)), 60, "both members assigned")
    produce(kafka_broker.bootstrap, topic, range(400), partitions=4)
    wait_for(lambda: len(stored_ids(first)) + len(stored_ids(second)) >= 400, 60, "400 events")
    split = (len(stored_ids(first)), len(stored_ids(second)))

    first.signal(signal.SIGTERM)
    assert 0 == first.wait()
    produce(kafka_broker.bootstrap, topic, range(400, 800), partitions=4)
    wait_for(lambda: len(set(stored_ids(first)) | set(stored_ids(second))) >= 800, 90, "800 events")

    assert (True, True) == (0 < split[0] < 400, 0 < split[1] < 400)
    union = set(stored_ids(first)) | set(stored_ids(second))
    assert {f"mobito:{mobito_uuid(n)}" for n in range(800)} == union
    assert set() == set(stored_ids(first)) & set(stored_ids(second))


def test_stall_longer_than_session_timeout_keeps_membership(
    make_daemon: Callable[..., Daemon], kafka_broker: KafkaBroker
) -> None:
    """A sink stalled (database locked) for longer than the session timeout and the poll interval
    pauses the partitions, keeps the member in its group, and loses nothing once it frees up."""
    topic, group, count = create_topic(kafka_broker.bootstrap), "g-stall", 200

    def stall_tolerant(config: dict[str, Any]) -> None:
        kafka_only(kafka_broker, topic, group, max_in_flight_messages=10, max_poll_interval_secs=7)(
            config
        )
        config["sinks"][0]["busy_timeout_secs"] = 30

    daemon = make_daemon(stall_tolerant)
    wait_for(
        lambda: bool(metric(daemon, 'fleetstream_kafka_rebalances_total{kind="assign"')),
        60,
        "assignment",
    )
    blocker = sqlite3.connect(daemon.db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        produce(kafka_broker.bootstrap, topic, range(count))
        wait_for(
            lambda: metric(daemon, 'fleetstream_kafka_paused{source="mobito"}') == 1.0,
            30,
            "the source to pause",
        )
        time.sleep(9)  # the stall itself: longer than session (6 s) and poll interval (7 s)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    wait_for(lambda: len(stored_ids(daemon)) >= count, 60, f"{count} events after the stall")

    revoked = metric(daemon, 'fleetstream_kafka_rebalances_total{kind="revoke",source="mobito"}')
    lost = metric(daemon, 'fleetstream_kafka_rebalances_total{kind="lost",source="mobito"}')
    assert (None, None) == (revoked, lost)
    assert 1.0 == metric(
        daemon, 'fleetstream_kafka_rebalances_total{kind="assign",source="mobito"}'
    )
    assert count == len(set(stored_ids(daemon)))


def test_failed_writes_rewind_and_retry(
    make_daemon: Callable[..., Daemon], kafka_broker: KafkaBroker
) -> None:
    """Records whose batch could not be written are not committed past: the partition is
    rewound, and once the database is writable again every record is stored."""
    topic, group, count = create_topic(kafka_broker.bootstrap), "g-rewind", 120

    def fail_fast(config: dict[str, Any]) -> None:
        kafka_only(kafka_broker, topic, group)(config)
        config["sinks"][0]["busy_timeout_secs"] = 0.05
        config["pipeline"]["write_retry"] = {"attempts": 1}

    daemon = make_daemon(fail_fast)
    wait_for(
        lambda: bool(metric(daemon, 'fleetstream_kafka_rebalances_total{kind="assign"')),
        60,
        "assignment",
    )
    blocker = sqlite3.connect(daemon.db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        produce(kafka_broker.bootstrap, topic, range(count))
        wait_for(
            lambda: bool(metric(daemon, 'fleetstream_sink_write_failures_total{sink="local"}')),
            30,
            "failed writes",
        )
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    wait_for(lambda: len(stored_ids(daemon)) >= count, 60, f"{count} events after recovery")

    assert sorted(f"mobito:{mobito_uuid(n)}" for n in range(count)) == sorted(stored_ids(daemon))
    rewound = [line for line in daemon.log_events() if "kafka_partition_rewound" in line]
    assert rewound, "no partition was rewound: the failure path was not exercised"
