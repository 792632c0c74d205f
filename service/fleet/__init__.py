"""The fleet layer: devices, their locks, residency, checkpoint files and spills. No HTTP."""

from service.fleet.device import Device
from service.fleet.fleet import Fleet, Page
from service.fleet.models import DEFAULT_MODEL, ModelStore
from service.fleet.record import DeviceInfo

__all__ = ["DEFAULT_MODEL", "Device", "DeviceInfo", "Fleet", "ModelStore", "Page"]
