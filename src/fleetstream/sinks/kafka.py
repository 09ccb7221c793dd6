"""Kafka sink (confluent-kafka): canonical events as JSON records, confirmed before settling.

Each event becomes one record on `topic`: key the vehicle key (so one vehicle's events keep
their order within a partition), value `VehicleEvent.to_dict()` as JSON, headers `event_id`,
`vendor` and `type`. The producer is idempotent (`enable.idempotence=true`, `acks=all`), so
librdkafka's own retries never duplicate or reorder a record.

Durability: `write` produces the whole batch, then waits until the delivery report of every
record came back, at most `delivery_timeout_secs` (which is also librdkafka's
`delivery.timeout.ms`, so an undeliverable record fails rather than lingering). If any record
failed or the wait ran out, the write raises `RetryableSinkError` and the pipeline retries the
whole batch. Records that did reach the broker are then published again: the topic is
at-least-once, and consumers dedupe by the `event_id` header.

Quarantine records are published to `include_quarantine_topic` when it is set (keyed by their
digest, raw bytes in base64), and ignored otherwise.

All client calls run on one worker thread; delivery callbacks fire there, inside `flush`/`poll`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from fleetstream.config.model import KafkaSinkConfig
from fleetstream.consumers.kafka import security_properties
from fleetstream.errors import RetryableSinkError
from fleetstream.normalize.model import VehicleEvent
from fleetstream.sinks.base import QuarantineRecord
from fleetstream.sinks.jsonl import quarantine_dict

log = structlog.get_logger("fleetstream.kafka_sink")

_POLL_SLICE_SECS = 0.1


def producer_properties(config: KafkaSinkConfig) -> dict[str, Any]:
    """The librdkafka configuration for the sink: what fleetstream manages, then the extras."""
    props: dict[str, Any] = {
        "bootstrap.servers": ",".join(config.bootstrap_servers),
        "client.id": f"fleetstream-{config.name}",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "delivery.timeout.ms": max(1, int(config.delivery_timeout_secs * 1000)),
        "security.protocol": config.security_protocol,
    }
    props.update(security_properties(config))
    props.update(config.extra_properties)
    return props


@dataclass(slots=True)
class _Batch:
    """Delivery reports of one write: how many are outstanding and which failed."""

    pending: int = 0
    errors: list[str] = field(default_factory=list)

    def report(self, err: KafkaError | None, msg: Message) -> None:
        self.pending -= 1
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err.str()}")


class KafkaSink:
    def __init__(self, config: KafkaSinkConfig) -> None:
        self.name = config.name
        self._topic = config.topic
        self._quarantine_topic = config.include_quarantine_topic
        self._timeout_secs = config.delivery_timeout_secs
        self._properties = producer_properties(config)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kafka-{self.name}")
        self._producer: Producer | None = None
        self._fatal: str | None = None

    async def start(self) -> None:
        await self._run(self._open)

    async def write(
        self, events: Sequence[VehicleEvent], quarantine: Sequence[QuarantineRecord]
    ) -> None:
        try:
            await self._run(self._write, events, quarantine)
        except (KafkaException, BufferError) as exc:
            raise RetryableSinkError(f"kafka sink {self.name}: {exc}") from exc

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # Everything below runs on the sink's worker thread. ------------------------------------

    def _open(self) -> None:
        props = {**self._properties, "error_cb": self._on_error}
        self._producer = Producer(props)
        self._fatal = None

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err.str()
            log.error("kafka_sink_fatal_error", sink=self.name, error=err.str())
        else:
            log.warning("kafka_sink_client_error", sink=self.name, error=err.str())

    def _close(self) -> None:
        if self._producer is not None:
            remaining = self._producer.flush(self._timeout_secs)
            if remaining:
                log.warning("kafka_sink_undelivered_at_close", sink=self.name, records=remaining)
            self._producer = None

    def _write(
        self, events: Sequence[VehicleEvent], quarantine: Sequence[QuarantineRecord]
    ) -> None:
        if self._fatal is not None or self._producer is None:
            # A fatal error (idempotence state lost) leaves the producer unusable: start over.
            if self._fatal is not None:
                log.warning("kafka_sink_producer_recreated", sink=self.name, reason=self._fatal)
            self._open()
        producer = self._producer
        assert producer is not None
        deadline = time.monotonic() + self._timeout_secs
        batch = _Batch()
        for event in events:
            self._produce(
                producer,
                batch,
                deadline,
                self._topic,
                key=event.vehicle_key.encode(),
                value=orjson.dumps(event.to_dict(), default=str),
                headers=[
                    ("event_id", event.event_id.encode()),
                    ("vendor", event.vendor.encode()),
                    ("type", event.type.encode()),
                ],
            )
        if self._quarantine_topic is not None:
            for record in quarantine:
                self._produce(
                    producer,
                    batch,
                    deadline,
                    self._quarantine_topic,
                    key=record.digest.encode(),
                    value=orjson.dumps(quarantine_dict(record), default=str),
                    headers=[
                        ("source", record.source.encode()),
                        ("reason", record.reason.encode()),
                    ],
                )
        while batch.pending > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            producer.flush(min(remaining, 1.0))
        if batch.errors:
            raise RetryableSinkError(
                f"kafka sink {self.name}: {len(batch.errors)} record(s) not delivered, "
                f"first: {batch.errors[0]}"
            )
        if batch.pending > 0:
            raise RetryableSinkError(
                f"kafka sink {self.name}: {batch.pending} record(s) not confirmed within "
                f"{self._timeout_secs}s"
            )
        if self._fatal is not None:
            raise RetryableSinkError(f"kafka sink {self.name}: producer failed: {self._fatal}")

    def _produce(
        self,
        producer: Producer,
        batch: _Batch,
        deadline: float,
        topic: str,
        *,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, str | bytes | None]],
    ) -> None:
        """Queue one record; while the local queue is full, serve delivery reports and retry."""
        while True:
            try:
                producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=batch.report
                )
            except BufferError:
                if time.monotonic() >= deadline:
                    raise RetryableSinkError(
                        f"kafka sink {self.name}: producer queue still full after "
                        f"{self._timeout_secs}s"
                    ) from None
                producer.poll(_POLL_SLICE_SECS)
                continue
            batch.pending += 1
            return
