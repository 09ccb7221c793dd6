"""An in-process sink for tests: it keeps what it committed and can be told to fail."""

from __future__ import annotations

from collections.abc import Sequence

from fleetstream.config.model import MemorySinkConfig
from fleetstream.errors import RetryableSinkError
from fleetstream.normalize.model import VehicleEvent
from fleetstream.sinks.base import QuarantineRecord


class MemorySink:
    def __init__(self, config: MemorySinkConfig) -> None:
        self.name = config.name
        self.events: dict[str, VehicleEvent] = {}
        self.quarantine: dict[str, QuarantineRecord] = {}
        self.writes = 0
        self.failing = False
        """While true, every write raises `RetryableSinkError` and commits nothing."""

    async def start(self) -> None:
        return None

    async def write(
        self, events: Sequence[VehicleEvent], quarantine: Sequence[QuarantineRecord]
    ) -> None:
        if self.failing:
            raise RetryableSinkError(f"memory sink {self.name} is set to fail")
        self.writes += 1
        for event in events:
            stored = self.events.get(event.event_id)
            if stored is None or (
                event.kind == "entity" and event.occurred_at >= stored.occurred_at
            ):
                self.events[event.event_id] = event
        for record in quarantine:
            self.quarantine.setdefault(record.digest, record)

    async def close(self) -> None:
        return None
