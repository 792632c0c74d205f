"""The residency budget: at most N interpreters in memory, least recently used evicted first."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from service.errors import FleetError
from service.fleet.device import Device
from service.fleet.memory import release_free_memory

log = logging.getLogger(__name__)

TRIM_EVERY = 32
"""Evictions between two returns of freed memory to the OS."""


@dataclass
class ResidencyStats:
    resident: int
    max_resident: int | None
    activations: int
    evictions: int
    spills: int


class Residency:
    """Tracks resident devices and evicts past the cap.

    Eviction runs in the thread that activated a device (which holds only that device's lock) and
    skips any device whose lock is held, so a device is never evicted under a running call and
    two activating threads cannot deadlock on each other. Threads activating at once share out the
    excess: each evicts only what no other thread has undertaken to evict, so together they bring
    the resident set down to the cap, not below it.
    """

    def __init__(self, max_resident: int | None) -> None:
        self.max_resident = max_resident
        self._resident: dict[str, Device] = {}
        self._lock = threading.Lock()
        self._evicting = 0
        """Evictions undertaken by activating threads and not done yet."""
        self.activations = 0
        self.evictions = 0
        self.spills = 0

    def attach(self, device: Device) -> None:
        device.on_activate = self._activated
        device.on_release = self._released

    def _released(self, device: Device) -> None:
        with self._lock:
            self._resident.pop(device.id, None)

    def _activated(self, device: Device) -> None:
        with self._lock:
            self._resident[device.id] = device
            self.activations += 1
            if self.max_resident is None:
                return
            owed = len(self._resident) - self._evicting - self.max_resident
            if owed <= 0:
                return
            self._evicting += owed
            candidates = sorted(
                (d for d in self._resident.values() if d is not device), key=lambda d: d.last_used
            )
        trim = False
        try:
            for victim in candidates:
                if owed <= 0:
                    break
                try:
                    outcome = victim.evict()
                except FleetError as exc:
                    # The victim keeps its interpreter (its weights are not lost); try the others first
                    # next time. The device being activated must not fail for another's disk.
                    log.error("could not evict device %s: %s", victim.id, exc.message)
                    victim.last_used = time.monotonic()
                    continue
                if outcome in ("spilled", "dropped"):
                    owed -= 1
                    with self._lock:
                        self._evicting -= 1
                        self.evictions += 1
                        self.spills += outcome == "spilled"
                        trim |= self.evictions % TRIM_EVERY == 0
        finally:
            with self._lock:  # what this thread could not evict (busy devices) is owed no more
                self._evicting -= owed
        if trim:
            release_free_memory()

    def stats(self) -> ResidencyStats:
        with self._lock:
            return ResidencyStats(
                resident=len(self._resident),
                max_resident=self.max_resident,
                activations=self.activations,
                evictions=self.evictions,
                spills=self.spills,
            )
