"""The canonical vehicle event and the raw message a decoder receives.

Both are plain slotted dataclasses: they are built once per event on the hot path, so they carry
no validation beyond what the decoders guarantee.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

EventKind = Literal["signal", "admin", "entity"]

JsonValue = Any
"""A value that orjson can serialise: None, bool, int, float, str, list or dict of those."""


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One transport message exactly as a source received it.

    `metadata` carries what the transport knows about the message and a decoder may need:
    broker headers, record timestamp and key, and route settings such as the vehicle a
    Car Stats Viewer webhook belongs to (`metadata["vehicle"]`).
    """

    payload: bytes
    source: str
    received_at: datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VehicleRef:
    """Whatever the vendor told us about the vehicle. Every field is optional."""

    vendor_id: str | None = None
    vin: str | None = None
    fleet_id: str | None = None
    organization: str | None = None

    def key(self, vendor: str) -> str:
        """A stable identifier for the vehicle within fleetstream.

        Vendor ids are unique only within a vendor (and for Connected Cars within an
        organization), so the key is scoped by both. A VIN stands in when there is no vendor id.
        """
        if self.vendor_id is not None:
            return f"{vendor}:{self.organization or ''}:{self.vendor_id}"
        if self.vin is not None:
            return f"vin:{self.vin}"
        return f"{vendor}:{self.organization or ''}:"


@dataclass(frozen=True, slots=True)
class VehicleEvent:
    """One canonical event.

    `signals` maps a VSS path to its value in the VSS unit (see `normalize.vss`).
    `signal_times` holds a per-signal observation time for the signals the vendor times one by
    one (INVERS); signals without an entry were observed at `occurred_at`. `attributes` keeps
    every vendor field without a VSS path, as it came.

    For `kind == "entity"` the event is one version of an entity (a charging session): events with
    the same `event_id` replace each other, and `version` tells versions apart for dedupe.
    """

    event_id: str
    vendor: str
    source: str
    type: str
    kind: EventKind
    vehicle: VehicleRef
    occurred_at: datetime
    received_at: datetime
    signals: Mapping[str, JsonValue] = field(default_factory=dict)
    attributes: Mapping[str, JsonValue] = field(default_factory=dict)
    signal_times: Mapping[str, datetime] = field(default_factory=dict)
    version: str | None = None

    @property
    def vehicle_key(self) -> str:
        return self.vehicle.key(self.vendor)

    @property
    def dedupe_key(self) -> str:
        """Identity of this delivery for the dedupe store: one per event, one per entity version."""
        if self.version is None:
            return self.event_id
        return f"{self.event_id}@{self.version}"

    def to_dict(self) -> dict[str, JsonValue]:
        """The public JSON shape, as printed by `fleetstream decode` and stored by the sinks."""
        out: dict[str, JsonValue] = {
            "event_id": self.event_id,
            "vendor": self.vendor,
            "source": self.source,
            "type": self.type,
            "kind": self.kind,
            "vehicle": {
                k: v
                for k, v in (
                    ("vendor_id", self.vehicle.vendor_id),
                    ("vin", self.vehicle.vin),
                    ("fleet_id", self.vehicle.fleet_id),
                    ("organization", self.vehicle.organization),
                )
                if v is not None
            },
            "occurred_at": rfc3339(self.occurred_at),
            "received_at": rfc3339(self.received_at),
            "signals": dict(self.signals),
            "attributes": dict(self.attributes),
        }
        if self.signal_times:
            out["signal_times"] = {k: rfc3339(v) for k, v in self.signal_times.items()}
        if self.version is not None:
            out["version"] = self.version
        return out


def rfc3339(value: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with a `Z` suffix: no fraction for whole
    seconds, milliseconds when that is exact, microseconds otherwise. Equal instants always give
    equal text, which event identities rely on."""
    naive = value.astimezone(UTC).replace(tzinfo=None)
    micros = naive.microsecond
    if not micros:
        return naive.isoformat(timespec="seconds") + "Z"
    if micros % 1000 == 0:
        return naive.isoformat(timespec="milliseconds") + "Z"
    return naive.isoformat(timespec="microseconds") + "Z"


def from_epoch_ms(value: int | float) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)
