"""AMQP 0-9-1 source (aio-pika): manual acks after commit, bounded by prefetch.

Delivery: a message is acknowledged only once everything decoded from it is written to every
sink, or its raw bytes are quarantined (poison messages are then acked, so they never block the
queue). When the sinks cannot commit it, it is rejected with requeue and delivered again.

Connection handling is done here, not by aio-pika's robust connection, which leaves two gaps:
a consumer the broker cancels (queue deleted or moved) is not restored, and an ack for a
delivery of a channel that has since closed fails (or worse, could hit a new channel's delivery
tag). A session here is one connection, one channel and its consumers. Any close, or a broker
cancel of one of our consumers, ends the session; the supervisor reconnects with backoff and
consumes again. Settling a delivery of a session that has ended is skipped: the broker has
already requeued it, and it will come again.

Silence is an alarm: INVERS deletes a queue that nobody consumed for three days, with its
messages. A queue without a consumer, or without a message, for `idle_alarm_secs` makes the
daemon not ready and logs a warning; its age is exported as a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage
from aiormq.abc import AbstractChannel
from prometheus_client import Counter, Gauge

from fleetstream.config.model import AmqpSourceConfig
from fleetstream.errors import PipelineClosed
from fleetstream.pipeline import Outcome, SourceHandle
from fleetstream.telemetry.metrics import Telemetry

log = structlog.get_logger("fleetstream.amqp")


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
            "Seconds since the queue last delivered a message, or since consuming it began.",
            ["source", "queue"],
            registry=r,
        )
        self.settled = Counter(
            "fleetstream_amqp_settled",
            "Deliveries settled with the broker, by outcome (ack, requeue, filtered, "
            "stale: the session ended before settling, so the broker redelivers).",
            ["source", "outcome"],
            registry=r,
        )
        self.reconnects = Counter(
            "fleetstream_amqp_reconnects",
            "Sessions that ended and were re-established, by reason.",
            ["source", "reason"],
            registry=r,
        )


_METRICS: dict[int, _AmqpMetrics] = {}


def _metrics(telemetry: Telemetry) -> _AmqpMetrics:
    key = id(telemetry.registry)
    if key not in _METRICS:
        _METRICS[key] = _AmqpMetrics(telemetry)
    return _METRICS[key]


@dataclass(eq=False)
class _Session:
    connection: aio_pika.abc.AbstractConnection
    channel: aio_pika.abc.AbstractChannel
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = "closed"

    def end(self, reason: str) -> None:
        if not self.ended.is_set():
            self.reason = reason
            self.ended.set()


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


class AmqpSource:
    def __init__(
        self, config: AmqpSourceConfig, handle: SourceHandle, telemetry: Telemetry
    ) -> None:
        self.name = config.name
        self._config = config
        self._handle = handle
        self._metrics = _metrics(telemetry)
        self._session: _Session | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._settling: set[asyncio.Task[None]] = set()
        self._started_at = time.monotonic()
        self._last_message: dict[str, float] = {}
        self._consuming_since: dict[str, float | None] = {q: None for q in config.queues}
        self._last_error: str | None = None
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
        session = self._session
        if session is not None and not session.channel.is_closed:
            underlay = await session.channel.get_underlay_channel()
            for queue in self._config.queues:
                with contextlib.suppress(Exception):
                    await underlay.basic_cancel(self._consumer_tag(queue))
        for queue in self._config.queues:
            self._mark_consuming(queue, False)

    async def close(self) -> None:
        """Settle what the pipeline settled, then close the session. Call after draining."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        if self._session is not None:
            self._session.end("shutdown")
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        log.info("amqp_source_closed", source=self.name)

    def problems(self) -> dict[str, str]:
        problems = {}
        if self._session is None:
            problems[self.name] = f"not connected: {self._last_error or 'connecting'}"
        for queue in self._config.queues:
            idle = self._idle_secs(queue)
            if idle >= self._config.idle_alarm_secs:
                problems[f"{self.name}/{queue}"] = (
                    f"no consumer or no message for {int(idle)} s; INVERS deletes queues left "
                    "unconsumed for three days"
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
        return None  # connection problems are retried forever and reported by readiness

    # The supervisor --------------------------------------------------------------------------

    async def _supervise(self) -> None:
        config = self._config
        delay = config.reconnect_initial_secs
        while not self._stopping.is_set():
            try:
                session = await self._open()
            except Exception as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "amqp_connect_failed",
                    source=self.name,
                    error=self._last_error,
                    retry_in_secs=delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, config.reconnect_max_secs)
                continue
            delay = config.reconnect_initial_secs
            self._session, self._last_error = session, None
            log.info("amqp_consuming", source=self.name, queues=config.queues)
            await session.ended.wait()
            self._session = None
            for queue in config.queues:
                self._mark_consuming(queue, False)
            with contextlib.suppress(Exception):
                await session.connection.close()
            if session.reason != "shutdown":
                self._metrics.reconnects.labels(self.name, session.reason).inc()
                self._last_error = session.reason
                log.warning("amqp_session_ended", source=self.name, reason=session.reason)
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.connection.close()
            self._session = None

    async def _open(self) -> _Session:
        config = self._config
        port = config.port or (5671 if config.tls.enabled else 5672)
        connection = await aio_pika.connect(
            host=config.host,
            port=port,
            login=config.username,
            password=config.password.get_secret_value(),
            virtualhost=config.vhost,
            ssl=config.tls.enabled,
            ssl_context=tls_context(config),
            timeout=config.connect_timeout_secs,
            heartbeat=config.heartbeat_secs,
            client_properties={"connection_name": f"fleetstream-{self.name}"},
        )
        try:
            channel = await connection.channel(publisher_confirms=False)
            session = _Session(connection, channel)
            connection.close_callbacks.add(lambda *_: session.end("connection closed"))
            channel.close_callbacks.add(lambda *_: session.end("channel closed"))
            underlay: AbstractChannel = await channel.get_underlay_channel()
            underlay.on_consumer_cancel_callbacks.add(
                lambda frame: session.end(f"consumer cancelled by broker: {frame.consumer_tag}")
            )
            await channel.set_qos(prefetch_count=config.prefetch)
            for queue_name in config.queues:
                if config.declare_queues:
                    queue = await channel.declare_queue(queue_name, durable=True)
                else:
                    queue = await channel.get_queue(queue_name, ensure=True)
                await queue.consume(
                    functools.partial(self._on_message, session, queue_name),
                    consumer_tag=self._consumer_tag(queue_name),
                )
                self._mark_consuming(queue_name, True)
            return session
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise

    def _consumer_tag(self, queue: str) -> str:
        return f"{self._config.consumer_tag_prefix}-{self.name}-{queue}"

    # Deliveries ----------------------------------------------------------------------------

    async def _on_message(
        self, session: _Session, queue: str, message: AbstractIncomingMessage
    ) -> None:
        self._last_message[queue] = time.monotonic()
        types = self._config.types
        if types is not None and message.type not in types:
            await self._settle_with_broker(session, message, "filtered")
            return
        try:
            future = await self._handle.submit(message.body, _metadata(queue, message))
        except PipelineClosed:
            return  # not acked: the broker redelivers it after the connection closes
        future.add_done_callback(lambda f: self._spawn_settle(session, message, f))

    def _spawn_settle(
        self, session: _Session, message: AbstractIncomingMessage, future: asyncio.Future[Outcome]
    ) -> None:
        outcome = "ack" if not future.cancelled() and future.exception() is None else "requeue"
        task = asyncio.create_task(self._settle_with_broker(session, message, outcome))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle_with_broker(
        self, session: _Session, message: AbstractIncomingMessage, outcome: str
    ) -> None:
        if session.ended.is_set() or session.channel.is_closed:
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

    def _mark_consuming(self, queue: str, consuming: bool) -> None:
        now = time.monotonic()
        if consuming:
            self._consuming_since[queue] = now
            self._last_message.setdefault(queue, now)
        else:
            self._consuming_since[queue] = None
            self._last_message.setdefault(queue, now)
        self._metrics.consuming.labels(self.name, queue).set(int(consuming))

    def _idle_secs(self, queue: str) -> float:
        """Seconds without a message while consuming, or without a consumer."""
        now = time.monotonic()
        last = self._last_message.get(queue, self._started_at)
        since = self._consuming_since.get(queue)
        if since is not None:
            return now - max(last, since)
        return now - last


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
