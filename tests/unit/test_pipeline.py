"""The pipeline contract: settle only after every sink committed; dedupe marks only after that."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
import pytest

from fleetstream.config.model import (
    MemoryDedupeConfig,
    MemorySinkConfig,
    PipelineConfig,
    WriteRetryConfig,
)
from fleetstream.errors import DecodeError, PipelineClosed, PipelineFull, RetryableSinkError
from fleetstream.normalize.base import Decoded, Rejected
from fleetstream.normalize.dedupe import MemoryDedupe
from fleetstream.normalize.model import RawMessage, VehicleEvent, VehicleRef
from fleetstream.pipeline import Outcome, Pipeline
from fleetstream.sinks.memory import MemorySink
from fleetstream.telemetry.metrics import Telemetry

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def ids_decoder(raw: RawMessage) -> Decoded:
    """Test decoder: the payload is a JSON list of ids; "bad" elements are rejected,
    a payload of `"crash"` raises a bug, anything that is not a list is a DecodeError."""
    body = orjson.loads(raw.payload)
    if body == "crash":
        raise ZeroDivisionError("decoder bug")
    if not isinstance(body, list):
        raise DecodeError("not_an_array", "expected a list")
    out = Decoded()
    for item in body:
        if item == "bad":
            out.rejected.append(Rejected(DecodeError("bad_item", "bad item"), b'"bad"'))
            continue
        version = None
        if isinstance(item, list):
            item, version = item
        out.events.append(
            VehicleEvent(
                event_id=f"test:{item}",
                vendor="test",
                source=raw.source,
                type="t",
                kind="entity" if version else "signal",
                vehicle=VehicleRef(vendor_id="v1"),
                occurred_at=T0,
                received_at=raw.received_at,
                signals={"Vehicle.Speed": 1.0},
                version=version,
            )
        )
    return out


class RecordingDedupe(MemoryDedupe):
    """Memory dedupe that records the order of calls relative to sink writes."""

    def __init__(self, log: list[str]) -> None:
        super().__init__(MemoryDedupeConfig(type="memory"))
        self.log = log

    async def mark_seen(self, keys: Sequence[str]) -> None:
        self.log.append(f"mark:{','.join(sorted(keys))}")
        await super().mark_seen(keys)


class RecordingSink(MemorySink):
    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__(MemorySinkConfig(type="memory", name=name))
        self.log = log

    async def write(self, events, quarantine):  # type: ignore[no-untyped-def]
        self.log.append(f"write:{self.name}:{'fail' if self.failing else 'ok'}:{len(events)}")
        await super().write(events, quarantine)


def make_pipeline(
    sinks: Sequence[MemorySink], dedupe: MemoryDedupe | None = None, **overrides: object
) -> Pipeline:
    settings: dict[str, object] = {
        "batch_linger_secs": 0.0,
        "write_retry": WriteRetryConfig(attempts=2, backoff_initial_secs=0.0),
    }
    settings.update(overrides)
    config = PipelineConfig.model_validate(settings)
    store = dedupe or MemoryDedupe(MemoryDedupeConfig(type="memory"))
    pipeline = Pipeline(config, sinks, store, Telemetry())
    pipeline.start()
    return pipeline


async def submit(pipeline: Pipeline, payload: object, limit: int = 10) -> Outcome:
    handle = pipeline.source("src", "ids", ids_decoder, limit)
    future = await handle.submit(orjson.dumps(payload))
    return await future


async def test_settles_after_every_sink_then_marks_seen() -> None:
    """Every sink writes before the dedupe store marks the ids; then the message settles."""
    log: list[str] = []
    sinks = [RecordingSink("a", log), RecordingSink("b", log)]
    pipeline = make_pipeline(sinks, RecordingDedupe(log))

    outcome = await submit(pipeline, [1, 2])

    assert Outcome(decoded=2, written=2, duplicates=0, quarantined=0) == outcome
    assert ["write:a:ok:2", "write:b:ok:2", "mark:test:1,test:2"] == log
    assert ({"test:1", "test:2"}, {"test:1", "test:2"}) == (
        set(sinks[0].events),
        set(sinks[1].events),
    )


async def test_duplicates_are_dropped_within_and_across_messages() -> None:
    """An id seen before, or twice in one message, is written once and counted as duplicate."""
    sink = MemorySink(MemorySinkConfig(type="memory"))
    pipeline = make_pipeline([sink])

    first = await submit(pipeline, [1, 1, 2])
    second = await submit(pipeline, [2, 3])

    assert (2, 1) == (first.written, first.duplicates)
    assert (1, 1) == (second.written, second.duplicates)
    assert {"test:1", "test:2", "test:3"} == set(sink.events)


async def test_entity_versions_pass_dedupe_and_replace() -> None:
    """A new version of an entity is written; the same version again is a duplicate."""
    sink = MemorySink(MemorySinkConfig(type="memory"))
    pipeline = make_pipeline([sink])

    first = await submit(pipeline, [["s", "v1"]])
    same = await submit(pipeline, [["s", "v1"]])
    newer = await submit(pipeline, [["s", "v2"]])

    assert (1, 0, 1) == (first.written, same.written, newer.written)
    assert "v2" == sink.events["test:s"].version


async def test_failing_sink_fails_the_message_and_marks_nothing() -> None:
    """When a sink keeps failing the future fails with RetryableSinkError, after the configured
    attempts, and the dedupe store does not remember the ids (a retry writes them)."""
    log: list[str] = []
    good, bad = RecordingSink("good", log), RecordingSink("bad", log)
    bad.failing = True
    dedupe = RecordingDedupe(log)
    pipeline = make_pipeline([good, bad], dedupe)

    with pytest.raises(RetryableSinkError):
        await submit(pipeline, [1])

    assert ["write:good:ok:1", "write:bad:fail:1", "write:bad:fail:1"] == log
    assert (False, {"test:1"}) == (pipeline.sinks_healthy, await dedupe.unseen(["test:1"]))

    bad.failing = False
    outcome = await submit(pipeline, [1])

    assert (1, True) == (outcome.written, pipeline.sinks_healthy)
    assert {"test:1"} == set(bad.events)


async def test_sink_recovers_within_retries() -> None:
    """A sink failing once and then succeeding settles the message normally."""

    class FlakySink(MemorySink):
        async def write(self, events, quarantine):  # type: ignore[no-untyped-def]
            self.failing = self.writes == 0 and not self.failing
            try:
                await super().write(events, quarantine)
            finally:
                if self.failing:
                    self.writes += 1
                    self.failing = False

    sink = FlakySink(MemorySinkConfig(type="memory"))
    pipeline = make_pipeline([sink])

    outcome = await submit(pipeline, [5])

    assert (1, {"test:5"}) == (outcome.written, set(sink.events))


async def test_whole_message_decode_error_is_quarantined() -> None:
    """An undecodable message settles with `rejected` set once its raw bytes are in quarantine."""
    sink = MemorySink(MemorySinkConfig(type="memory"))
    pipeline = make_pipeline([sink])

    outcome = await submit(pipeline, {"not": "a list"})

    assert ("not_an_array", 1) == (
        outcome.rejected.reason if outcome.rejected else None,
        outcome.quarantined,
    )
    assert [b'{"not":"a list"}'] == [q.raw for q in sink.quarantine.values()]


async def test_decoder_crash_is_quarantined_not_raised() -> None:
    """A decoder bug becomes a quarantined `decoder_crash`, never an exception in the daemon."""
    sink = MemorySink(MemorySinkConfig(type="memory"))
    pipeline = make_pipeline([sink])

    outcome = await submit(pipeline, "crash")

    assert "decoder_crash" == (outcome.rejected.reason if outcome.rejected else None)
    assert ["decoder_crash"] == [q.reason for q in sink.quarantine.values()]


async def test_rejected_elements_quarantined_rest_written() -> None:
    """Rejected elements go to quarantine with their own bytes; good elements are written."""
    sink = MemorySink(MemorySinkConfig(type="memory"))
    pipeline = make_pipeline([sink])

    outcome = await submit(pipeline, [1, "bad", 2])

    assert (2, 1, None) == (outcome.written, outcome.quarantined, outcome.rejected)
    assert [b'"bad"'] == [q.raw for q in sink.quarantine.values()]


async def test_backpressure_bounds_in_flight_messages() -> None:
    """With the sink stalled, a source gets PipelineFull once its in-flight limit is reached,
    and has room again once the stalled messages settle."""
    release = asyncio.Event()

    class StalledSink(MemorySink):
        async def write(self, events, quarantine):  # type: ignore[no-untyped-def]
            await release.wait()
            await super().write(events, quarantine)

    sink = StalledSink(MemorySinkConfig(type="memory"))
    pipeline = make_pipeline([sink])
    handle = pipeline.source("src", "ids", ids_decoder, 2)
    first = await handle.submit(b"[1]", wait=False)
    second = await handle.submit(b"[2]", wait=False)

    with pytest.raises(PipelineFull):
        await handle.submit(b"[3]", wait=False)
    waiting = asyncio.create_task(handle.submit(b"[4]"))
    await asyncio.sleep(0)
    assert (2, False) == (handle.in_flight, waiting.done())

    release.set()
    await asyncio.gather(first, second)
    fourth = await (await waiting)

    assert (1, {"test:1", "test:2", "test:4"}) == (fourth.written, set(sink.events))


async def test_batches_by_size_and_linger() -> None:
    """Messages arriving together share a batch up to `batch_max_events`."""
    log: list[str] = []
    sink = RecordingSink("s", log)
    pipeline = make_pipeline([sink], batch_max_events=4, batch_linger_secs=0.05)
    handle = pipeline.source("src", "ids", ids_decoder, 10)

    futures = [await handle.submit(orjson.dumps([i, i + 100])) for i in range(4)]
    await asyncio.gather(*futures)

    assert ["write:s:ok:4", "write:s:ok:4"] == log


async def test_drain_settles_buffered_work_then_refuses_new() -> None:
    """drain() writes what was admitted; afterwards submit raises PipelineClosed."""
    sink = MemorySink(MemorySinkConfig(type="memory"))
    pipeline = make_pipeline([sink], batch_linger_secs=10.0)
    handle = pipeline.source("src", "ids", ids_decoder, 10)
    future = await handle.submit(b"[1, 2]")

    drained = await pipeline.drain(5.0)

    assert (True, 2) == (drained, (await future).written)
    with pytest.raises(PipelineClosed):
        await handle.submit(b"[3]")


async def test_drain_timeout_fails_unsettled_work() -> None:
    """Work still unwritten at the drain deadline fails with PipelineClosed, never succeeds."""
    never = asyncio.Event()

    class HangingSink(MemorySink):
        async def write(self, events, quarantine):  # type: ignore[no-untyped-def]
            await never.wait()

    pipeline = make_pipeline([HangingSink(MemorySinkConfig(type="memory"))])
    handle = pipeline.source("src", "ids", ids_decoder, 10)
    future = await handle.submit(b"[1]")
    await asyncio.sleep(0.01)

    drained = await pipeline.drain(0.05)

    assert False is drained
    with pytest.raises((PipelineClosed, asyncio.CancelledError)):
        await future


async def test_sink_failure_readiness_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a failed batch the sinks count as unhealthy until SINK_FAILURE_READY_SECS passed
    without a newer failure, so a pod without traffic becomes ready again by itself."""
    import fleetstream.pipeline as pipeline_module

    sink = MemorySink(MemorySinkConfig(type="memory"))
    sink.failing = True
    pipeline = make_pipeline([sink])
    with pytest.raises(RetryableSinkError):
        await submit(pipeline, [1])
    right_after = pipeline.sinks_healthy
    monkeypatch.setattr(pipeline_module, "SINK_FAILURE_READY_SECS", -1.0)

    assert (False, True) == (right_after, pipeline.sinks_healthy)
