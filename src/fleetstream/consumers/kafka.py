"""Kafka source (confluent-kafka): a consumer-group member with explicit, gap-free commits.

Delivery: offsets are never auto-committed or auto-stored. Each record is tracked per partition
from the moment it is handed to the pipeline; the committed offset of a partition only moves past
a record once it and every record before it settled (written to every sink, or its raw bytes
quarantined). Records may settle out of order; the commit never passes a gap. Commits happen
every `commit_interval_secs`, on partition revocation and on shutdown.

A record whose batch could not be written (sinks down past their retries) is not acknowledged:
its partition is rewound to it, so it is read and tried again, with everything after it.

Backpressure: when the source has `max_in_flight_messages` records unsettled, its partitions are
paused and the consumer keeps polling, so it keeps its group membership however long the sinks
stall; they are resumed when there is room.

All client calls run on one worker thread (the client is blocking); the rebalance callbacks run
there too, inside `consume`. The offset tracker is shared with the event loop under a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from prometheus_client import CollectorRegistry, Counter, Gauge

from fleetstream.config.model import KafkaSinkConfig, KafkaSourceConfig
from fleetstream.errors import PipelineClosed
from fleetstream.pipeline import Outcome, SourceHandle
from fleetstream.telemetry.metrics import Telemetry

log = structlog.get_logger("fleetstream.kafka")

_T = TypeVar("_T")
_PAUSED_POLL_SECS = 0.02
Partition = tuple[str, int]


def consumer_properties(config: KafkaSourceConfig) -> dict[str, Any]:
    """The librdkafka configuration for a source: what fleetstream manages, then the extras."""
    props: dict[str, Any] = {
        "bootstrap.servers": ",".join(config.bootstrap_servers),
        "group.id": config.group_id,
        "client.id": f"fleetstream-{config.name}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": config.start_position,
        "session.timeout.ms": int(config.session_timeout_secs * 1000),
        "heartbeat.interval.ms": int(config.heartbeat_interval_secs * 1000),
        "max.poll.interval.ms": int(config.max_poll_interval_secs * 1000),
        "security.protocol": config.security_protocol,
    }
    props.update(security_properties(config))
    props.update(config.extra_properties)
    return props


def security_properties(config: KafkaSourceConfig | KafkaSinkConfig) -> dict[str, Any]:
    """SASL and TLS settings as librdkafka properties; shared by the source and the sink."""
    props: dict[str, Any] = {}
    if config.security_protocol.startswith("SASL_"):
        assert config.sasl_password is not None
        props["sasl.mechanism"] = config.sasl_mechanism
        props["sasl.username"] = config.sasl_username
        props["sasl.password"] = config.sasl_password.get_secret_value()
    if config.security_protocol in ("SSL", "SASL_SSL"):
        tls = config.tls
        props["ssl.endpoint.identification.algorithm"] = "https" if tls.verify_hostname else "none"
        if tls.ca_file is not None:
            props["ssl.ca.location"] = str(tls.ca_file)
        if tls.cert_file is not None:
            props["ssl.certificate.location"] = str(tls.cert_file)
        if tls.key_file is not None:
            props["ssl.key.location"] = str(tls.key_file)
        if tls.key_password is not None:
            props["ssl.key.password"] = tls.key_password.get_secret_value()
    return props


@dataclass(slots=True)
class _PartitionOffsets:
    epoch: int
    """Bumped by every rewind and release; each pending offset remembers the epoch it was
    handed over in, so outcomes of deliveries a rewind made obsolete can be recognised."""
    pending: deque[int] = field(default_factory=deque)
    epochs: dict[int, int] = field(default_factory=dict)
    settled: set[int] = field(default_factory=set)
    commit_at: int | None = None
    """Next offset to read once everything before it settled: what a commit stores."""
    committed: int | None = None


class OffsetTracker:
    """Which offsets of each partition are in flight, and how far a commit may go.

    Each tracked offset carries the partition's epoch at the time it was handed over. A rewind
    drops the offsets from the rewind point on and starts a new epoch; a release forgets the
    partition. Outcomes of deliveries that were dropped (still in the pipeline) are then told
    apart from those of the re-read and ignored.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partitions: dict[Partition, _PartitionOffsets] = {}
        self._epochs: dict[Partition, int] = {}

    def track(self, partition: Partition, offset: int) -> int:
        """Start tracking `offset`; returns the epoch to pass to `settle` / `is_current`."""
        with self._lock:
            state = self._partitions.get(partition)
            if state is None:
                state = _PartitionOffsets(epoch=self._epochs.get(partition, 0))
                self._partitions[partition] = state
            state.pending.append(offset)
            state.epochs[offset] = state.epoch
            return state.epoch

    def is_current(self, partition: Partition, offset: int, epoch: int) -> bool:
        """Whether this delivery of `offset` is the tracked, unsettled one."""
        with self._lock:
            state = self._partitions.get(partition)
            return (
                state is not None
                and state.epochs.get(offset) == epoch
                and offset not in state.settled
            )

    def settle(self, partition: Partition, offset: int, epoch: int) -> None:
        with self._lock:
            state = self._partitions.get(partition)
            if state is None or state.epochs.get(offset) != epoch:
                return  # released or rewound meanwhile: the re-read or the new owner decides
            state.settled.add(offset)
            while state.pending and state.pending[0] in state.settled:
                done = state.pending.popleft()
                state.settled.discard(done)
                del state.epochs[done]
                state.commit_at = done + 1

    def rewind(self, partition: Partition, offset: int) -> None:
        """Forget `offset` and everything after it (they will be read again); new epoch."""
        with self._lock:
            state = self._partitions.get(partition)
            if state is None:
                return
            state.pending = deque(o for o in state.pending if o < offset)
            state.settled = {o for o in state.settled if o < offset}
            state.epochs = {o: e for o, e in state.epochs.items() if o < offset}
            state.epoch = self._next_epoch(partition)

    def to_commit(self, partitions: list[Partition] | None = None) -> dict[Partition, int]:
        """Offsets that moved since their last successful commit."""
        with self._lock:
            chosen = self._partitions.keys() if partitions is None else partitions
            out = {}
            for p in chosen:
                state = self._partitions.get(p)
                if state and state.commit_at is not None and state.commit_at != state.committed:
                    out[p] = state.commit_at
            return out

    def position(self, partition: Partition) -> int | None:
        """The offset below which everything settled, if anything settled since assignment."""
        with self._lock:
            state = self._partitions.get(partition)
            return state.commit_at if state else None

    def committed(self, offsets: dict[Partition, int]) -> None:
        with self._lock:
            for p, offset in offsets.items():
                state = self._partitions.get(p)
                if state is not None and (state.committed is None or offset > state.committed):
                    state.committed = offset

    def forget(self, partitions: list[Partition]) -> None:
        with self._lock:
            for p in partitions:
                if self._partitions.pop(p, None) is not None:
                    self._next_epoch(p)

    def in_flight(self, partition: Partition) -> int:
        with self._lock:
            state = self._partitions.get(partition)
            return len(state.pending) if state else 0

    def _next_epoch(self, partition: Partition) -> int:
        epoch = self._epochs.get(partition, 0) + 1
        self._epochs[partition] = epoch
        return epoch


