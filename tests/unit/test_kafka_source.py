"""Kafka source parts that need no broker: the offset tracker and the client configuration."""

from __future__ import annotations

from typing import Any

import pytest

from fleetstream.config.loader import parse_config
from fleetstream.config.model import KafkaSourceConfig
from fleetstream.consumers.kafka import OffsetTracker, consumer_properties
from fleetstream.errors import ConfigError

P0, P1 = ("t", 0), ("t", 1)


def tracker_with(partition: tuple[str, int], offsets: range) -> tuple[OffsetTracker, int]:
    tracker = OffsetTracker()
    epoch = 0
    for offset in offsets:
        epoch = tracker.track(partition, offset)
    return tracker, epoch


def test_commit_waits_for_the_gap() -> None:
    """Out-of-order settling never moves the commit past an unsettled offset."""
    tracker, epoch = tracker_with(P0, range(10, 15))
    tracker.settle(P0, 11, epoch)
    tracker.settle(P0, 12, epoch)
    before_gap = tracker.to_commit()

    tracker.settle(P0, 10, epoch)
    after_gap = tracker.to_commit()

    assert ({}, {P0: 13}) == (before_gap, after_gap)


def test_commit_is_reported_once_per_move() -> None:
    """After a successful commit the same offset is not offered again; a new move is."""
    tracker, epoch = tracker_with(P0, range(3))
    tracker.settle(P0, 0, epoch)
    tracker.committed(tracker.to_commit())
    unchanged = tracker.to_commit()
    tracker.settle(P0, 1, epoch)

    assert ({}, {P0: 2}) == (unchanged, tracker.to_commit())


def test_late_commit_result_never_moves_back() -> None:
    """A commit acknowledgement for an older offset arriving late does not lower `committed`."""
    tracker, epoch = tracker_with(P0, range(5))
    for offset in range(5):
        tracker.settle(P0, offset, epoch)
    tracker.committed({P0: 5})
    tracker.committed({P0: 2})

    assert {} == tracker.to_commit()


def test_partitions_are_independent() -> None:
    """A gap in one partition does not hold back another."""
    tracker, epoch0 = tracker_with(P0, range(5))
    epoch1 = 0
    for offset in range(100, 103):
        epoch1 = tracker.track(P1, offset)
    tracker.settle(P0, 1, epoch0)
    for offset in range(100, 103):
        tracker.settle(P1, offset, epoch1)

    assert {P1: 103} == tracker.to_commit()
    assert {} == tracker.to_commit([P0])


def test_rewind_starts_a_new_epoch() -> None:
    """After a rewind, outcomes of dropped deliveries (at or past the rewind point) are stale;
    deliveries before it still count, and so do the re-read ones."""
    tracker, old = tracker_with(P0, range(5))
    tracker.settle(P0, 0, old)
    tracker.rewind(P0, 2)
    current = (tracker.is_current(P0, 1, old), tracker.is_current(P0, 3, old))
    tracker.settle(P0, 3, old)
    tracker.settle(P0, 1, old)
    after_rewind = tracker.to_commit()

    new = tracker.track(P0, 2)
    tracker.track(P0, 3)
    tracker.settle(P0, 2, new)

    assert ((True, False), {P0: 2}, {P0: 3}) == (current, after_rewind, tracker.to_commit())
    assert old != new


def test_current_failure_is_recognised() -> None:
    """A pending delivery of the current epoch is current; a settled one is not."""
    tracker, epoch = tracker_with(P0, range(3))
    tracker.settle(P0, 0, epoch)

    assert (False, True) == (tracker.is_current(P0, 0, epoch), tracker.is_current(P0, 1, epoch))


def test_released_partition_ignores_late_outcomes_after_reassignment() -> None:
    """After a release and a new assignment, outcomes of the previous owner's deliveries are
    stale even for the same offsets."""
    tracker, old = tracker_with(P0, range(3))
    tracker.forget([P0])
    tracker.settle(P0, 0, old)
    released = (tracker.to_commit(), tracker.in_flight(P0))

    new = tracker.track(P0, 0)
    tracker.settle(P0, 0, old)

    assert (({}, 0), False, {}) == (released, tracker.is_current(P0, 0, old), tracker.to_commit())
    assert old != new


