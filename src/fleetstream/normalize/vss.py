"""COVESA VSS 6.0 signal paths used by the decoders, with the unit each value is stored in.

Decoders convert vendor units into these units; the unit is part of the contract, not a label.
"""

from __future__ import annotations

from typing import Final

LATITUDE: Final = "Vehicle.CurrentLocation.Latitude"  # degrees
LONGITUDE: Final = "Vehicle.CurrentLocation.Longitude"  # degrees
HEADING: Final = "Vehicle.CurrentLocation.Heading"  # degrees
ALTITUDE: Final = "Vehicle.CurrentLocation.Altitude"  # m
HORIZONTAL_ACCURACY: Final = "Vehicle.CurrentLocation.HorizontalAccuracy"  # m
SPEED: Final = "Vehicle.Speed"  # km/h
TRAVELED_DISTANCE: Final = "Vehicle.TraveledDistance"  # m
LOW_VOLTAGE_SYSTEM_STATE: Final = "Vehicle.LowVoltageSystemState"  # UNDEFINED|LOCK|OFF|ACC|ON|START
VIN: Final = "Vehicle.VehicleIdentification.VIN"  # string

_TB: Final = "Vehicle.Powertrain.TractionBattery"
SOC_CURRENT: Final = f"{_TB}.StateOfCharge.Current"  # %
SOC_DISPLAYED: Final = f"{_TB}.StateOfCharge.Displayed"  # %
SOC_CURRENT_ENERGY: Final = f"{_TB}.StateOfCharge.CurrentEnergy"  # kWh
BATTERY_CURRENT_POWER: Final = f"{_TB}.CurrentPower"  # W, positive = into the battery
CHARGING_CABLE_CONNECTED: Final = (
    f"{_TB}.Charging.ChargingPort.AnyPosition.IsChargingCableConnected"  # bool
)
BATTERY_TEMPERATURE_AVERAGE: Final = f"{_TB}.Temperature.Average"  # Celsius

FUEL_RELATIVE_LEVEL: Final = "Vehicle.Powertrain.FuelSystem.RelativeLevel"  # %
FUEL_ABSOLUTE_LEVEL: Final = "Vehicle.Powertrain.FuelSystem.AbsoluteLevel"  # l
RANGE: Final = "Vehicle.Powertrain.Range"  # m
AIR_TEMPERATURE: Final = "Vehicle.Exterior.AirTemperature"  # Celsius
COOLANT_TEMPERATURE: Final = (
    "Vehicle.Powertrain.CombustionEngine.EngineCoolant.Temperature"  # Celsius
)
LOW_VOLTAGE_BATTERY_VOLTAGE: Final = "Vehicle.LowVoltageBattery.CurrentVoltage"  # V
DTC_LIST: Final = "Vehicle.Diagnostics.DTCList"  # string[]
MIL_ON: Final = "Vehicle.OBD.Status.IsMILOn"  # bool (OBD overlay)
DISTANCE_TO_SERVICE: Final = "Vehicle.Service.DistanceToService"  # km
TIME_TO_SERVICE: Final = "Vehicle.Service.TimeToService"  # s
SELECTED_GEAR: Final = "Vehicle.Powertrain.Transmission.SelectedGear"  # P=126 D=127 N=0 R=-1
ACCELERATION_LONGITUDINAL: Final = "Vehicle.Acceleration.Longitudinal"  # m/s^2
ACCELERATION_LATERAL: Final = "Vehicle.Acceleration.Lateral"  # m/s^2

STANDARD_GRAVITY_M_S2: Final = 9.80665
SECONDS_PER_DAY: Final = 86_400


def tire_pressure(row: int, side: str) -> str:
    """Tyre pressure in kPa; `side` is `Left` or `Right`."""
    return f"Vehicle.Chassis.Axle.Row{row}.Wheel.{side}.Tire.Pressure"


def door_is_open(row: int, side: str) -> str:
    """`side` is `DriverSide` or `PassengerSide`."""
    return f"Vehicle.Cabin.Door.Row{row}.{side}.IsOpen"


def door_is_locked(row: int, side: str) -> str:
    return f"Vehicle.Cabin.Door.Row{row}.{side}.IsLocked"


ALL_DOORS: Final = tuple((row, side) for row in (1, 2) for side in ("DriverSide", "PassengerSide"))
