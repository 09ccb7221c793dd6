"""Wiring and lifecycle: build the configured components, run them, and shut down in order.

Shutdown (SIGTERM or SIGINT): stop intake (webhooks answer 503), drain the pipeline within
`pipeline.drain_timeout_secs` so in-flight work is written and settled, then close the HTTP
listener, the sinks and the dedupe store, and log what was done.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable

import structlog

from fleetstream.config.model import FleetstreamConfig, HttpSourceConfig
from fleetstream.consumers.base import Source
from fleetstream.consumers.http import HttpServer
from fleetstream.consumers.registry import build_source
from fleetstream.errors import FatalError
from fleetstream.normalize.dedupe import DedupeStore, build_dedupe
from fleetstream.normalize.registry import get_decoder
from fleetstream.pipeline import Pipeline
from fleetstream.sinks.base import Sink
from fleetstream.sinks.registry import build_sink
from fleetstream.telemetry.metrics import Telemetry

log = structlog.get_logger("fleetstream")


class App:
    def __init__(self, config: FleetstreamConfig, telemetry: Telemetry | None = None) -> None:
        self.config = config
        self.telemetry = telemetry or Telemetry()
        self.sinks: list[Sink] = [build_sink(c) for c in config.sinks]
        self.dedupe: DedupeStore = build_dedupe(config.dedupe)
        self.pipeline = Pipeline(config.pipeline, self.sinks, self.dedupe, self.telemetry)
        self.http = HttpServer(
            config.http, self.telemetry, self.readiness_problems, self.liveness_problems
        )
        self.sources: list[Source] = []
        self._started = False
        self._stopped = False

    def readiness_problems(self) -> dict[str, str]:
        problems = {}
        if not self._started:
            problems["startup"] = "not started"
        if self.pipeline.closing:
            problems["shutdown"] = "draining"
        if not self.pipeline.sinks_healthy:
            problems["sinks"] = "the last batch could not be committed"
        for source in self.sources:
            problems.update(source.problems())
        return problems

    def liveness_problems(self) -> dict[str, str]:
        """Components that failed for good: /healthz answers 503 so the supervisor restarts."""
        return {s.name: f for s in self.sources if (f := s.failure()) is not None}

    async def start(self) -> None:
        """Start every component; raises `FatalError` naming the one that failed."""
        for sink in self.sinks:
            await _start(f"sink {sink.name}", sink.start())
            self.telemetry.register_sink(sink.name)
        await _start("dedupe store", self.dedupe.start())
        limit = self.config.pipeline.max_in_flight_messages
        for source_config in self.config.sources:
            handle = self.pipeline.source(
                source_config.name,
                source_config.decoder,
                get_decoder(source_config.decoder),
                source_config.max_in_flight_messages or limit,
            )
            if isinstance(source_config, HttpSourceConfig):
                self.http.add_route(source_config, handle)
            else:
                self.sources.append(build_source(source_config, handle, self.telemetry))
        self.pipeline.start()
        await _start("http listener", self.http.start())
        for source in self.sources:
            await _start(f"source {source.name}", source.start())
        self._started = True
        log.info(
            "fleetstream_started",
            sources=[s.name for s in self.config.sources],
            sinks=[s.name for s in self.sinks],
            dedupe=self.config.dedupe.type,
        )

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        started = time.monotonic()
        self.http.closing = True
        for source in self.sources:
            await source.stop_intake()
        drained = await self.pipeline.drain(self.config.pipeline.drain_timeout_secs)
        for source in self.sources:
            await source.close()
        await self.http.stop()
        for sink in self.sinks:
            await sink.close()
        await self.dedupe.close()
        counts = self.pipeline.counts
        log.info(
            "fleetstream_stopped",
            drained=drained,
            seconds=round(time.monotonic() - started, 3),
            messages=counts.messages,
            events_written=counts.events_written,
            duplicates=counts.duplicates,
            quarantined=counts.quarantined,
            failed_batches=counts.failed_batches,
        )

    async def run_until_signalled(self, on_reload: Callable[[], None] | None = None) -> None:
        """Run until SIGTERM or SIGINT, then shut down in order. SIGHUP calls `on_reload`
        (the CLI re-reads the log settings) and never stops the daemon."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, on_reload or (lambda: None))
        try:
            await self.start()
            await stop.wait()
            log.info("shutdown_requested")
        finally:
            await self.stop()


async def _start(component: str, starting: Awaitable[None]) -> None:
    try:
        await starting
    except Exception as exc:
        raise FatalError(f"cannot start {component}: {exc}") from exc