def source(**fields: Any) -> KafkaSourceConfig:
    base: dict[str, Any] = {
        "type": "kafka",
        "name": "mobito",
        "decoder": "mobito",
        "bootstrap_servers": ["b1:9092", "b2:9092"],
        "topics": ["fleet"],
        "group_id": "fleetstream",
    }
    base.update(fields)
    return KafkaSourceConfig.model_validate(base)


MANAGED = {
    "bootstrap.servers": "b1:9092,b2:9092",
    "group.id": "fleetstream",
    "client.id": "fleetstream-mobito",
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 45000,
    "heartbeat.interval.ms": 3000,
    "max.poll.interval.ms": 300000,
}


def test_plaintext_properties() -> None:
    """Without security settings only the managed properties are set; offsets are manual."""
    assert {**MANAGED, "security.protocol": "PLAINTEXT"} == consumer_properties(source())


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_properties(mechanism: str) -> None:
    """SASL_SSL passes mechanism, credentials and TLS files to librdkafka."""
    config = source(
        security_protocol="SASL_SSL",
        sasl_mechanism=mechanism,
        sasl_username="customer-7",
        sasl_password="s3cret",
        tls={"ca_file": "/etc/ssl/mobito-ca.pem"},
        extra_properties={"fetch.max.bytes": 1048576},
    )

    expected = {
        **MANAGED,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": mechanism,
        "sasl.username": "customer-7",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ssl/mobito-ca.pem",
        "ssl.endpoint.identification.algorithm": "https",
        "fetch.max.bytes": 1048576,
    }
    assert expected == consumer_properties(config)


def test_mutual_tls_properties() -> None:
    """SSL with a client certificate passes certificate, key, key password and the choice not
    to verify the host name."""
    config = source(
        security_protocol="SSL",
        tls={
            "ca_file": "/ca.pem",
            "cert_file": "/client.pem",
            "key_file": "/client.key",
            "key_password": "kp",
            "verify_hostname": False,
        },
    )

    expected = {
        **MANAGED,
        "security.protocol": "SSL",
        "ssl.ca.location": "/ca.pem",
        "ssl.certificate.location": "/client.pem",
        "ssl.key.location": "/client.key",
        "ssl.key.password": "kp",
        "ssl.endpoint.identification.algorithm": "none",
    }
    assert expected == consumer_properties(config)


KAFKA_YAML = """
sinks: [{type: memory}]
sources:
  - type: kafka
    name: mobito
    decoder: mobito
    bootstrap_servers: [broker:9092]
    topics: [fleet]
    group_id: g
"""


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (
            "    security_protocol: SASL_SSL\n    sasl_username: u\n",
            "sources[0]: security_protocol SASL_SSL needs sasl_mechanism, sasl_password",
        ),
        (
            "    sasl_username: u\n",
            "sources[0]: sasl_* settings need security_protocol SASL_PLAINTEXT or SASL_SSL",
        ),
        (
            "    extra_properties: {enable.auto.commit: true}\n",
            "sources[0]: extra_properties may not set enable.auto.commit: fleetstream manages them",
        ),
        (
            "    start_position: middle\n",
            "sources[0].start_position: Input should be 'earliest' or 'latest'",
        ),
    ],
    ids=["sasl-incomplete", "sasl-without-protocol", "managed-override", "bad-start"],
)
def test_invalid_kafka_settings_are_explained(extra: str, problem: str) -> None:
    """Inconsistent security settings and overrides of managed properties are config errors."""
    with pytest.raises(ConfigError) as raised:
        parse_config(KAFKA_YAML + extra, origin="k.yaml")

    expected = f"k.yaml: invalid configuration (1 problem(s))\n  {problem}"
    assert expected == str(raised.value)


def test_password_from_environment() -> None:
    """The SASL password can come from the environment and reaches librdkafka unchanged."""
    text = KAFKA_YAML + (
        "    security_protocol: SASL_SSL\n    sasl_mechanism: SCRAM-SHA-512\n"
        "    sasl_username: u\n    sasl_password: ${MOBITO_PASSWORD}\n"
    )
    config = parse_config(text, environ={"MOBITO_PASSWORD": "from-env"})
    kafka = config.sources[0]
    assert isinstance(kafka, KafkaSourceConfig)

    assert "from-env" == consumer_properties(kafka)["sasl.password"]
