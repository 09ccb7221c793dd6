"""Prometheus metrics and the internal events that update them.

Each internal event is one method that both logs (a stable event name plus key/values) and
counts, so a log line and its metric can never drift apart. High-volume events log at debug.
"""

from __future__ import annotations

import time

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = structlog.get_logger("fleetstream")

MAX_UNKNOWN_TYPE_LABELS = 50

_WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Telemetry:
    """The metrics of one daemon, on a registry of their own (served at /metrics)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "fleetstream_messages_received", "Transport messages received.", ["source"], registry=r
        )
        self.received_bytes = Counter(
            "fleetstream_received_bytes", "Payload bytes received.", ["source"], registry=r
        )
        self.decoded = Counter(
            "fleetstream_events_decoded", "Canonical events decoded.", ["source"], registry=r
        )
        self.decode_errors = Counter(
            "fleetstream_decode_errors",
            "Messages or bulk elements that could not be decoded, by reason.",
            ["source", "reason"],
            registry=r,
        )
        self.unknown_types = Counter(
            "fleetstream_unknown_event_types",
            "Events of a type the decoder does not know (kept with their fields as attributes).",
            ["source", "type"],
            registry=r,
        )
        self.duplicates = Counter(
            "fleetstream_duplicates_dropped",
            "Events dropped because the dedupe store had seen them.",
            ["source"],
            registry=r,
        )
        self.quarantined = Counter(
            "fleetstream_quarantined",
            "Raw messages or elements written to quarantine.",
            ["source", "reason"],
            registry=r,
        )
        self.written = Counter(
            "fleetstream_events_written", "Events committed by a sink.", ["sink"], registry=r
        )
        self.sink_failures = Counter(
            "fleetstream_sink_write_failures", "Failed batch write attempts.", ["sink"], registry=r
        )
        self.write_seconds = Histogram(
            "fleetstream_sink_write_seconds",
            "Time to commit one batch, per sink.",
            ["sink"],
            buckets=_WRITE_BUCKETS,
            registry=r,
        )
        self.settled = Counter(
            "fleetstream_messages_settled",
            "Messages settled, by outcome (ack, nack).",
            ["source", "outcome"],
            registry=r,
        )
        self.in_flight = Gauge(
            "fleetstream_in_flight_messages",
            "Messages admitted by the pipeline and not yet settled.",
            ["source"],
            registry=r,
        )
        self.last_message = Gauge(
            "fleetstream_last_message_timestamp_seconds",
            "Unix time of the last message received (0: none yet).",
            ["source"],
            registry=r,
        )
        self.last_message_age = Gauge(
            "fleetstream_last_message_age_seconds",
            "Seconds since the last message was received, or since start when none was.",
            ["source"],
            registry=r,
        )
        self.http_responses = Counter(
            "fleetstream_http_responses",
            "Webhook answers by status code.",
            ["source", "code"],
            registry=r,
        )
        self._started = time.time()
        self._last_seen: dict[str, float] = {}
        self._unknown_type_labels: dict[str, set[str]] = {}

    def register_source(self, source: str) -> None:
        """Create a source's series at zero so dashboards and alerts see it before traffic."""
        self.received.labels(source)
        self.decoded.labels(source)
        self.duplicates.labels(source)
        self.in_flight.labels(source).set(0)
        self.last_message.labels(source).set(0)
        self.last_message_age.labels(source).set_function(lambda: self.message_age(source))

    def register_sink(self, sink: str) -> None:
        self.written.labels(sink)
        self.sink_failures.labels(sink)

    def message_age(self, source: str) -> float:
        return time.time() - self._last_seen.get(source, self._started)

    # Internal events -----------------------------------------------------------------------

    def message_received(self, source: str, size_bytes: int) -> None:
        now = time.time()
        self._last_seen[source] = now
        self.received.labels(source).inc()
        self.received_bytes.labels(source).inc(size_bytes)
        self.last_message.labels(source).set(now)
        # No log line per message: it would cost more than the counting (the metrics say it).

    def events_decoded(self, source: str, count: int) -> None:
        self.decoded.labels(source).inc(count)

    def unknown_event_type(self, source: str, event_type: str) -> None:
        """Counted by type, up to `MAX_UNKNOWN_TYPE_LABELS` types per source; types beyond that
        share the label `other`, so a sender cannot create unbounded series. Logged once per
        type and source, not once per event."""
        labels = self._unknown_type_labels.setdefault(source, set())
        if event_type not in labels and len(labels) < MAX_UNKNOWN_TYPE_LABELS:
            labels.add(event_type)
            log.info("unknown_event_type", source=source, type=event_type, first_seen=True)
        label = event_type if event_type in labels else "other"
        self.unknown_types.labels(source, label).inc()

    def decode_failed(self, source: str, reason: str, error: str, whole_message: bool) -> None:
        self.decode_errors.labels(source, reason).inc()
        log.warning(
            "decode_failed", source=source, reason=reason, error=error, whole_message=whole_message
        )

    def duplicates_dropped(self, source: str, count: int) -> None:
        self.duplicates.labels(source).inc(count)
        log.debug("duplicates_dropped", source=source, count=count)

    def quarantine_written(self, source: str, reason: str) -> None:
        self.quarantined.labels(source, reason).inc()

    def batch_written(self, sink: str, events: int, quarantined: int, seconds: float) -> None:
        self.written.labels(sink).inc(events)
        self.write_seconds.labels(sink).observe(seconds)
        log.debug(
            "batch_written", sink=sink, events=events, quarantined=quarantined, seconds=seconds
        )

    def sink_write_failed(self, sink: str, attempt: int, error: BaseException) -> None:
        self.sink_failures.labels(sink).inc()
        log.warning(
            "sink_write_failed",
            sink=sink,
            attempt=attempt,
            error=str(error),
            error_type=type(error).__name__,
        )

    def message_settled(self, source: str, outcome: str) -> None:
        self.settled.labels(source, outcome).inc()

    def http_answered(self, source: str, code: int) -> None:
        self.http_responses.labels(source, str(code)).inc()
