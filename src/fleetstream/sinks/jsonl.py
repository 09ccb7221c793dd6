"""Append-only JSON lines files: one canonical event (`VehicleEvent.to_dict()`) per line.

Durability: a batch is serialised in full, appended with `os.write` to a descriptor opened with
`O_APPEND`, and `os.fsync`ed before `write` returns; only then does the pipeline settle its
messages. A crash between the append and the fsync can leave a torn last line. That batch was
never acknowledged, so on start the sink cuts the newest file back to its last complete line
(and logs how much it dropped). A failed append is cut back the same way before the error is
raised, so a retry never glues onto a partial line.

Rotation: files are `<prefix>-<UTC time YYYYmmddTHHMMSSffffff>.jsonl`; the names sort in the
order they were created. A new file is started when the batch would take the current one past
`max_file_bytes`; a batch never straddles two files. On start the newest file is continued.

This is a log, not a table: nothing is deduplicated. A batch that is retried or redelivered is
appended again (at-least-once), so readers dedupe by `event_id` (plus `version` for entity
events). Quarantine records, when enabled, go to `<prefix>-quarantine.jsonl` with the raw bytes
in base64; that file is not rotated. Events and quarantine records are two appends, not one
transaction: a failure between them means the retry appends some lines twice.

All file work runs on one worker thread, which keeps the event loop free and serialises writes.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import structlog

from fleetstream.config.model import JsonlSinkConfig
from fleetstream.errors import RetryableSinkError
from fleetstream.normalize.model import VehicleEvent, rfc3339
from fleetstream.sinks.base import QuarantineRecord

log = structlog.get_logger("fleetstream.jsonl")

_STAMP_FORMAT = "%Y%m%dT%H%M%S%f"
_TAIL_CHUNK_BYTES = 64 * 1024


def quarantine_dict(record: QuarantineRecord) -> dict[str, Any]:
    """The JSON shape of a quarantine record, raw bytes in base64 (shared with the Kafka sink)."""
    return {
        "digest": record.digest,
        "source": record.source,
        "decoder": record.decoder,
        "reason": record.reason,
        "error": record.error,
        "received_at": rfc3339(record.received_at),
        "metadata": dict(record.metadata),
        "raw_base64": base64.b64encode(record.raw).decode("ascii"),
    }


def _lines(items: Sequence[dict[str, Any]]) -> bytes:
    return b"".join(
        orjson.dumps(item, default=str, option=orjson.OPT_APPEND_NEWLINE) for item in items
    )


def repair_tail(path: Path) -> int:
    """Cut `path` back to its last complete line; returns the number of bytes removed."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        end = size
        keep = 0
        while end > 0:
            start = max(0, end - _TAIL_CHUNK_BYTES)
            chunk = os.pread(fd, end - start, start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        if keep < size:
            os.ftruncate(fd, keep)
            os.fsync(fd)
        return size - keep
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _AppendFile:
    """One file opened for appending, with the size it had after the last durable write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.size = os.fstat(self.fd).st_size

    def append(self, data: bytes) -> None:
        """Append and fsync `data`; on failure cut the file back to where it was, then raise."""
        try:
            view = memoryview(data)
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
            os.fsync(self.fd)
        except OSError:
            try:
                os.ftruncate(self.fd, self.size)
                os.fsync(self.fd)
            except OSError:
                log.warning("jsonl_cut_back_failed", path=str(self.path), size=self.size)
                self.close()  # reopened, and its tail repaired, by the next write
            raise
        self.size += len(data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @property
    def closed(self) -> bool:
        return self.fd < 0


class JsonlSink:
    def __init__(self, config: JsonlSinkConfig) -> None:
        self.name = config.name
        self._directory = config.directory
        self._prefix = config.file_prefix
        self._max_file_bytes = config.max_file_bytes
        self._include_quarantine = config.include_quarantine
        self._pattern = re.compile(rf"^{re.escape(self._prefix)}-(\d{{8}}T\d{{12}})\.jsonl$")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"jsonl-{self.name}")
        self._current: _AppendFile | None = None
        self._quarantine: _AppendFile | None = None
        self._last_stamp: datetime | None = None

    @property
    def quarantine_path(self) -> Path:
        return self._directory / f"{self._prefix}-quarantine.jsonl"

    async def start(self) -> None:
        try:
            await self._run(self._open)
        except OSError as exc:
            raise RetryableSinkError(f"jsonl sink {self.name}: {exc}") from exc

    async def write(
        self, events: Sequence[VehicleEvent], quarantine: Sequence[QuarantineRecord]
    ) -> None:
        try:
            await self._run(self._write, events, quarantine)
        except OSError as exc:
            raise RetryableSinkError(f"jsonl sink {self.name}: {exc}") from exc

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # Everything below runs on the sink's worker thread. ------------------------------------

    def files(self) -> list[Path]:
        """The event files in the directory, oldest first."""
        return sorted(
            (p for p in self._directory.iterdir() if self._pattern.match(p.name)),
            key=lambda p: p.name,
        )

    def _open(self) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        existing = self.files()
        if existing:
            newest = existing[-1]
            self._repair(newest)
            match = self._pattern.match(newest.name)
            assert match is not None
            self._last_stamp = datetime.strptime(match.group(1), _STAMP_FORMAT).replace(tzinfo=UTC)
            self._current = _AppendFile(newest)
        if self._include_quarantine and self.quarantine_path.exists():
            self._repair(self.quarantine_path)

    def _repair(self, path: Path) -> None:
        dropped = repair_tail(path)
        if dropped:
            log.warning(
                "jsonl_torn_tail_truncated",
                sink=self.name,
                path=str(path),
                dropped_bytes=dropped,
                hint="an append interrupted before fsync; that batch was never acknowledged",
            )

    def _close(self) -> None:
        for handle in (self._current, self._quarantine):
            if handle is not None:
                handle.close()
        self._current = self._quarantine = None

    def _new_file(self) -> _AppendFile:
        stamp = datetime.now(UTC)
        if self._last_stamp is not None and stamp <= self._last_stamp:
            stamp = self._last_stamp + timedelta(microseconds=1)
        self._last_stamp = stamp
        path = self._directory / f"{self._prefix}-{stamp.strftime(_STAMP_FORMAT)}.jsonl"
        handle = _AppendFile(path)
        _fsync_directory(self._directory)  # the new name survives a crash, not only its data
        log.info("jsonl_file_started", sink=self.name, path=str(path))
        return handle

    def _reopen(self, handle: _AppendFile | None) -> _AppendFile | None:
        """A handle closed after a failed cut-back is reopened with its tail repaired."""
        if handle is None or not handle.closed:
            return handle
        self._repair(handle.path)
        return _AppendFile(handle.path)

    def _write(
        self, events: Sequence[VehicleEvent], quarantine: Sequence[QuarantineRecord]
    ) -> None:
        if events:
            data = _lines([event.to_dict() for event in events])
            current = self._current = self._reopen(self._current)
            if current is None or (
                current.size > 0 and current.size + len(data) > self._max_file_bytes
            ):
                if current is not None:
                    current.close()
                    self._current = None
                current = self._current = self._new_file()
            current.append(data)
        if quarantine and self._include_quarantine:
            data = _lines([quarantine_dict(record) for record in quarantine])
            handle = self._reopen(self._quarantine)
            if handle is None:
                is_new = not self.quarantine_path.exists()
                handle = _AppendFile(self.quarantine_path)
                if is_new:
                    _fsync_directory(self._directory)
            self._quarantine = handle
            handle.append(data)
