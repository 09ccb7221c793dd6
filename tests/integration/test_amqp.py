"""The AMQP source against a real RabbitMQ, with the INVERS decoder."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import orjson
import pytest

from tests.integration.conftest import Daemon, RabbitNode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def event_ulid(number: int) -> str:
    return f"01HX{number:022d}"


def invers_event(number: int, event_type: str = "VehicleStateRecorded") -> bytes:
    at = (T0 + timedelta(seconds=number)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return orjson.dumps(
        {
            "metadata": {
                "id": event_ulid(number),
                "type": event_type,
                "schema_major_version": 2,
                "occurred_at": at,
                "flow_id": str(uuid.UUID(int=number)),
            },
            "data": {
                "vehicle_id": f"veh-{number % 11}",
                "vehicle_state": {
                    "mileage_in_kilometers": {"timestamp": at, "value": 1000 + number},
                    "central_lock": {"timestamp": at, "value": "LOCKED"},
                },
            },
        }
    )


async def publish(
    host: str, port: int, queue: str, numbers: range, *, vhost: str = "/", **props: Any
) -> None:
    """Declare `queue` (durable) and publish INVERS events with their AMQP properties."""
    connection = await aio_pika.connect(host=host, port=port, virtualhost=vhost)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        for number in numbers:
            event_type = props.get("type", "VehicleStateRecorded")
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body=invers_event(number, event_type),
                    message_id=event_ulid(number),
                    type=event_type,
                    timestamp=T0 + timedelta(seconds=number),
                    correlation_id=str(uuid.UUID(int=number)),
                    headers={"schema_major_version": 2},
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=queue,
            )


async def publish_raw(host: str, port: int, queue: str, bodies: list[bytes]) -> None:
    connection = await aio_pika.connect(host=host, port=port)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        for body in bodies:
            await channel.default_exchange.publish(
                aio_pika.Message(body=body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue,
            )


async def queue_depth(host: str, port: int, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) of a queue."""
    connection = await aio_pika.connect(host=host, port=port)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True, passive=True)
        result = declared.declaration_result
        return result.message_count, result.consumer_count


async def delete_queue(host: str, port: int, queue: str) -> None:
    connection = await aio_pika.connect(host=host, port=port)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)


def stored_ids(daemon: Daemon) -> list[str]:
    if not daemon.db_path.exists():
        return []
    try:
        return [row[0] for row in daemon.query("SELECT event_id FROM events")]
    except sqlite3.OperationalError:
        return []


async def wait_for(condition: Callable[[], bool], timeout_secs: float, what: str) -> None:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_secs}s waiting for {what}")


