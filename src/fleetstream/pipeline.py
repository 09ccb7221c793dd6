"""The pipeline: admit, decode, batch, dedupe, write to every sink, mark seen, settle.

A source calls `SourceHandle.submit` with the raw bytes of one transport message and gets back a
future that resolves once everything decoded from the message is committed by every sink (or
its raw bytes are committed to quarantine): that is the moment to ack, commit or answer 200.
The future fails with `RetryableSinkError` when the sinks could not commit after the configured
retries, or `PipelineClosed` when shutdown ran out of time: the source must then nack, not
commit, or answer 503, so the message is delivered again.

Backpressure: each source has a bounded number of messages in flight. `submit(wait=True)`
waits for room (brokers); `submit(wait=False)` raises `PipelineFull` (HTTP answers 503).
One batch is written at a time, so a slow sink holds the sources back instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from fleetstream.config.model import PipelineConfig
from fleetstream.errors import DecodeError, PipelineClosed, PipelineFull, RetryableSinkError
from fleetstream.normalize.base import Decoder
from fleetstream.normalize.dedupe import DedupeStore
from fleetstream.normalize.model import RawMessage, VehicleEvent
from fleetstream.sinks.base import QuarantineRecord, Sink
from fleetstream.telemetry.metrics import Telemetry

log = structlog.get_logger("fleetstream.pipeline")

SINK_FAILURE_READY_SECS = 30.0
"""How long a failed batch keeps the daemon not ready when no later batch commits."""

DECODE_IN_THREAD_BYTES = 256 * 1024
"""Payloads larger than this are decoded on a worker thread so the event loop keeps serving."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message once it settled."""

    decoded: int
    written: int
    duplicates: int
    quarantined: int
    rejected: DecodeError | None = None
    """Set when the message as a whole could not be decoded (its raw bytes are in quarantine)."""


@dataclass(slots=True, eq=False)
class _Pending:
    source: str
    events: list[VehicleEvent]
    quarantine: list[QuarantineRecord]
    future: asyncio.Future[Outcome]
    rejected: DecodeError | None = None
    duplicates: int = 0
    written: int = 0


@dataclass(slots=True)
class _Counts:
    messages: int = 0
    events_written: int = 0
    duplicates: int = 0
    quarantined: int = 0
    failed_batches: int = 0
    per_source: dict[str, int] = field(default_factory=dict)


class SourceHandle:
    """A source's entry into the pipeline, with its own in-flight bound."""

    def __init__(
        self, pipeline: Pipeline, name: str, decoder_name: str, decoder: Decoder, limit: int
    ) -> None:
        self.name = name
        self.decoder_name = decoder_name
        self._decoder = decoder
        self._pipeline = pipeline
        self._slots = asyncio.Semaphore(limit)
        self.limit = limit
        self.in_flight = 0

    @property
    def full(self) -> bool:
        """Whether a `submit(wait=False)` would be refused right now."""
        return self._slots.locked()

    async def submit(
        self, payload: bytes, metadata: Mapping[str, Any] | None = None, *, wait: bool = True
    ) -> asyncio.Future[Outcome]:
        pipeline = self._pipeline
        if pipeline.closing:
            raise PipelineClosed("fleetstream is shutting down")
        if not wait and self._slots.locked():
            raise PipelineFull(f"source {self.name} has {self.limit} messages in flight")
        await self._slots.acquire()
        if pipeline.closing:
            self._slots.release()
            raise PipelineClosed("fleetstream is shutting down")
        self.in_flight += 1
        telemetry = pipeline.telemetry
        telemetry.in_flight.labels(self.name).set(self.in_flight)
        telemetry.message_received(self.name, len(payload))
        raw = RawMessage(payload, self.name, datetime.now(UTC), metadata or {})
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        future.add_done_callback(self._release)
        try:
            if len(payload) > DECODE_IN_THREAD_BYTES:
                pending = await asyncio.to_thread(self._decode, raw, future)
            else:
                pending = self._decode(raw, future)
        except BaseException:
            future.cancel()
            raise
        pipeline.enqueue(pending)
        return future

    def _release(self, _: asyncio.Future[Outcome]) -> None:
        self.in_flight -= 1
        self._pipeline.telemetry.in_flight.labels(self.name).set(self.in_flight)
        self._slots.release()

    def _decode(self, raw: RawMessage, future: asyncio.Future[Outcome]) -> _Pending:
        """Decode one message; runs on the loop or, for large payloads, on a worker thread."""
        telemetry = self._pipeline.telemetry
        try:
            decoded = self._decoder(raw)
        except DecodeError as exc:
            telemetry.decode_failed(self.name, exc.reason, exc.message, whole_message=True)
            record = self._quarantine(raw, exc, raw.payload)
            return _Pending(self.name, [], [record], future, rejected=exc)
        except Exception as exc:  # a decoder bug must not take the daemon down
            log.exception("decoder_crashed", source=self.name, decoder=self.decoder_name)
            error = DecodeError("decoder_crash", f"{type(exc).__name__}: {exc}")
            telemetry.decode_failed(self.name, error.reason, error.message, whole_message=True)
            record = self._quarantine(raw, error, raw.payload)
            return _Pending(self.name, [], [record], future, rejected=error)
        records = []
        for rejected in decoded.rejected:
            telemetry.decode_failed(
                self.name, rejected.error.reason, rejected.error.message, whole_message=False
            )
            records.append(self._quarantine(raw, rejected.error, rejected.raw))
        for event_type in decoded.unknown_types:
            telemetry.unknown_event_type(self.name, event_type)
        telemetry.events_decoded(self.name, len(decoded.events))
        return _Pending(self.name, decoded.events, records, future)

    def _quarantine(self, raw: RawMessage, error: DecodeError, payload: bytes) -> QuarantineRecord:
        return QuarantineRecord(
            source=self.name,
            decoder=self.decoder_name,
            reason=error.reason,
            error=error.message,
            raw=payload,
            received_at=raw.received_at,
            metadata={k: v for k, v in raw.metadata.items() if isinstance(v, str | int | float)},
        )


