"""The fleet: every device by ID, created, found, listed and deleted; knows nothing of HTTP."""

from __future__ import annotations

import bisect
import logging
import os
import secrets
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from service.errors import DeviceExists, DeviceNotFound, FleetError, InvalidRequest
from service.fleet.device import RECORD, SAMPLE_CAPACITY, Device, DeviceRecord, utc_now
from service.fleet.files import ID_PATTERN, check_id, child
from service.fleet.jobs import JobRunner
from service.fleet.models import DEFAULT_MODEL, ModelStore
from service.fleet.residency import Residency, ResidencyStats
from service.fleet.stats import FleetStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Page:
    devices: list[Device]
    next_after: str | None
    """Pass as ``after`` to get the next page; None on the last page."""


class Fleet:
    """Devices under ``data_dir/devices/<id>/``, reloaded from there when the service starts."""

    def __init__(
        self,
        data_dir: Path,
        max_resident: int | None = None,
        interpreter_threads: int = 1,
        sample_capacity: int = SAMPLE_CAPACITY,
        job_workers: int = 2,
    ) -> None:
        self.data_dir = data_dir.resolve()
        if any(c in str(self.data_dir) for c in "*?[]\\"):
            # Checkpoint paths go to TensorFlow's Restore op, which reads them as glob patterns.
            raise InvalidRequest(f"data directory {self.data_dir} must not contain glob characters (*?[]\\)")
        self.devices_dir = self.data_dir / "devices"
        self.devices_dir.mkdir(parents=True, exist_ok=True)
        self.models = ModelStore(self.data_dir / "models", interpreter_threads)
        self.residency = Residency(max_resident)
        self.stats = FleetStats()
        self.sample_capacity = sample_capacity
        self.jobs = JobRunner(job_workers)
        self._devices: dict[str, Device] = {}
        self._sorted_ids: list[str] = []
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        """Register every device directory on disk; each reads its record when first used."""
        with os.scandir(self.devices_dir) as entries:
            for entry in entries:
                has_record = os.path.exists(os.path.join(entry.path, RECORD))
                if not (ID_PATTERN.fullmatch(entry.name) and has_record):
                    log.warning("skipping %s: not a device directory", entry.path)
                    continue
                self._register(Device(entry.name, Path(entry.path), self.models.get, self.sample_capacity))
        self._sorted_ids.sort()

    def _register(self, device: Device, in_order: bool = False) -> None:
        self.residency.attach(device)
        device.stats = self.stats
        self._devices[device.id] = device
        if in_order:
            bisect.insort(self._sorted_ids, device.id)
        else:
            self._sorted_ids.append(device.id)

    def __len__(self) -> int:
        return len(self._devices)

    def create(self, device_id: str | None = None, model: str | None = None) -> Device:
        return self.create_many(None if device_id is None else [device_id], count=1, model=model)[0]

    def create_many(
        self, ids: Iterable[str] | None = None, *, count: int = 0, prefix: str = "", model: str | None = None
    ) -> list[Device]:
        """Create devices with the given IDs, or ``count`` of them named ``prefix`` + a random suffix.

        All or nothing: an ID that is invalid or taken fails the whole request before anything is
        made, and a failure on disk midway removes what was made.
        """
        compiled = self.models.get(model or DEFAULT_MODEL)
        with self._lock:
            if ids is None:
                wanted: list[str] = []
                while len(wanted) < count:
                    candidate = check_id("device", f"{prefix}{secrets.token_hex(6)}")  # bounds the prefix too
                    if candidate not in self._devices:
                        wanted.append(candidate)
            else:
                wanted = [check_id("device", i) for i in ids]
            clashes = [i for i, n in Counter(wanted).items() if n > 1 or i in self._devices]
            if clashes:
                raise DeviceExists(f"device ID(s) already exist or repeat in the request: {clashes[:10]}")
            leftovers = [i for i in wanted if (self.devices_dir / i).exists()]
            if leftovers:
                raise DeviceExists(
                    f"directories of unregistered devices are in the way: {leftovers[:10]} "
                    f"(under {self.devices_dir}; remove them)"
                )
            created_at = utc_now()
            made: list[Device] = []
            try:
                for device_id in wanted:
                    record = DeviceRecord(id=device_id, model=compiled.name, created_at=created_at)
                    directory = child(self.devices_dir, device_id)
                    made.append(Device.create(record, directory, self.models.get, self.sample_capacity))
            except FleetError:
                for device in made:
                    device.delete()
                raise
            for device in made:
                self._register(device, in_order=True)
            return made

    def get(self, device_id: str) -> Device:
        device = self._devices.get(device_id)
        if device is None:
            check_id("device", device_id)
            raise DeviceNotFound(f"no device '{device_id}'")
        return device

    def page(self, after: str | None = None, limit: int = 100) -> Page:
        with self._lock:
            start = bisect.bisect_right(self._sorted_ids, after) if after else 0
            ids = self._sorted_ids[start : start + limit]
            more = start + limit < len(self._sorted_ids)
        return Page([self._devices[i] for i in ids if i in self._devices], ids[-1] if more and ids else None)

    def delete(self, device_id: str) -> None:
        self.delete_many([device_id])

    def delete_many(self, ids: Iterable[str]) -> int:
        """Delete the devices and their directories; unknown IDs fail the request before any deletion."""
        devices = [self.get(i) for i in dict.fromkeys(ids)]
        for device in devices:
            with self._lock:
                if self._devices.get(device.id) is not device:
                    continue  # a concurrent request deleted it first
                del self._devices[device.id]
                del self._sorted_ids[bisect.bisect_left(self._sorted_ids, device.id)]
            self.jobs.forget(device)
            device.delete()
        return len(devices)

    def reset(self, device: Device) -> None:
        """The baseline model again; a running job is stopped first, as it would train on."""
        self.jobs.stop_active(device, "stopped by a reset of the device")
        device.reset()

    def restart(self, device: Device) -> None:
        """An app restart: the running job stops with the app, and unsaved weights are gone."""
        self.jobs.stop_active(device, "stopped by a restart of the device")
        device.restart()

    def jobs_by_state(self) -> dict[str, int]:
        return self.jobs.counts_by_state()

    def residency_stats(self) -> ResidencyStats:
        return self.residency.stats()

    def close(self) -> None:
        """Interrupt jobs and persist every device's counters.

        Interpreters, and the weights they had not saved, go with the process.
        """
        self.jobs.close()
        for device in list(self._devices.values()):
            try:
                device.flush()
            except FleetError as exc:  # one device's failing disk must not cost the others theirs
                log.error("could not persist device %s: %s", device.id, exc.message)


def process_rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc``; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
