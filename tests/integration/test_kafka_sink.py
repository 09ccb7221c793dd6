"""The Kafka sink: producer settings (no broker), and a round trip through the suite's broker."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import ValidationError

from fleetstream.config.model import KafkaSinkConfig
from fleetstream.errors import RetryableSinkError
from fleetstream.normalize.model import VehicleEvent, VehicleRef
from fleetstream.sinks.base import QuarantineRecord
from fleetstream.sinks.kafka import KafkaSink, producer_properties
from tests.integration.conftest import KafkaBroker, free_port

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def sink_config(**fields: Any) -> KafkaSinkConfig:
    base: dict[str, Any] = {"type": "kafka", "bootstrap_servers": ["b1:9092"], "topic": "events"}
    return KafkaSinkConfig.model_validate({**base, **fields})


def event(number: int, vehicle: str) -> VehicleEvent:
    return VehicleEvent(
        event_id=f"ev-{number}",
        vendor="mobito",
        source="mobito",
        type="vehicle_state",
        kind="signal",
        vehicle=VehicleRef(vin=vehicle, fleet_id="fleet-a"),
        occurred_at=T0 + timedelta(seconds=number),
        received_at=T0 + timedelta(seconds=number, microseconds=17),
        signals={"Vehicle.TraveledDistance": 1000.5 + number},
        attributes={"raw": {"uuid": f"u-{number}"}},
    )


def test_producer_is_idempotent_and_waits_for_all_replicas() -> None:
    """The producer properties ask for idempotence, acks=all and the delivery timeout."""
    props = producer_properties(sink_config(delivery_timeout_secs=7.5))
    expected = {
        "bootstrap.servers": "b1:9092",
        "enable.idempotence": True,
        "acks": "all",
        "delivery.timeout.ms": 7500,
        "security.protocol": "PLAINTEXT",
    }
    assert expected == {key: props[key] for key in expected}
    assert not any(key.startswith(("sasl.", "ssl.")) for key in props)


def test_sasl_ssl_properties() -> None:
    """SASL_SSL maps credentials and TLS files to librdkafka's keys."""
    config = sink_config(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="user",
        sasl_password="secret",
        tls={"ca_file": "/etc/ca.pem", "verify_hostname": False},
    )
    props = producer_properties(config)
    expected = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "user",
        "sasl.password": "secret",
        "ssl.ca.location": "/etc/ca.pem",
        "ssl.endpoint.identification.algorithm": "none",
    }
    assert expected == {key: props[key] for key in expected}


def test_mutual_tls_properties() -> None:
    """SSL with a client certificate maps certificate, key and key password."""
    config = sink_config(
        security_protocol="SSL",
        tls={"cert_file": "/c.pem", "key_file": "/k.pem", "key_password": "kp"},
    )
    props = producer_properties(config)
    expected = {
        "ssl.certificate.location": "/c.pem",
        "ssl.key.location": "/k.pem",
        "ssl.key.password": "kp",
        "ssl.endpoint.identification.algorithm": "https",
    }
    assert expected == {key: props[key] for key in expected}


def test_extra_properties_pass_through() -> None:
    """Unmanaged extra properties reach the producer and may replace the defaults."""
    props = producer_properties(sink_config(extra_properties={"compression.type": "zstd"}))
    assert "zstd" == props["compression.type"]


@pytest.mark.parametrize(
    "key", ["enable.idempotence", "acks", "bootstrap.servers", "security.protocol", "sasl.password"]
)
def test_managed_properties_are_refused(key: str) -> None:
    """`extra_properties` may not override what the delivery guarantee depends on."""
    with pytest.raises(ValidationError) as info:
        sink_config(extra_properties={key: "x"})
    assert f"extra_properties may not set {key}: fleetstream manages them" in str(info.value)