class Pipeline:
    def __init__(
        self,
        config: PipelineConfig,
        sinks: Sequence[Sink],
        dedupe: DedupeStore,
        telemetry: Telemetry,
    ) -> None:
        self._config = config
        self._sinks = list(sinks)
        self._dedupe = dedupe
        self.telemetry = telemetry
        self._buffer: list[_Pending] = []
        self._writing: list[_Pending] = []
        self._buffered_events = 0
        self._has_work = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.closing = False
        self._sinks_failed_at: float | None = None
        self.counts = _Counts()

    @property
    def sinks_healthy(self) -> bool:
        """False from a failed batch until one commits, or until `SINK_FAILURE_READY_SECS`
        passed: a pod taken out of its Service for it gets traffic again to find out."""
        failed_at = self._sinks_failed_at
        return failed_at is None or time.monotonic() - failed_at > SINK_FAILURE_READY_SECS

    def source(self, name: str, decoder_name: str, decoder: Decoder, limit: int) -> SourceHandle:
        self.telemetry.register_source(name)
        return SourceHandle(self, name, decoder_name, decoder, limit)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="fleetstream-pipeline")

    def enqueue(self, pending: _Pending) -> None:
        self._buffer.append(pending)
        self._buffered_events += len(pending.events) + len(pending.quarantine)
        self._has_work.set()
        if self._buffered_events >= self._config.batch_max_events:
            self._batch_full.set()

    async def drain(self, timeout_secs: float) -> bool:
        """Stop taking work, write what is buffered, and wait up to `timeout_secs`.

        Returns whether everything was settled. Work still pending at the deadline is failed
        with `PipelineClosed` (never acknowledged), so brokers redeliver it.
        """
        self.closing = True
        self._has_work.set()
        self._batch_full.set()
        if self._task is None:
            return not self._buffer
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_secs)
            return True
        except TimeoutError:
            self._task.cancel()
            unsettled = self._writing + self._buffer
            self._buffer, self._writing = [], []
            for pending in unsettled:
                if not pending.future.done():
                    pending.future.set_exception(PipelineClosed("drain timeout reached"))
            log.warning("drain_timeout", unsettled_messages=len(unsettled))
            return False

    async def _run(self) -> None:
        while True:
            await self._has_work.wait()
            if not self._buffer:
                self._has_work.clear()
                if self.closing:
                    return
                continue
            if not self.closing and self._buffered_events < self._config.batch_max_events:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_full.wait(), self._config.batch_linger_secs)
            batch = self._take_batch()
            self._writing = batch
            try:
                await self._process(batch)
            except Exception as exc:  # keep the loop alive whatever a sink raised
                log.exception("batch_failed_unexpectedly")
                self._fail(batch, RetryableSinkError(f"unexpected error: {exc}"))
            self._writing = []

    def _take_batch(self) -> list[_Pending]:
        """Whole messages from the front of the buffer, up to `batch_max_events` (at least one)."""
        limit = self._config.batch_max_events
        taken = size = 0
        for pending in self._buffer:
            weight = len(pending.events) + len(pending.quarantine)
            if taken and size + weight > limit:
                break
            taken += 1
            size += weight
        batch = self._buffer[:taken]
        del self._buffer[:taken]
        self._buffered_events -= size
        if self._buffered_events < limit and not self.closing:
            self._batch_full.clear()
        if not self._buffer:
            self._has_work.clear()
            if self.closing:
                self._has_work.set()
        return batch

    async def _process(self, batch: list[_Pending]) -> None:
        owner: dict[str, _Pending] = {}
        unique: dict[str, VehicleEvent] = {}
        for pending in batch:
            for event in pending.events:
                key = event.dedupe_key
                if key in unique:
                    pending.duplicates += 1
                else:
                    unique[key] = event
                    owner[key] = pending
        fresh = await self._unseen(list(unique))
        to_write = []
        for key, event in unique.items():
            if key in fresh:
                to_write.append(event)
                owner[key].written += 1
            else:
                owner[key].duplicates += 1
        quarantine = [record for pending in batch for record in pending.quarantine]

        error = await self._write_all(to_write, quarantine)
        if error is not None:
            self._fail(batch, error)
            return
        if to_write:
            try:
                await self._dedupe.mark_seen([e.dedupe_key for e in to_write])
            except Exception as exc:
                log.warning("dedupe_mark_failed", error=str(exc), error_type=type(exc).__name__)
        self._settle(batch)

    async def _unseen(self, keys: list[str]) -> set[str]:
        if not keys:
            return set()
        try:
            return await self._dedupe.unseen(keys)
        except Exception as exc:
            log.warning("dedupe_unavailable", error=str(exc), error_type=type(exc).__name__)
            return set(keys)

    async def _write_all(
        self, events: list[VehicleEvent], quarantine: list[QuarantineRecord]
    ) -> RetryableSinkError | None:
        if not events and not quarantine:
            return None
        retry = self._config.write_retry
        pending_sinks = list(self._sinks)
        delay = retry.backoff_initial_secs
        for attempt in range(1, retry.attempts + 1):
            results = await asyncio.gather(
                *(self._write_one(sink, events, quarantine) for sink in pending_sinks),
                return_exceptions=True,
            )
            failed = []
            for sink, result in zip(pending_sinks, results, strict=True):
                if isinstance(result, BaseException):
                    self.telemetry.sink_write_failed(sink.name, attempt, result)
                    failed.append(sink)
            if not failed:
                self._sinks_failed_at = None
                return None
            self._sinks_failed_at = time.monotonic()
            pending_sinks = failed
            if attempt < retry.attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, retry.backoff_max_secs)
        names = ", ".join(s.name for s in pending_sinks)
        return RetryableSinkError(f"sinks not available: {names}")

    async def _write_one(
        self, sink: Sink, events: list[VehicleEvent], quarantine: list[QuarantineRecord]
    ) -> None:
        started = time.perf_counter()
        await sink.write(events, quarantine)
        self.telemetry.batch_written(
            sink.name, len(events), len(quarantine), time.perf_counter() - started
        )

    def _settle(self, batch: list[_Pending]) -> None:
        telemetry, counts = self.telemetry, self.counts
        for pending in batch:
            for record in pending.quarantine:
                telemetry.quarantine_written(pending.source, record.reason)
            if pending.duplicates:
                telemetry.duplicates_dropped(pending.source, pending.duplicates)
            counts.messages += 1
            counts.events_written += pending.written
            counts.duplicates += pending.duplicates
            counts.quarantined += len(pending.quarantine)
            counts.per_source[pending.source] = counts.per_source.get(pending.source, 0) + 1
            telemetry.message_settled(pending.source, "ack")
            if not pending.future.done():
                pending.future.set_result(
                    Outcome(
                        decoded=len(pending.events),
                        written=pending.written,
                        duplicates=pending.duplicates,
                        quarantined=len(pending.quarantine),
                        rejected=pending.rejected,
                    )
                )

    def _fail(self, batch: list[_Pending], error: RetryableSinkError) -> None:
        self.counts.failed_batches += 1
        for pending in batch:
            self.telemetry.message_settled(pending.source, "nack")
            pending.written = pending.duplicates = 0
            if not pending.future.done():
                pending.future.set_exception(error)
