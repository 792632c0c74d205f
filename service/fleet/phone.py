"""The phone a device simulates: its profile, and the clock its operations advance.

A profiled device's operations take the time its phone would (``DeviceProfile.train_seconds`` and the
like); the clock adds them up in the record, written with the counters. An unprofiled device has no
clock (it stays at 0).
"""

from __future__ import annotations

import threading
from typing import Protocol

from service.fleet.ledger import Ledger
from service.profiles import DeviceProfile


class PhoneOwner(Protocol):
    """What the phone uses of its device (``service.fleet.device.Device``)."""

    lock: threading.Lock

    def require_live(self) -> None: ...


class Phone:
    """Sets a device's profile and advances its clock, both kept in its record (``Ledger``); the device
    reads them (``Device.profile``, ``Device.clock``)."""

    __slots__ = ("_device", "_ledger")

    def __init__(self, device: PhoneOwner, ledger: Ledger) -> None:
        self._device = device
        self._ledger = ledger

    def set_profile(self, profile: DeviceProfile | None, durable: bool = True) -> None:
        """Give the device a profile (None: take it away, and its clock with it); written at once."""
        with self._device.lock:
            self._device.require_live()
            record = self._ledger.read_record()
            record.profile = profile
            if profile is None:
                record.clock = 0.0
            self._ledger.write(durable)

    def advance(self, seconds: float) -> None:
        """Add ``seconds`` of simulated time to the clock (the caller holds the lock; written with the
        record, as the counters are)."""
        record = self._ledger.read_record()
        record.clock += seconds
        self._ledger.record_dirty = True

    def download(self, size: int) -> None:
        """A phone downloads what it adopts: the clock advances by its time for ``size`` bytes (the
        caller holds the lock)."""
        profile = self._ledger.read_record().profile
        if profile is not None:
            self.advance(profile.download_seconds(size))