def readiness(daemon: Daemon) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{daemon.url}/readyz", timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def metric(daemon: Daemon, line_prefix: str) -> float | None:
    with urllib.request.urlopen(f"{daemon.url}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(line_prefix):
                return float(line.rsplit(" ", 1)[1])
    return None


def amqp_only(host: str, port: int, queue: str, **source: Any) -> Callable[[dict[str, Any]], None]:
    def tweak(config: dict[str, Any]) -> None:
        entry: dict[str, Any] = {
            "type": "amqp",
            "name": "invers",
            "decoder": "invers",
            "host": host,
            "port": port,
            "queues": [queue],
            "reconnect_initial_secs": 0.2,
            "reconnect_max_secs": 1,
        }
        entry.update(source)
        config["sources"] = [entry]

    return tweak


def expected_ids(numbers: range) -> list[str]:
    return sorted(f"invers:{event_ulid(n)}" for n in numbers)


async def test_n_events_consumed_and_acked(
    make_daemon: Callable[..., Daemon], rabbitmq: tuple[str, int]
) -> None:
    """N INVERS events with realistic properties become N events with per-signal times, and
    the queue is left empty with the consumer gone after SIGTERM."""
    host, port = rabbitmq
    queue, count = f"invers-{uuid.uuid4().hex[:8]}", 200
    await publish(host, port, queue, range(count))

    daemon = make_daemon(amqp_only(host, port, queue))
    await wait_for(lambda: len(stored_ids(daemon)) >= count, 60, f"{count} events")
    daemon.signal(signal.SIGTERM)

    assert 0 == daemon.wait()
    assert expected_ids(range(count)) == sorted(stored_ids(daemon))
    assert (0, 0) == await queue_depth(host, port, queue)
    signal_times = daemon.query(
        "SELECT signal_times FROM events WHERE event_id = ?", (f"invers:{event_ulid(5)}",)
    )[0][0]
    assert "2024-05-01T12:00:05.000000Z" == orjson.loads(signal_times)["Vehicle.TraveledDistance"]
    await delete_queue(host, port, queue)


async def test_unacked_messages_return_after_sigkill(
    make_daemon: Callable[..., Daemon], rabbitmq: tuple[str, int]
) -> None:
    """Messages delivered but not acknowledged when the daemon is SIGKILLed are delivered again
    to the restarted daemon: all N stored, none twice."""
    host, port = rabbitmq
    queue, count = f"invers-{uuid.uuid4().hex[:8]}", 2000
    await publish(host, port, queue, range(count))

    def small_batches(config: dict[str, Any]) -> None:
        amqp_only(host, port, queue, prefetch=20)(config)
        config["pipeline"]["batch_max_events"] = 20

    daemon = make_daemon(small_batches)
    await wait_for(lambda: len(stored_ids(daemon)) >= 200, 60, "200 events before the kill")
    daemon.signal(signal.SIGKILL)
    daemon.wait()
    before_restart = len(stored_ids(daemon))
    daemon.start()
    await wait_for(lambda: len(stored_ids(daemon)) >= count, 120, f"{count} events")

    assert 0 < before_restart < count
    assert [(count, count)] == daemon.query("SELECT count(*), count(DISTINCT event_id) FROM events")
    assert expected_ids(range(count)) == sorted(stored_ids(daemon))
    await delete_queue(host, port, queue)


async def test_broker_restart_while_consuming(
    make_daemon: Callable[..., Daemon], private_rabbitmq: RabbitNode
) -> None:
    """The broker is stopped and started while the daemon consumes: it reconnects, restores
    its consumer and finishes the stream."""
    node = private_rabbitmq
    queue = "invers-restart"
    await publish("127.0.0.1", node.port, queue, range(100))
    daemon = make_daemon(amqp_only("127.0.0.1", node.port, queue))
    await wait_for(lambda: len(stored_ids(daemon)) >= 100, 60, "the first 100 events")

    await asyncio.to_thread(node.stop)
    await wait_for(lambda: readiness(daemon)[0] == 503, 30, "readiness to drop")
    await asyncio.to_thread(node.start)
    await publish("127.0.0.1", node.port, queue, range(100, 200))
    await wait_for(lambda: len(stored_ids(daemon)) >= 200, 90, "all 200 events")

    assert expected_ids(range(200)) == sorted(stored_ids(daemon))
    assert 200 == readiness(daemon)[0]
    reconnects = metric(daemon, 'fleetstream_amqp_reconnects_total{reason="connection closed"')
    assert reconnects is not None
    assert reconnects >= 1


async def test_poison_message_quarantined_rest_flows(
    make_daemon: Callable[..., Daemon], rabbitmq: tuple[str, int]
) -> None:
    """A poison message between good ones is quarantined with its AMQP properties and acked;
    the good ones are stored and the queue drains."""
    host, port = rabbitmq
    queue = f"invers-{uuid.uuid4().hex[:8]}"
    await publish(host, port, queue, range(0, 3))
    await publish_raw(host, port, queue, [b"{not json", b'{"metadata": {}, "data": {}}'])
    await publish(host, port, queue, range(3, 6))

    daemon = make_daemon(amqp_only(host, port, queue))
    await wait_for(lambda: len(stored_ids(daemon)) >= 6, 60, "the six good events")
    await wait_for(
        lambda: len(daemon.query("SELECT id FROM quarantine")) >= 2, 30, "two quarantined"
    )

    rows = daemon.query("SELECT reason, raw, metadata FROM quarantine ORDER BY id")
    assert [("invalid_json", b"{not json"), ("missing_field", b'{"metadata": {}, "data": {}}')] == [
        (reason, raw) for reason, raw, _ in rows
    ]
    assert queue == orjson.loads(rows[0][2])["queue"]
    assert expected_ids(range(6)) == sorted(stored_ids(daemon))
    assert (0, 1) == await queue_depth(host, port, queue)
    await delete_queue(host, port, queue)


async def test_type_filter_acks_other_types_unparsed(
    make_daemon: Callable[..., Daemon], rabbitmq: tuple[str, int]
) -> None:
    """With `types` set, messages of other AMQP types are acknowledged and counted, not stored;
    a message without a type property is decoded (its body says what it is)."""
    host, port = rabbitmq
    queue = f"invers-{uuid.uuid4().hex[:8]}"
    await publish(host, port, queue, range(0, 5), type="TripStarted")
    await publish(host, port, queue, range(5, 10))
    await publish_raw(host, port, queue, [invers_event(10)])  # no AMQP type: decoded anyway

    daemon = make_daemon(amqp_only(host, port, queue, types=["VehicleStateRecorded"]))
    await wait_for(lambda: len(stored_ids(daemon)) >= 6, 60, "the six wanted events")
    await wait_for(
        lambda: metric(daemon, 'fleetstream_amqp_settled_total{outcome="filtered"') == 5.0,
        30,
        "five filtered",
    )

    assert expected_ids(range(5, 11)) == sorted(stored_ids(daemon))
    assert (0, 1) == await queue_depth(host, port, queue)
    await delete_queue(host, port, queue)


async def test_broker_cancelled_consumer_is_restored(
    make_daemon: Callable[..., Daemon], rabbitmq: tuple[str, int]
) -> None:
    """When the broker cancels the consumer (its queue was deleted), the source ends the
    session, reconnects, declares and consumes again: later messages are stored."""
    host, port = rabbitmq
    queue = f"invers-{uuid.uuid4().hex[:8]}"
    await publish(host, port, queue, range(0, 10))
    daemon = make_daemon(amqp_only(host, port, queue, declare_queues=True))
    await wait_for(lambda: len(stored_ids(daemon)) >= 10, 60, "the first ten events")

    await delete_queue(host, port, queue)
    await wait_for(
        lambda: bool(metric(daemon, 'fleetstream_amqp_reconnects_total{reason="consumer cancel')),
        30,
        "a reconnect after the broker's cancel",
    )
    await wait_for(lambda: readiness(daemon)[0] == 200, 30, "ready again")
    await publish(host, port, queue, range(10, 20))
    await wait_for(lambda: len(stored_ids(daemon)) >= 20, 60, "the next ten events")

    assert expected_ids(range(20)) == sorted(stored_ids(daemon))
    await delete_queue(host, port, queue)


async def test_silent_queue_makes_daemon_not_ready(
    make_daemon: Callable[..., Daemon], rabbitmq: tuple[str, int]
) -> None:
    """A queue without messages for `idle_alarm_secs` turns /readyz to 503 naming the queue;
    a message turns it back."""
    host, port = rabbitmq
    queue = f"invers-{uuid.uuid4().hex[:8]}"
    await publish(host, port, queue, range(0))
    daemon = make_daemon(amqp_only(host, port, queue, idle_alarm_secs=3), start=False)
    daemon.start()

    await wait_for(lambda: readiness(daemon)[0] == 503, 30, "the idle alarm")
    _, body = readiness(daemon)
    await publish(host, port, queue, range(1))
    await wait_for(lambda: readiness(daemon)[0] == 200, 30, "ready after a message")

    assert [f"invers/{queue}"] == list(body["problems"])
    await delete_queue(host, port, queue)


async def test_missing_queue_does_not_stop_the_others(
    make_daemon: Callable[..., Daemon], rabbitmq: tuple[str, int]
) -> None:
    """With one of two queues missing, the other is consumed; readiness names the missing one;
    once it exists it is consumed too."""
    host, port = rabbitmq
    present, missing = f"invers-{uuid.uuid4().hex[:8]}", f"invers-{uuid.uuid4().hex[:8]}"
    await publish(host, port, present, range(0, 5))

    daemon = make_daemon(amqp_only(host, port, present, queues=[present, missing]), start=False)
    daemon.start(until="/healthz")
    await wait_for(lambda: len(stored_ids(daemon)) >= 5, 60, "the present queue's events")
    status, body = readiness(daemon)
    await publish(host, port, missing, range(5, 8))
    await wait_for(lambda: len(stored_ids(daemon)) >= 8, 60, "the late queue's events")

    assert (503, [f"invers/{missing}"]) == (status, list(body["problems"]))
    assert expected_ids(range(8)) == sorted(stored_ids(daemon))
    for queue in (present, missing):
        await delete_queue(host, port, queue)


async def test_sigterm_while_connecting_exits_cleanly(
    make_daemon: Callable[..., Daemon],
) -> None:
    """SIGTERM while the connection attempt hangs (a listener that never answers) stops the
    daemon with exit code 0, within the connect timeout."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        daemon = make_daemon(amqp_only("127.0.0.1", port, "q", connect_timeout_secs=3), start=False)
        silent.settimeout(20)
        daemon.start(until="/healthz")
        attempt, _ = await asyncio.to_thread(silent.accept)  # the connect is now in progress
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        code = await asyncio.to_thread(daemon.wait, 30)
        attempt.close()

    assert 0 == code
    assert time.monotonic() - started < 15
