"""The fleet's registry: every registered device ID, and the ``Device`` objects made for them on demand.

A million devices are registered by their IDs alone: a sorted list of the ID strings (listing and
prefix counts bisect it) and a set of the same strings (membership), about 100 bytes a device.
A ``Device`` object (about 1.5 KB) is made when a device is first asked for, and the registry holds
at most ``max_loaded`` of them, least recently asked for dropped first (``FLEET_MAX_LOADED_DEVICES``).

One device never has two objects: every object made is also found through a weak reference while
anything else holds it (a resident interpreter, a job, a round, a request), and asking for the
device returns that object. A device is dropped only while idle: no interpreter, no call under its
lock, not in a round, and nothing in its record or history that is not written yet; a busy one is
kept and asked about again later, so the bound is exceeded only by devices in use.

Nothing here reads a file: the registry is derived from the directories under ``devices/`` each
time the fleet starts, and a device's durable state stays in its own directory.
"""

from __future__ import annotations

import bisect
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable

from service.fleet.device import Device

MAX_LOADED_DEVICES = 10_000
"""Device objects the registry holds by default (FLEET_MAX_LOADED_DEVICES)."""

TRIES_PER_DROP = 8
"""Busy devices passed over (moved to the back) for each one dropped, at most."""


class Registry:
    """Registered IDs, sorted, and their ``Device`` objects made by ``make`` when first asked for.

    The fleet holds its own lock around changes to the IDs (``add``, ``remove``) and around reads of
    the sorted list (``span`` and slices of ``sorted_ids``); ``get`` takes only this registry's short
    lock and does no I/O, so the event loop may call it.
    """

    def __init__(self, make: Callable[[str], Device], max_loaded: int = MAX_LOADED_DEVICES) -> None:
        self._make = make
        self.max_loaded = max(1, max_loaded)
        self.sorted_ids: list[str] = []
        self._known: set[str] = set()
        self._held: OrderedDict[str, Device] = OrderedDict()
        """Devices held, least recently asked for first (at most ``max_loaded`` idle ones)."""
        self._live: weakref.WeakValueDictionary[str, Device] = weakref.WeakValueDictionary()
        """Every device object alive, held here or anywhere else."""
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._known)

    def __contains__(self, device_id: str) -> bool:
        return device_id in self._known

    def load(self, ids: Iterable[str]) -> None:
        """Register the IDs found at start-up (no object is made)."""
        self.sorted_ids = sorted(ids)
        self._known = set(self.sorted_ids)

    def add(self, ids: list[str], devices: Iterable[Device] = ()) -> None:
        """Register new IDs (under the fleet's lock), with the objects already made for some of them."""
        new = [i for i in ids if i not in self._known]
        self._known.update(new)
        if len(new) < 32:
            for device_id in new:
                bisect.insort(self.sorted_ids, device_id)
        else:  # two sorted runs: the sort merges them in linear time
            self.sorted_ids.extend(sorted(new))
            self.sorted_ids.sort()
        with self._lock:
            for device in devices:
                self._live[device.id] = device
                self._hold(device)

    def remove(self, device: Device) -> bool:
        """Unregister the device if this object is the registered one (under the fleet's lock)."""
        with self._lock:
            if device.id not in self._known or self._live.get(device.id) is not device:
                return False
            self._known.discard(device.id)
            self._held.pop(device.id, None)
            self._live.pop(device.id, None)
        del self.sorted_ids[bisect.bisect_left(self.sorted_ids, device.id)]
        return True

    def get(self, device_id: str) -> Device | None:
        """The device's object, made now if none is alive; None if the ID is not registered."""
        with self._lock:
            if device_id not in self._known:
                return None
            device = self._live.get(device_id)
            if device is None:
                device = self._make(device_id)
                self._live[device_id] = device
            self._hold(device)
            return device

    def peek(self, device_id: str) -> Device | None:
        """The device's object if one is alive (none is made)."""
        return self._live.get(device_id)

    def alive(self) -> list[Device]:
        """Every device object alive now (held here or elsewhere)."""
        with self._lock:
            return list(self._live.values())

    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def _hold(self, device: Device) -> None:
        """Hold the device as the most recently asked for; drop idle ones past the bound (under the lock)."""
        self._held[device.id] = device
        self._held.move_to_end(device.id)
        tries = 0
        while len(self._held) > self.max_loaded and tries < TRIES_PER_DROP:
            oldest_id, oldest = next(iter(self._held.items()))
            if oldest is device:
                break
            if _idle(oldest):
                del self._held[oldest_id]
            else:
                self._held.move_to_end(oldest_id)
                tries += 1


def _idle(device: Device) -> bool:
    """Nothing of the device would be lost with its object: what it has is all in its files."""
    ledger = device.ledger
    return not (
        device.resident
        or device.participating
        or device.lock.locked()
        or ledger.record_dirty
        or ledger.history_dirty
    )
