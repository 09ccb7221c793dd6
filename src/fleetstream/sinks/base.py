"""The sink contract.

A sink commits one batch all-or-nothing and idempotently: writing an event it already holds
leaves one copy; an entity event (`kind == "entity"`) replaces the stored version unless the
stored one is newer. `write` returns only once the batch is durable, and raises
`RetryableSinkError` when it is not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from fleetstream.normalize.model import VehicleEvent


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    """Input that could not be decoded, kept with its raw bytes for inspection and replay."""

    source: str
    decoder: str
    reason: str
    error: str
    raw: bytes
    received_at: datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """Identity of the quarantined input: a redelivered bad message is stored once."""
        h = hashlib.sha256(self.source.encode())
        h.update(b"\0")
        h.update(self.raw)
        return h.hexdigest()


class Sink(Protocol):
    name: str

    async def start(self) -> None:
        """Connect and create or migrate the schema."""

    async def write(
        self, events: Sequence[VehicleEvent], quarantine: Sequence[QuarantineRecord]
    ) -> None:
        """Durably commit events and quarantine records together, or raise."""

    async def close(self) -> None:
        """Release connections. Called once, after the last write."""