class _KafkaMetrics:
    def __init__(self, telemetry: Telemetry) -> None:
        r = telemetry.registry
        self.lag = Gauge(
            "fleetstream_kafka_consumer_lag",
            "Records between the committed offset and the partition's high watermark, as last "
            "reported by the broker.",
            ["source", "topic", "partition"],
            registry=r,
        )
        self.commit_failures = Counter(
            "fleetstream_kafka_commit_failures", "Failed offset commits.", ["source"], registry=r
        )
        self.rebalances = Counter(
            "fleetstream_kafka_rebalances",
            "Partition assignments, revocations and losses.",
            ["source", "kind"],
            registry=r,
        )
        self.paused = Gauge(
            "fleetstream_kafka_paused",
            "1 while the source's partitions are paused for backpressure.",
            ["source"],
            registry=r,
        )
        self.errors = Counter(
            "fleetstream_kafka_errors", "Errors reported by the client.", ["source"], registry=r
        )


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _KafkaMetrics] = weakref.WeakKeyDictionary()


def _metrics(telemetry: Telemetry) -> _KafkaMetrics:
    """One set of these metrics per registry, shared by every source of the kind."""
    registry = telemetry.registry
    if registry not in _METRICS:
        _METRICS[registry] = _KafkaMetrics(telemetry)
    return _METRICS[registry]


