"""Unit tests for the JSON lines sink against real files."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from fleetstream.config.model import JsonlSinkConfig
from fleetstream.errors import RetryableSinkError
from fleetstream.normalize.model import VehicleEvent, VehicleRef
from fleetstream.sinks.base import QuarantineRecord
from fleetstream.sinks.jsonl import JsonlSink

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def event(number: int, vehicle: str = "car1") -> VehicleEvent:
    return VehicleEvent(
        event_id=f"ev-{number}",
        vendor="carstatsviewer",
        source="csv",
        type="trip_update",
        kind="signal",
        vehicle=VehicleRef(vendor_id=vehicle),
        occurred_at=T0 + timedelta(seconds=number),
        received_at=T0 + timedelta(seconds=number, milliseconds=250),
        signals={"Vehicle.Speed": float(number), "Vehicle.Body.Trunk.Rear.IsOpen": False},
        attributes={"note": "ü", "n": number},
    )


def make_sink(directory: Path, **overrides: Any) -> JsonlSink:
    return JsonlSink(JsonlSinkConfig(type="jsonl", directory=directory, **overrides))


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def all_lines(directory: Path) -> list[dict[str, Any]]:
    return [line for path in event_files(directory) for line in read_lines(path)]


def listing(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


def event_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("events-*.jsonl") if "quarantine" not in p.name)


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[JsonlSink]:
    s = make_sink(tmp_path / "out")
    await s.start()
    yield s
    await s.close()


async def test_lines_round_trip_to_dict(sink: JsonlSink, tmp_path: Path) -> None:
    """Each line of the file is the `to_dict()` of one event, in batch order."""
    events = [event(n) for n in range(5)]
    await sink.write(events, [])
    await sink.write([event(5)], [])
    assert [e.to_dict() for e in [*events, event(5)]] == all_lines(tmp_path / "out")


async def test_file_name_has_prefix_and_utc_stamp(tmp_path: Path) -> None:
    """Files are named `<prefix>-<YYYYmmddTHHMMSSffffff>.jsonl`."""
    s = make_sink(tmp_path, file_prefix="fleet")
    await s.start()
    await s.write([event(1)], [])
    await s.close()
    (path,) = listing(tmp_path)
    stamp = path.name.removeprefix("fleet-").removesuffix(".jsonl")
    assert path.name == f"fleet-{datetime.strptime(stamp, '%Y%m%dT%H%M%S%f'):%Y%m%dT%H%M%S%f}.jsonl"


async def test_rotation_by_size_keeps_batches_whole(tmp_path: Path) -> None:
    """A batch that would pass `max_file_bytes` starts a new file; no batch spans two files."""
    one_line = len(orjson.dumps(event(0).to_dict())) + 1
    s = make_sink(tmp_path, max_file_bytes=one_line * 5)
    await s.start()
    batches = [[event(10 * b + i) for i in range(3)] for b in range(4)]
    for batch in batches:
        await s.write(batch, [])
    await s.close()
    files = event_files(tmp_path)
    expected = [[e.to_dict() for e in batch] for batch in batches]
    assert expected == [read_lines(p) for p in files]
    assert all(p.stat().st_size <= one_line * 5 for p in files)


async def test_oversized_batch_gets_a_file_of_its_own(tmp_path: Path) -> None:
    """A batch larger than `max_file_bytes` is written whole to a fresh file."""
    s = make_sink(tmp_path, max_file_bytes=10)
    await s.start()
    await s.write([event(1), event(2)], [])
    await s.write([event(3)], [])
    await s.close()
    expected = [[event(1).to_dict(), event(2).to_dict()], [event(3).to_dict()]]
    assert expected == [read_lines(p) for p in event_files(tmp_path)]


async def test_restart_continues_newest_file(tmp_path: Path) -> None:
    """After a restart the sink appends to the newest file instead of starting another."""
    first = make_sink(tmp_path)
    await first.start()
    await first.write([event(1)], [])
    await first.close()
    second = make_sink(tmp_path)
    await second.start()
    await second.write([event(2)], [])
    await second.close()
    (path,) = event_files(tmp_path)
    assert [event(1).to_dict(), event(2).to_dict()] == read_lines(path)


async def test_torn_tail_is_truncated_at_start(tmp_path: Path) -> None:
    """A last line without its newline is cut off at start, and later appends stay parseable."""
    first = make_sink(tmp_path)
    await first.start()
    await first.write([event(1), event(2)], [])
    await first.close()
    (path,) = event_files(tmp_path)
    intact = path.read_bytes()
    with path.open("ab") as f:
        f.write(b'{"event_id":"ev-torn","vend')
    second = make_sink(tmp_path)
    await second.start()
    assert intact == path.read_bytes()
    await second.write([event(3)], [])
    await second.close()
    assert [event(n).to_dict() for n in (1, 2, 3)] == read_lines(path)


async def test_file_without_any_complete_line_is_emptied(tmp_path: Path) -> None:
    """A newest file holding only a torn line is cut back to empty."""
    path = tmp_path / "events-20240501T120000000000.jsonl"
    path.write_bytes(b'{"event_id":"ev-1"')
    s = make_sink(tmp_path)
    await s.start()
    await s.write([event(1)], [])
    await s.close()
    assert [event(1).to_dict()] == read_lines(path)


async def test_every_write_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`write` fsyncs the file it appended to before returning."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    s = make_sink(tmp_path)
    await s.start()
    await s.write([event(1)], [])
    await s.write([event(2)], [])
    await s.close()
    (path,) = event_files(tmp_path)
    assert 2 == synced.count(str(path))


async def test_os_error_is_retryable(tmp_path: Path) -> None:
    """A directory that became a file makes `write` raise `RetryableSinkError`."""
    directory = tmp_path / "out"
    s = make_sink(directory)
    await s.start()
    shutil.rmtree(directory)
    directory.write_text("not a directory")
    with pytest.raises(RetryableSinkError):
        await s.write([event(1)], [])
    await s.close()


async def test_failed_append_is_cut_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An append whose fsync fails is removed again, so the retry does not follow a torn line."""
    s = make_sink(tmp_path)
    await s.start()
    await s.write([event(1)], [])
    real_fsync = os.fsync
    calls = 0

    def failing_once(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_once)
    with pytest.raises(RetryableSinkError):
        await s.write([event(2)], [])
    await s.write([event(2)], [])
    await s.close()
    assert [event(1).to_dict(), event(2).to_dict()] == all_lines(tmp_path)


