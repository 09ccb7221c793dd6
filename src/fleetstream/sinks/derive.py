"""Registry changes that follow from events, as pure functions every sink applies the same way.

Sinks keep more than the event log: which vehicles and fleets the integration may see (from
Connected Cars admin events) and the set of active trouble codes per vehicle (from `can_dtc`
diffs). The rules live here once; a sink only stores their results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fleetstream.normalize.model import VehicleEvent

AccessState = Literal["granted", "revoked"]

_VEHICLE_ACCESS: dict[str, AccessState] = {
    "access_granted_to_vehicle": "granted",
    "access_removed_from_vehicle": "revoked",
}
_FLEET_ACCESS: dict[str, AccessState] = {
    "access_granted_to_fleet": "granted",
    "access_removed_from_fleet": "revoked",
}


@dataclass(frozen=True, slots=True)
class VehicleAccessChange:
    vehicle_key: str
    state: AccessState


@dataclass(frozen=True, slots=True)
class FleetAccessChange:
    fleet_key: str
    vendor: str
    organization: str | None
    fleet_id: str
    state: AccessState


@dataclass(frozen=True, slots=True)
class FleetMembershipChange:
    """`fleet_id` None: the vehicle left `left_fleet_id`."""

    vehicle_key: str
    fleet_id: str | None
    left_fleet_id: str | None


@dataclass(frozen=True, slots=True)
class DtcChange:
    """One trouble code of one ECU turned active (`add`, `change`) or inactive (`remove`)."""

    vehicle_key: str
    ecu: str
    code: str
    status: str | None
    active: bool


def fleet_key(vendor: str, organization: str | None, fleet_id: str) -> str:
    return f"{vendor}:{organization or ''}:{fleet_id}"


def access_change(event: VehicleEvent) -> VehicleAccessChange | FleetAccessChange | None:
    if event.type in _VEHICLE_ACCESS and event.vehicle.vendor_id is not None:
        return VehicleAccessChange(event.vehicle_key, _VEHICLE_ACCESS[event.type])
    if event.type in _FLEET_ACCESS and event.vehicle.fleet_id is not None:
        org, fleet = event.vehicle.organization, event.vehicle.fleet_id
        return FleetAccessChange(
            fleet_key(event.vendor, org, fleet), event.vendor, org, fleet, _FLEET_ACCESS[event.type]
        )
    return None


def fleet_membership_change(event: VehicleEvent) -> FleetMembershipChange | None:
    fleet = event.vehicle.fleet_id
    if event.vehicle.vendor_id is None or fleet is None:
        return None
    if event.type == "vehicle_added_to_fleet":
        return FleetMembershipChange(event.vehicle_key, fleet, None)
    if event.type == "vehicle_removed_from_fleet":
        return FleetMembershipChange(event.vehicle_key, None, fleet)
    return None


def dtc_change(event: VehicleEvent) -> DtcChange | None:
    if event.type != "can_dtc":
        return None
    code = event.attributes.get("code")
    if not isinstance(code, str) or not code:
        return None
    diff = event.attributes.get("diff")
    ecu = event.attributes.get("ecu")
    status = event.attributes.get("status")
    return DtcChange(
        vehicle_key=event.vehicle_key,
        ecu=ecu if isinstance(ecu, str) else "",
        code=code.upper(),
        status=status if isinstance(status, str) else None,
        active=diff != "remove",
    )