class KafkaSource:
    def __init__(
        self, config: KafkaSourceConfig, handle: SourceHandle, telemetry: Telemetry
    ) -> None:
        self.name = config.name
        self._config = config
        self._handle = handle
        self._metrics = _metrics(telemetry)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kafka-{self.name}")
        self._consumer: Consumer | None = None
        self._tracker = OffsetTracker()
        self._held: deque[Message] = deque()
        self._rewinds: dict[Partition, int] = {}
        self._assigned: set[Partition] = set()
        self._paused = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._last_commit = 0.0
        self._fatal: str | None = None
        self._cooperative = False

    # Lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        properties = consumer_properties(self._config)
        properties["on_commit"] = self._on_commit
        strategy = str(properties.get("partition.assignment.strategy", ""))
        self._cooperative = "cooperative" in strategy
        self._consumer = Consumer(properties)
        await self._call(
            self._consumer.subscribe,
            self._config.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._metrics.paused.labels(self.name).set(0)
        self._task = asyncio.create_task(self._run(), name=f"kafka-{self.name}")
        log.info(
            "kafka_source_started",
            source=self.name,
            topics=self._config.topics,
            group=self._config.group_id,
        )

    async def stop_intake(self) -> None:
        """Stop reading new records; records already admitted keep settling."""
        self._stopping = True
        if self._task is not None:
            # A loop that died was logged and reported as not ready; shutdown goes on.
            with contextlib.suppress(Exception):
                await self._task

    async def close(self) -> None:
        """Commit what settled and leave the group. Call after the pipeline drained."""
        if self._consumer is not None:
            await self._call(self._commit)
            await self._call(self._consumer.close)
            self._consumer = None
        self._executor.shutdown(wait=True)
        log.info("kafka_source_closed", source=self.name)

    def problems(self) -> dict[str, str]:
        if self._fatal is not None:
            return {self.name: self._fatal}
        if not self._assigned:
            return {self.name: "no partitions assigned"}
        return {}

    def failure(self) -> str | None:
        return self._fatal

    # The poll loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        config = self._config
        try:
            while not self._stopping:
                await self._apply_rewinds()
                await self._admit_held()
                want_pause = bool(self._held) or self._handle.full
                if want_pause != self._paused:
                    await self._call(self._set_paused, want_pause)
                room = self._handle.limit - self._handle.in_flight
                count = 1 if want_pause else max(1, min(room, config.poll_batch_max))
                consumer = self._consumer
                assert consumer is not None
                # While paused, poll briefly: room in the pipeline is noticed within tens of ms.
                timeout = _PAUSED_POLL_SECS if want_pause else config.poll_timeout_secs
                records = await self._call(consumer.consume, count, timeout)
                for record in records:
                    error = record.error()
                    if error is None:
                        self._held.append(record)
                    else:
                        self._client_error(error)
                await self._admit_held()
                if time.monotonic() - self._last_commit >= config.commit_interval_secs:
                    await self._call(self._commit, None, wait=False)
        except PipelineClosed:
            pass
        except Exception:
            log.exception("kafka_poll_loop_failed", source=self.name)
            self._fatal = "poll loop failed; see logs"
            raise

    async def _admit_held(self) -> None:
        while self._held and not self._handle.full:
            record = self._held.popleft()
            topic, partition, offset = record.topic(), record.partition(), record.offset()
            assert topic is not None
            assert partition is not None
            assert offset is not None
            key: Partition = (topic, partition)
            if key not in self._assigned:
                continue  # revoked while it waited
            epoch = self._tracker.track(key, offset)
            future = await self._handle.submit(record.value() or b"", _metadata(record), wait=False)
            future.add_done_callback(self._settled_callback(key, offset, epoch))

    def _settled_callback(
        self, partition: Partition, offset: int, epoch: int
    ) -> Callable[[asyncio.Future[Outcome]], None]:
        def settled(future: asyncio.Future[Outcome]) -> None:
            if not (future.cancelled() or future.exception() is not None):
                self._tracker.settle(partition, offset, epoch)
            elif self._tracker.is_current(partition, offset, epoch):
                # Only a failure of the current delivery rewinds: a stale copy failing late
                # must not seek past records the re-read has not reached yet.
                current = self._rewinds.get(partition)
                self._rewinds[partition] = offset if current is None else min(current, offset)

        return settled

    async def _apply_rewinds(self) -> None:
        if not self._rewinds:
            return
        rewinds, self._rewinds = self._rewinds, {}
        for partition, offset in rewinds.items():
            if partition not in self._assigned:
                continue
            self._tracker.rewind(partition, offset)
            self._held = deque(r for r in self._held if (r.topic(), r.partition()) != partition)
            consumer = self._consumer
            assert consumer is not None
            await self._call(consumer.seek, TopicPartition(partition[0], partition[1], offset))
            log.warning(
                "kafka_partition_rewound", source=self.name, partition=partition, offset=offset
            )

    # Everything below runs on the client's worker thread. -----------------------------------

    def _set_paused(self, paused: bool) -> None:
        consumer = self._consumer
        assert consumer is not None
        partitions = [TopicPartition(t, p) for t, p in self._assigned]
        if partitions:
            (consumer.pause if paused else consumer.resume)(partitions)
        self._paused = paused
        self._metrics.paused.labels(self.name).set(int(paused))
        log.debug(
            "kafka_paused" if paused else "kafka_resumed",
            source=self.name,
            partitions=len(partitions),
        )

    def _commit(self, only: list[Partition] | None = None, *, wait: bool = True) -> None:
        """Commit settled offsets. Periodic commits don't wait (a broker outage must not stall
        the poll loop): their result arrives in `_on_commit`. Revocation and shutdown wait."""
        self._last_commit = time.monotonic()
        consumer = self._consumer
        if consumer is None:
            return
        offsets = self._tracker.to_commit(only)
        if offsets:
            partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            try:
                if wait:
                    consumer.commit(offsets=partitions, asynchronous=False)
                    self._tracker.committed(offsets)
                else:
                    consumer.commit(offsets=partitions, asynchronous=True)
            except KafkaException as exc:
                self._metrics.commit_failures.labels(self.name).inc()
                log.warning("kafka_commit_failed", source=self.name, error=str(exc))
        self._update_lag(consumer)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:
            self._metrics.commit_failures.labels(self.name).inc()
            log.warning("kafka_commit_failed", source=self.name, error=error.str())
            return
        done = {(tp.topic, tp.partition): tp.offset for tp in partitions if tp.error is None}
        self._tracker.committed(done)

    def _update_lag(self, consumer: Consumer) -> None:
        """Lag from the cached high watermark of the last fetch (it does not move while a
        partition is paused) to the offset below which everything settled."""
        for topic, partition in self._assigned:
            position = self._tracker.position((topic, partition))
            if position is None:
                continue
            try:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except KafkaException:
                continue
            if high >= 0:
                self._metrics.lag.labels(self.name, topic, str(partition)).set(
                    max(0, high - position)
                )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._assigned.update(keys)
        self._metrics.rebalances.labels(self.name, "assign").inc()
        # Assign here rather than after the callback, so the pause state can be set on the
        # partitions: librdkafka keeps a partition's pause flag across revocations, so a
        # partition coming back must be resumed explicitly when the source is not paused.
        if self._cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        if partitions:
            (consumer.pause if self._paused else consumer.resume)(partitions)
        log.info("kafka_partitions_assigned", source=self.name, partitions=sorted(keys))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._commit(keys)
        self._release(keys, "revoke")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._release([(tp.topic, tp.partition) for tp in partitions], "lost")

    def _release(self, keys: list[Partition], kind: str) -> None:
        self._assigned.difference_update(keys)
        self._tracker.forget(keys)
        released = set(keys)
        self._held = deque(r for r in self._held if (r.topic(), r.partition()) not in released)
        for key in released:
            self._rewinds.pop(key, None)
        for topic, partition in keys:
            with contextlib.suppress(KeyError):
                self._metrics.lag.remove(self.name, topic, str(partition))
        self._metrics.rebalances.labels(self.name, kind).inc()
        log.info("kafka_partitions_released", source=self.name, kind=kind, partitions=sorted(keys))

    def _client_error(self, error: KafkaError) -> None:
        self._metrics.errors.labels(self.name).inc()
        if error.fatal():
            self._fatal = f"fatal client error: {error.str()}"
        log.warning(
            "kafka_client_error",
            source=self.name,
            error=error.str(),
            code=error.name(),
            fatal=error.fatal(),
        )

    async def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))


def _metadata(record: Message) -> dict[str, Any]:
    kind, ms = record.timestamp()
    meta: dict[str, Any] = {
        "topic": record.topic(),
        "partition": record.partition(),
        "offset": record.offset(),
        "key": record.key(),
        "headers": record.headers() or [],
    }
    if kind != TIMESTAMP_NOT_AVAILABLE and ms is not None and ms >= 0:
        meta["timestamp"] = datetime.fromtimestamp(ms / 1000, tz=UTC)
        meta["timestamp_ms"] = ms
    return meta