async def test_quarantine_goes_to_its_own_file(tmp_path: Path) -> None:
    """With `include_quarantine`, quarantine records land in `<prefix>-quarantine.jsonl`."""
    record = QuarantineRecord(
        source="csv",
        decoder="carstatsviewer",
        reason="invalid_json",
        error="Expecting value",
        raw=b"\x00not json",
        received_at=T0,
        metadata={"path": "/webhooks"},
    )
    s = make_sink(tmp_path, include_quarantine=True)
    await s.start()
    await s.write([event(1)], [record])
    await s.close()
    expected = {
        "digest": record.digest,
        "source": "csv",
        "decoder": "carstatsviewer",
        "reason": "invalid_json",
        "error": "Expecting value",
        "received_at": "2024-05-01T12:00:00Z",
        "metadata": {"path": "/webhooks"},
        "raw_base64": base64.b64encode(b"\x00not json").decode(),
    }
    assert [expected] == read_lines(tmp_path / "events-quarantine.jsonl")
    assert [event(1).to_dict()] == all_lines(tmp_path)


async def test_quarantine_ignored_by_default(sink: JsonlSink, tmp_path: Path) -> None:
    """Without `include_quarantine`, quarantine records are not written anywhere."""
    record = QuarantineRecord("csv", "carstatsviewer", "invalid_json", "x", b"raw", T0)
    await sink.write([], [record])
    assert [] == listing(tmp_path / "out")


_WRITER = """
import asyncio, sys
from datetime import UTC, datetime
from pathlib import Path
from fleetstream.config.model import JsonlSinkConfig
from fleetstream.normalize.model import VehicleEvent, VehicleRef
from fleetstream.sinks.jsonl import JsonlSink

async def main() -> None:
    sink = JsonlSink(JsonlSinkConfig(type="jsonl", directory=Path(sys.argv[1]),
                                     max_file_bytes=200_000))
    await sink.start()
    now = datetime(2024, 5, 1, tzinfo=UTC)
    batch = 0
    while True:
        events = [
            VehicleEvent(event_id=f"b{batch}-{i}", vendor="v", source="s", type="t",
                         kind="signal", vehicle=VehicleRef(vendor_id="car"), occurred_at=now,
                         received_at=now, attributes={"pad": "x" * 500})
            for i in range(20)
        ]
        await sink.write(events, [])
        print(f"acked {batch}", flush=True)
        batch += 1

asyncio.run(main())
"""


def run_writer_until_killed(directory: Path, min_acks: int) -> int:
    """Run the writer child, SIGKILL it once it acknowledged `min_acks` batches; last ack."""
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    acked = -1
    deadline = time.monotonic() + 30
    while acked < min_acks and time.monotonic() < deadline:
        line = child.stdout.readline()
        if line.startswith("acked "):
            acked = int(line.split()[1])
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    child.stdout.close()
    return acked


@pytest.mark.timeout(60)
async def test_sigkill_never_loses_an_acknowledged_batch(tmp_path: Path) -> None:
    """After SIGKILL every acknowledged batch is complete and start() leaves no torn line."""
    directory = tmp_path / "out"
    acked = await asyncio.to_thread(run_writer_until_killed, directory, 40)
    assert acked >= 40

    s = make_sink(directory)
    await s.start()
    await s.close()
    raw = b"".join(p.read_bytes() for p in event_files(directory))
    assert raw == b"" or raw.endswith(b"\n")
    ids = [line["event_id"] for line in all_lines(directory)]
    per_batch: dict[int, int] = {}
    for event_id in ids:
        batch = int(event_id[1:].split("-")[0])
        per_batch[batch] = per_batch.get(batch, 0) + 1
    assert {b: 20 for b in range(acked + 1)} == {b: per_batch.get(b) for b in range(acked + 1)}
    assert all(20 == count for count in per_batch.values())