def test_sasl_needs_credentials() -> None:
    """A SASL protocol without mechanism, user and password is refused."""
    with pytest.raises(ValidationError) as info:
        sink_config(security_protocol="SASL_SSL")
    expected = "security_protocol SASL_SSL needs sasl_mechanism, sasl_username, sasl_password"
    assert expected in str(info.value)


def test_sasl_settings_need_sasl_protocol() -> None:
    """SASL credentials with a non-SASL protocol are refused."""
    with pytest.raises(ValidationError) as info:
        sink_config(sasl_username="user")
    assert "sasl_* settings need security_protocol" in str(info.value)


def create_topic(bootstrap: str, partitions: int = 3) -> str:
    name = f"sink-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(15)
    return name


def consume_all(
    bootstrap: str, topic: str, count: int, partitions: int = 3, timeout_secs: float = 30
) -> list[Any]:
    """Read `count` records from the start of every partition (assigned: no group join wait)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_secs
        while len(records) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            records.append(message)
    finally:
        consumer.close()
    return records


@pytest.mark.integration
@pytest.mark.timeout(120)
async def test_round_trip_through_broker(kafka_broker: KafkaBroker) -> None:
    """Published records carry the vehicle key, the event JSON and the identity headers."""
    topic = create_topic(kafka_broker.bootstrap)
    quarantine_topic = create_topic(kafka_broker.bootstrap, partitions=1)
    sink = KafkaSink(
        sink_config(
            bootstrap_servers=[kafka_broker.bootstrap],
            topic=topic,
            include_quarantine_topic=quarantine_topic,
            delivery_timeout_secs=20,
        )
    )
    events = [event(n, vehicle=f"VIN{n % 3}") for n in range(12)]
    record = QuarantineRecord("mobito", "mobito", "invalid_json", "bad", b"\xffraw", T0)
    await sink.start()
    try:
        await sink.write(events, [record])
    finally:
        await sink.close()

    records = consume_all(kafka_broker.bootstrap, topic, len(events))
    got = sorted(
        (
            (
                message.key(),
                orjson.loads(message.value()),
                [(k, bytes(v)) for k, v in message.headers() or []],
            )
            for message in records
        ),
        key=lambda r: r[1]["event_id"],
    )
    expected = sorted(
        (
            (
                e.vehicle_key.encode(),
                e.to_dict(),
                [
                    ("event_id", e.event_id.encode()),
                    ("vendor", b"mobito"),
                    ("type", b"vehicle_state"),
                ],
            )
            for e in events
        ),
        key=lambda r: r[1]["event_id"],
    )
    assert expected == got
    # One vehicle's events share a key, hence a partition, in the order they were written.
    by_key: dict[bytes, list[str]] = {}
    partitions: dict[bytes, set[int]] = {}
    for message in sorted(records, key=lambda m: (m.partition(), m.offset())):
        by_key.setdefault(message.key(), []).append(orjson.loads(message.value())["event_id"])
        partitions.setdefault(message.key(), set()).add(message.partition())
    assert all(1 == len(p) for p in partitions.values())
    expected_order = {
        f"vin:VIN{v}".encode(): [f"ev-{n}" for n in range(12) if n % 3 == v] for v in range(3)
    }
    assert expected_order == by_key

    (quarantined,) = consume_all(kafka_broker.bootstrap, quarantine_topic, 1, partitions=1)
    assert record.digest.encode() == quarantined.key()
    assert "/3Jhdw==" == orjson.loads(quarantined.value())["raw_base64"]


@pytest.mark.integration
@pytest.mark.timeout(120)
async def test_unreachable_broker_is_retryable() -> None:
    """A batch the broker never confirms raises `RetryableSinkError` after the timeout."""
    sink = KafkaSink(
        sink_config(bootstrap_servers=[f"127.0.0.1:{free_port()}"], delivery_timeout_secs=2)
    )
    await sink.start()
    try:
        with pytest.raises(RetryableSinkError):
            await sink.write([event(1, "VIN1")], [])
    finally:
        await sink.close()
