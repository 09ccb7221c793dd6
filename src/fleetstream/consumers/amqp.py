"""AMQP 0-9-1 source (aio-pika): manual acks after commit, bounded by prefetch.

Delivery: a message is acknowledged only once everything decoded from it is written to every
sink, or its raw bytes are quarantined (poison messages are then acked, so they never block the
queue). When the sinks cannot commit it, it is rejected with requeue after
`requeue_delay_secs`, and delivered again.

Connection handling is done here, not by aio-pika's robust connection, which leaves two gaps:
a consumer the broker cancels (queue deleted or moved) is not restored, and an ack for a
delivery of a channel that has since closed fails. The supervisor owns one connection at a
time and reconnects with backoff whenever it closes. Each queue is consumed on a channel of its
own, with its own retry loop, so a missing or deleted queue only stops that queue. A delivery
is settled only on the channel it came from and only while that channel is open; otherwise the
broker has already requeued it and it will come again.

Silence is an alarm: INVERS deletes a queue that nobody consumed for three days, with its
messages. A queue without a message since `idle_alarm_secs` (counted from the last message, or
from start; reconnects do not reset it) makes the daemon not ready and logs a warning; the age
is exported per queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
import weakref
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from prometheus_client import CollectorRegistry, Counter, Gauge

from fleetstream.config.model import AmqpSourceConfig
from fleetstream.errors import PipelineClosed
from fleetstream.pipeline import Outcome, SourceHandle
from fleetstream.telemetry.metrics import Telemetry

log = structlog.get_logger("fleetstream.amqp")

_CANCEL_TIMEOUT_SECS = 2.0


class _AmqpMetrics:
    def __init__(self, telemetry: Telemetry) -> None:
        r = telemetry.registry
        self.consuming = Gauge(
            "fleetstream_amqp_consuming",
            "1 while a consumer is attached to the queue.",
            ["source", "queue"],
            registry=r,
        )
        self.idle_seconds = Gauge(
            "fleetstream_amqp_queue_idle_seconds",
            "Seconds since the queue last delivered a message (or since start).",
            ["source", "queue"],
            registry=r,
        )
        self.settled = Counter(
            "fleetstream_amqp_settled",
            "Deliveries settled with the broker, by outcome (ack, requeue, filtered, "
            "stale: the channel closed before settling, so the broker redelivers).",
            ["source", "outcome"],
            registry=r,
        )
        self.reconnects = Counter(
            "fleetstream_amqp_reconnects",
            "Connections or queue channels that ended and were re-established, by reason.",
            ["source", "reason"],
            registry=r,
        )


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _AmqpMetrics] = weakref.WeakKeyDictionary()


def _metrics(telemetry: Telemetry) -> _AmqpMetrics:
    """One set of these metrics per registry, shared by every source of the kind."""
    registry = telemetry.registry
    if registry not in _METRICS:
        _METRICS[registry] = _AmqpMetrics(telemetry)
    return _METRICS[registry]


@dataclass(eq=False)
class _Ending:
    """Set once, with the first reason given."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""

    def end(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()


@dataclass(eq=False)
class _QueueChannel:
    """One queue's channel: deliveries are settled only through it, only while it is open."""

    queue: str
    channel: AbstractChannel
    ending: _Ending = field(default_factory=_Ending)

    @property
    def open(self) -> bool:
        return not self.ending.event.is_set() and not self.channel.is_closed


def tls_context(config: AmqpSourceConfig) -> ssl.SSLContext | None:
    tls = config.tls
    if not tls.enabled:
        return None
    context = ssl.create_default_context(
        cafile=str(tls.ca_file) if tls.ca_file is not None else None
    )
    if tls.cert_file is not None:
        context.load_cert_chain(
            str(tls.cert_file), str(tls.key_file) if tls.key_file is not None else None
        )
    if not tls.verify_hostname:
        context.check_hostname = False
    return context


def _network_cancel() -> bool:
    """Whether a CancelledError came from the AMQP client (a lost link), not from our task
    being cancelled."""
    task = asyncio.current_task()
    return task is None or task.cancelling() == 0


class AmqpSource:
    def __init__(
        self, config: AmqpSourceConfig, handle: SourceHandle, telemetry: Telemetry
    ) -> None:
        self.name = config.name
        self._config = config
        self._handle = handle
        self._metrics = _metrics(telemetry)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self._channels: dict[str, _QueueChannel] = {}
        self._settling: set[asyncio.Task[None]] = set()
        self._started_at = time.monotonic()
        self._last_message: dict[str, float] = {}
        self._last_error: str | None = None
        self._queue_errors: dict[str, str] = {}
        self._alarmed: set[str] = set()
        for queue in config.queues:
            self._metrics.consuming.labels(self.name, queue).set(0)
            self._metrics.idle_seconds.labels(self.name, queue).set_function(
                functools.partial(self._idle_secs, queue)
            )

    # Lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"amqp-{self.name}")
        log.info("amqp_source_started", source=self.name, queues=self._config.queues)

    async def stop_intake(self) -> None:
        """Cancel the consumers: the broker sends nothing new; unacked deliveries stay ours."""
        self._stopping.set()
        for queue_channel in list(self._channels.values()):
            with contextlib.suppress(Exception):
                underlay = await queue_channel.channel.get_underlay_channel()
                await asyncio.wait_for(
                    underlay.basic_cancel(self._consumer_tag(queue_channel.queue), nowait=True),
                    _CANCEL_TIMEOUT_SECS,
                )
            self._set_consuming(queue_channel.queue, False)

    async def close(self) -> None:
        """Settle what the pipeline settled, then close the connection. Call after draining."""
        self._stopping.set()
        if self._settling:
            await asyncio.wait(self._settling, timeout=self._config.connect_timeout_secs)
        for queue_channel in list(self._channels.values()):
            queue_channel.ending.end("shutdown")
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=self._config.connect_timeout_secs + 5)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        log.info("amqp_source_closed", source=self.name)

    def problems(self) -> dict[str, str]:
        problems = {}
        if not self._connected:
            problems[self.name] = f"not connected: {self._last_error or 'connecting'}"
        for queue in self._config.queues:
            if queue in self._queue_errors:
                problems[f"{self.name}/{queue}"] = self._queue_errors[queue]
                continue
            idle = self._idle_secs(queue)
            if idle >= self._config.idle_alarm_secs:
                problems[f"{self.name}/{queue}"] = (
                    f"no message for {int(idle)} s; INVERS deletes queues left unconsumed "
                    "for three days"
                )
                if queue not in self._alarmed:
                    self._alarmed.add(queue)
                    log.warning(
                        "amqp_queue_idle", source=self.name, queue=queue, idle_secs=int(idle)
                    )
            else:
                self._alarmed.discard(queue)
        return problems

    def failure(self) -> str | None:
        task = self._task
        if task is None or not task.done() or self._stopping.is_set():
            return None
        if task.cancelled():
            return "amqp supervisor was cancelled"
        return f"amqp supervisor stopped: {task.exception()!r}"

    # The supervisor ------------------------------------------------------------------------

    async def _supervise(self) -> None:
        config = self._config
        delay = config.reconnect_initial_secs
        while not self._stopping.is_set():
            try:
                connection = await self._connect()
            except asyncio.CancelledError:
                if not _network_cancel():
                    raise
                self._last_error = "connection attempt aborted (link lost)"
            except Exception as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
            else:
                if self._stopping.is_set():
                    await self._close_connection(connection)
                    break
                opened = time.monotonic()
                reason = await self._serve(connection)
                if reason == "shutdown":
                    break
                self._metrics.reconnects.labels(self.name, reason).inc()
                self._last_error = reason
                if time.monotonic() - opened >= config.reconnect_max_secs:
                    delay = config.reconnect_initial_secs
            log.warning(
                "amqp_disconnected", source=self.name, error=self._last_error, retry_in_secs=delay
            )
            await self._sleep_unless_stopping(delay)
            delay = min(delay * 2, config.reconnect_max_secs)

    async def _connect(self) -> AbstractConnection:
        config = self._config
        return await aio_pika.connect(
            host=config.host,
            port=config.port or (5671 if config.tls.enabled else 5672),
            login=config.username,
            password=config.password.get_secret_value(),
            virtualhost=config.vhost,
            ssl=config.tls.enabled,
            ssl_context=tls_context(config),
            timeout=config.connect_timeout_secs,
            heartbeat=config.heartbeat_secs,
            client_properties={"connection_name": f"fleetstream-{self.name}"},
        )

    async def _serve(self, connection: AbstractConnection) -> str:
        """Consume every queue on this connection until it closes or shutdown; the reason."""
        ending = _Ending()
        connection.close_callbacks.add(lambda *_: ending.end("connection closed"))
        self._connected, self._last_error = True, None
        log.info("amqp_connected", source=self.name, queues=self._config.queues)
        consumers = [
            asyncio.create_task(self._consume_queue(connection, queue, ending))
            for queue in self._config.queues
        ]
        waiters = {
            asyncio.create_task(self._stopping.wait()),
            asyncio.create_task(ending.event.wait()),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._connected = False
            for waiter in waiters:
                waiter.cancel()
            for consumer in consumers:
                consumer.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)
            await self._close_connection(connection)
        return "shutdown" if self._stopping.is_set() else ending.reason

    async def _consume_queue(
        self, connection: AbstractConnection, queue: str, connection_ending: _Ending
    ) -> None:
        """Keep one queue consumed on a channel of its own while the connection lives."""
        config = self._config
        delay = config.reconnect_initial_secs
        while not connection_ending.event.is_set() and not self._stopping.is_set():
            queue_channel: _QueueChannel | None = None
            try:
                channel = await connection.channel(publisher_confirms=False)
                queue_channel = _QueueChannel(queue, channel)
                ending = queue_channel.ending
                channel.close_callbacks.add(functools.partial(_end_on, ending, "channel closed"))
                underlay = await channel.get_underlay_channel()
                underlay.on_consumer_cancel_callbacks.add(
                    functools.partial(_end_on, ending, "consumer cancelled by broker")
                )
                await channel.set_qos(prefetch_count=config.prefetch)
                if config.declare_queues:
                    declared = await channel.declare_queue(queue, durable=True)
                else:
                    declared = await channel.get_queue(queue, ensure=True)
                await declared.consume(
                    functools.partial(self._on_message, queue_channel),
                    consumer_tag=self._consumer_tag(queue),
                )
                self._channels[queue] = queue_channel
                self._queue_errors.pop(queue, None)
                self._set_consuming(queue, True)
                delay = config.reconnect_initial_secs
                await ending.event.wait()
                reason = ending.reason
            except asyncio.CancelledError:
                if not _network_cancel():
                    raise
                reason = "channel aborted (link lost)"
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                self._queue_errors[queue] = f"cannot consume: {reason}"
            finally:
                self._set_consuming(queue, False)
                if queue_channel is not None:
                    if self._channels.get(queue) is queue_channel:
                        del self._channels[queue]
                    queue_channel.ending.end("replaced")
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(queue_channel.channel.close(), 2)
            if connection_ending.event.is_set() or self._stopping.is_set():
                return
            self._metrics.reconnects.labels(self.name, _reason_label(reason)).inc()
            log.warning(
                "amqp_queue_channel_ended",
                source=self.name,
                queue=queue,
                reason=reason,
                retry_in_secs=delay,
            )
            await self._sleep_unless_stopping(delay)
            delay = min(delay * 2, config.reconnect_max_secs)

    async def _close_connection(self, connection: AbstractConnection) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), 5)

    async def _sleep_unless_stopping(self, secs: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), secs)

    def _consumer_tag(self, queue: str) -> str:
        return f"{self._config.consumer_tag_prefix}-{self.name}-{queue}"

    # Deliveries ----------------------------------------------------------------------------

    async def _on_message(
        self, queue_channel: _QueueChannel, message: AbstractIncomingMessage
    ) -> None:
        self._last_message[queue_channel.queue] = time.monotonic()
        types = self._config.types
        if types is not None and message.type and message.type not in types:
            await self._settle(queue_channel, message, "filtered")
            return
        try:
            future = await self._handle.submit(
                message.body, _metadata(queue_channel.queue, message)
            )
        except PipelineClosed:
            return  # not acked: the broker redelivers it after the connection closes
        future.add_done_callback(functools.partial(self._spawn_settle, queue_channel, message))

    def _spawn_settle(
        self,
        queue_channel: _QueueChannel,
        message: AbstractIncomingMessage,
        future: asyncio.Future[Outcome],
    ) -> None:
        committed = not future.cancelled() and future.exception() is None
        settling = self._settle(queue_channel, message, "ack" if committed else "requeue")
        self._track(settling)

    def _track(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(
        self, queue_channel: _QueueChannel, message: AbstractIncomingMessage, outcome: str
    ) -> None:
        if outcome == "requeue" and self._config.requeue_delay_secs:
            await self._sleep_unless_stopping(self._config.requeue_delay_secs)
        if not queue_channel.open:
            self._metrics.settled.labels(self.name, "stale").inc()
            return
        try:
            if outcome == "requeue":
                await message.nack(requeue=True)
            else:
                await message.ack()
        except Exception as exc:  # the channel closed under us: the broker redelivers
            self._metrics.settled.labels(self.name, "stale").inc()
            log.info("amqp_settle_skipped", source=self.name, error=str(exc))
            return
        self._metrics.settled.labels(self.name, outcome).inc()

    # Silence ---------------------------------------------------------------------------------

    def _set_consuming(self, queue: str, consuming: bool) -> None:
        self._metrics.consuming.labels(self.name, queue).set(int(consuming))

    def _idle_secs(self, queue: str) -> float:
        """Seconds since the queue's last message, or since start when it never had one."""
        return time.monotonic() - self._last_message.get(queue, self._started_at)


def _end_on(ending: _Ending, reason: str, *_: object) -> None:
    """A close or cancel callback that ends a channel's life with `reason`."""
    ending.end(reason)


def _reason_label(reason: str) -> str:
    """A bounded metric label for a free-text reason."""
    for label in ("consumer cancelled by broker", "channel closed", "link lost"):
        if label in reason:
            return label
    return "error"


def _metadata(queue: str, message: AbstractIncomingMessage) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "queue": queue,
        "routing_key": message.routing_key,
        "exchange": message.exchange,
        "redelivered": bool(message.redelivered),
    }
    for key in ("message_id", "type", "correlation_id", "content_type"):
        value = getattr(message, key)
        if value:
            meta[key] = value
    if message.timestamp is not None:
        stamp = message.timestamp
        meta["timestamp"] = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    if message.headers:
        meta["headers"] = dict(message.headers)
    return meta
