"""The fleet: every device by ID, created, found, listed and deleted; knows nothing of HTTP.

On disk: ``data_dir/devices/<id>/`` per device, ``data_dir/models/`` for added models and
``data_dir/trash/`` for directories of deleted devices on their way out (see ``Device.delete``).
"""

from __future__ import annotations

import bisect
import functools
import logging
import os
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from service.errors import (
    DeviceExists,
    DeviceNotFound,
    FleetError,
    InvalidId,
    InvalidRequest,
    LimitExceeded,
    ModelInUse,
)
from service.fleet.device import Device
from service.fleet.jobs import JobRunner
from service.fleet.models import DEFAULT_MODEL, ModelStore
from service.fleet.record import HISTORY, RECORD, TRASH, DeviceRecord
from service.fleet.registry import MAX_LOADED_DEVICES, Registry
from service.fleet.residency import Residency, ResidencyStats
from service.fleet.samples import SAMPLE_CAPACITY, SAMPLE_CAPACITY_BYTES
from service.fleet.stats import FleetStats
from service.fleet.trash import empty_trash
from service.profiles import DeviceProfile
from service.runtime.isolation import Isolation
from service.storage import check_id, child, fsync_dir, make_durable, storage_error, utc_now

ProfilesFor = Callable[[Sequence[str]], Mapping[str, DeviceProfile]]
"""Given the IDs about to be created, the profile of each (absent: none)."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Page:
    devices: list[Device]
    next_after: str | None
    """Pass as ``after`` to get the next page; None on the last page."""


class Ownership(Protocol):
    """Which devices a fleet serves when it is one shard of many (``service.cluster``); absent: all."""

    def owns(self, device_id: str) -> bool: ...

    def refusal(self, device_id: str) -> FleetError:
        """The error for a device this fleet does not own (NotOwner, or Unavailable while it moves)."""
        ...

    def check_write(self, device_id: str) -> None:
        """Raise unless this process may still write the device's files (from the shared disk's view,
        not this process's: a stale owner learns it here)."""
        ...


class Fleet:
    """Devices under ``data_dir/devices/<id>/``, reloaded from there when the service starts.

    With an ``ownership``, the fleet registers, creates and serves only the devices it owns, and
    answers for any other with ``ownership.refusal``; ``hand_over`` and ``take_over`` move devices
    to and from other processes sharing the data directory.
    """

    def __init__(
        self,
        data_dir: Path,
        max_resident: int | None = None,
        interpreter_threads: int = 1,
        sample_capacity: int = SAMPLE_CAPACITY,
        job_workers: int = 2,
        *,
        max_model_bytes: int | None = None,
        sample_capacity_bytes: int = SAMPLE_CAPACITY_BYTES,
        max_devices: int | None = None,
        max_job_steps: int = 1_000_000,
        ownership: Ownership | None = None,
        isolation: Isolation | None = None,
        max_loaded: int = MAX_LOADED_DEVICES,
    ) -> None:
        """``max_devices``: creating past it raises LimitExceeded (None: no cap); ``isolation``: how
        added models run out of process (None: in this one); ``max_loaded``: idle ``Device`` objects
        held in memory (the others are made again when asked for: ``service.fleet.registry``)."""
        self.ownership = ownership
        self.data_dir = data_dir.resolve()
        glob_chars = sorted({c for c in str(self.data_dir) if c in "*?[]\\"})
        if glob_chars:
            # Checkpoint paths go to TensorFlow's Restore op, which reads them as glob patterns.
            raise InvalidRequest(
                f"the data directory's path must not contain glob characters; it has {glob_chars}"
            )
        self.devices_dir = self.data_dir / "devices"
        self.trash_dir = self.data_dir / TRASH
        try:
            self.devices_dir.mkdir(parents=True, exist_ok=True)
            self.trash_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise storage_error("could not create devices/ and trash/ in the data directory", exc) from exc
        self.models = ModelStore(self.data_dir / "models", interpreter_threads, max_model_bytes, isolation)
        self.residency = Residency(max_resident)
        self.stats = FleetStats()
        self.sample_capacity = sample_capacity
        self.sample_capacity_bytes = sample_capacity_bytes
        self.max_devices = max_devices
        self.jobs = JobRunner(job_workers, max_steps=max_job_steps)
        self._registry = Registry(self._device, max_loaded)
        self._lock = threading.Lock()
        self.trash_cleaner: threading.Thread | None = None
        """Removes what deletions interrupted in the last process left in the trash (None: nothing)."""
        self._load()
        self.trash_cleaner = empty_trash(self.trash_dir, self.data_dir)

    def _device(self, device_id: str) -> Device:
        """The object of a registered device, made when it is asked for (the registry holds it)."""
        device = Device(
            device_id,
            self.devices_dir / device_id,  # a registered ID: checked when it was registered
            self.models.get,
            self.sample_capacity,
            sample_capacity_bytes=self.sample_capacity_bytes,
        )
        self._attach(device)
        return device

    def _load(self) -> None:
        """Register every device directory on disk; each reads its record when first used.

        Every directory under ``devices/`` named like an ID is a device, even one whose record is
        missing or unreadable (a crash mid-write, a disk fault): it is listed with its problem, so
        that it can be reset or deleted, rather than skipped while blocking its ID. Files, symlinks
        and other names are skipped (logged). The trash is not under ``devices/``.
        """
        found: list[str] = []
        with os.scandir(self.devices_dir) as entries:
            for entry in entries:
                if not (_is_id(entry.name) and entry.is_dir(follow_symlinks=False)):
                    log.warning("skipping devices/%s: not a device directory", entry.name)
                    continue
                if self._owns(entry.name):
                    found.append(entry.name)
        self._registry.load(found)

    def _owns(self, device_id: str) -> bool:
        return self.ownership is None or self.ownership.owns(device_id)

    def _attach(self, device: Device) -> None:
        self.residency.attach(device)
        device.stats = self.stats
        if self.ownership is not None:
            device.fence = functools.partial(self.ownership.check_write, device.id)

    def __len__(self) -> int:
        return len(self._registry)

    def known(self, device_id: str) -> bool:
        """Registered and owned here (``get`` would return it): no object made, no I/O."""
        return device_id in self._registry and self._owns(device_id)

    def create(self, device_id: str | None = None, model: str | None = None) -> Device:
        return self.create_many(None if device_id is None else [device_id], count=1, model=model)[0]

    def create_many(
        self,
        ids: Iterable[str] | None = None,
        *,
        count: int = 0,
        prefix: str = "",
        model: str | None = None,
        profiles: ProfilesFor | None = None,
    ) -> list[Device]:
        """Create devices with the given IDs, or ``count`` of them named ``prefix`` + a random suffix;
        ``profiles`` gives each its profile from the IDs chosen (random ones are known only here).

        All or nothing: an ID that is invalid or taken, or a request past ``max_devices``
        (LimitExceeded), fails the whole request before anything is made, and a failure on disk
        midway removes what was made.
        """
        compiled = self.models.get(model or DEFAULT_MODEL)  # may load it: slow, so outside the lock
        given = None if ids is None else list(ids)
        with self._lock:
            self.models.get(compiled.name)  # still there: delete_model holds this lock while it deletes
            asked = count if given is None else len(given)
            if self.max_devices is not None and len(self._registry) + asked > self.max_devices:
                raise LimitExceeded(
                    f"the fleet is full: it holds at most {self.max_devices} devices (FLEET_MAX_DEVICES)"
                )
            wanted = self._random_ids(count, prefix) if given is None else self._given_ids(given)
            self._check_free(wanted)
            made = self._make(wanted, compiled.name, profiles)
            for device in made:
                self._attach(device)
            self._registry.add(wanted, made)
            return made

    def _random_ids(self, count: int, prefix: str) -> list[str]:
        """``count`` IDs of ``prefix`` + a random suffix, not registered and owned here (under the lock)."""
        wanted: list[str] = []
        while len(wanted) < count:
            candidate = check_id("device", f"{prefix}{secrets.token_hex(6)}")  # bounds the prefix too
            if candidate not in self._registry and self._owns(candidate):
                wanted.append(candidate)
        return wanted

    def _given_ids(self, given: list[str]) -> list[str]:
        """The IDs asked for, checked; the ownership's refusal if any is not this fleet's to create."""
        wanted = [check_id("device", i) for i in given]
        foreign = [i for i in wanted if not self._owns(i)]
        if foreign and self.ownership is not None:
            raise self.ownership.refusal(foreign[0])
        return wanted

    def _check_free(self, wanted: list[str]) -> None:
        """DeviceExists if an ID repeats, is registered, or has a directory in the way (under the lock)."""
        clashes = [i for i, n in Counter(wanted).items() if n > 1 or i in self._registry]
        if clashes:
            raise DeviceExists(f"device ID(s) already exist or repeat in the request: {clashes[:10]}")
        leftovers = [i for i in wanted if (self.devices_dir / i).exists()]
        if leftovers:
            raise DeviceExists(
                f"directories of unregistered devices are in the way: {leftovers[:10]} "
                "(under devices/ in the data directory; remove them)"
            )

    def _make(self, wanted: list[str], model: str, profiles: ProfilesFor | None) -> list[Device]:
        """Make the devices on disk with ``model``, all or none: a failure removes what was made."""
        created_at = utc_now()
        made: list[Device] = []
        one = len(wanted) == 1  # many records are flushed to disk together, at the end
        profiled = {} if profiles is None else profiles(wanted)
        try:
            for device_id in wanted:
                record = DeviceRecord(
                    id=device_id, model=model, created_at=created_at, profile=profiled.get(device_id)
                )
                directory = child(self.devices_dir, device_id)
                made.append(
                    Device.create(
                        record,
                        directory,
                        self.models.get,
                        self.sample_capacity,
                        sample_capacity_bytes=self.sample_capacity_bytes,
                        durable=one,
                    )
                )
            try:
                if made and not one:
                    make_durable([device.directory / RECORD for device in made], self.devices_dir)
                fsync_dir(self.devices_dir)  # the new directories' entries
            except OSError as exc:
                raise storage_error("could not flush the new devices' records to disk", exc) from exc
        except FleetError:
            for device in made:
                try:
                    device.delete()
                except FleetError as exc:  # the first failure is the one to report
                    log.error(
                        "could not remove device %s after a failed creation: %s", device.id, exc.message
                    )
            raise
        return made

    def get(self, device_id: str) -> Device:
        """The device (its object made now if it has none); does no I/O and takes only the registry's
        short lock, so the event loop may call it."""
        if self.ownership is not None and not self.ownership.owns(device_id):
            check_id("device", device_id)
            raise self.ownership.refusal(device_id)  # also while it is registered here, but moving away
        device = self._registry.get(device_id)
        if device is None:
            raise absent(device_id)
        return device

    def _span(self, prefix: str) -> tuple[int, int]:
        """Where the IDs starting with ``prefix`` lie in the sorted IDs (under the lock)."""
        ids = self._registry.sorted_ids
        if not prefix:
            return 0, len(ids)
        start = bisect.bisect_left(ids, prefix)
        return start, bisect.bisect_left(ids, prefix + "\U0010ffff", lo=start)

    def page(self, after: str | None = None, limit: int = 100, prefix: str = "") -> Page:
        """Devices in ID order after ``after``, only those whose IDs start with ``prefix``.

        Takes the fleet-wide lock: call it from a worker thread.
        """
        with self._lock:
            low, high = self._span(prefix)
            start = max(low, bisect.bisect_right(self._registry.sorted_ids, after)) if after else low
            ids = self._registry.sorted_ids[start : min(start + limit, high)]
            more = start + limit < high
        devices = [d for d in map(self._registry.get, ids) if d is not None]  # None: deleted meanwhile
        return Page(devices, ids[-1] if more and ids else None)

    def ids(self, prefix: str = "") -> list[str]:
        """The IDs starting with ``prefix``, in order: a copy, so the caller may take its time over it."""
        with self._lock:
            low, high = self._span(prefix)
            return self._registry.sorted_ids[low:high]

    def count(self, prefix: str = "") -> int:
        """Devices whose IDs start with ``prefix``."""
        if not prefix:
            return len(self._registry)
        with self._lock:
            low, high = self._span(prefix)
            return high - low

    def delete(self, device_id: str) -> None:
        self.delete_many([device_id])

    def delete_many(self, ids: Iterable[str], dry_run: bool = False) -> int:
        """Delete the devices and their directories; unknown IDs fail the request before any deletion
        (``dry_run``: only that check).

        A device leaves the fleet once its directory is in the trash (``Device.delete``). One whose
        directory cannot be moved there (StorageError) stays registered, as it was, and the request
        stops at it.
        """
        devices = [self.get(i) for i in dict.fromkeys(ids)]
        if dry_run:
            return len(devices)
        for device in devices:
            if self._registry.peek(device.id) is not device:
                continue  # a concurrent request deleted it first
            device.delete()  # first: a device whose directory cannot move keeps its job too
            self.jobs.forget(device)
            self._unregister(device)
        return len(devices)

    def hand_over(self, device_ids: Iterable[str]) -> list[str]:
        """Give up the devices (ownership already refuses them): each spills what it has not saved and
        leaves this fleet; its running job stops. Returns the IDs handed over (those registered here).

        A device whose files cannot be written stays (StorageError raised after the others are done):
        its new owner must not start from older weights.
        """
        handed: list[str] = []
        failed: FleetError | None = None
        for device_id in device_ids:
            device = self._registry.get(device_id)
            if device is None:
                continue
            self.jobs.stop_active(device, "stopped: the device moved to another shard")
            try:
                device.hand_over()
            except FleetError as exc:
                log.error("could not hand over device %s: %s", device_id, exc.message)
                failed = failed or exc
                continue
            self.jobs.forget(device)
            self._unregister(device)
            handed.append(device_id)
        if failed is not None:
            raise failed
        return handed

    def take_over(self, device_ids: Iterable[str] | None = None) -> int:
        """Register devices another process handed over (their directories are on the shared disk);
        None: every device directory this fleet owns and has not registered. Returns how many."""
        if device_ids is None:  # ID-named directories right here: no path to check (a resize waits on this)
            with os.scandir(self.devices_dir) as entries:
                found = [e.name for e in entries if _is_id(e.name) and e.is_dir(follow_symlinks=False)]
            registry = self._registry
            directories = {i: self.devices_dir / i for i in found if i not in registry and self._owns(i)}
        else:
            directories = {}
            for device_id in device_ids:
                if device_id not in self._registry and self._owns(device_id):
                    directory = child(self.devices_dir, check_id("device", device_id))
                    if directory.is_dir():  # not deleted meanwhile
                        directories[device_id] = directory
        with self._lock:
            taken = [i for i in directories if i not in self._registry]
            self._registry.add(taken)
        return len(taken)

    def _unregister(self, device: Device) -> None:
        with self._lock:
            self._registry.remove(device)

    def delete_model(self, name: str, dry_run: bool = False) -> None:
        """Delete an added model; ModelInUse while any device uses it (``dry_run``: only check).

        Holds the fleet's lock so that no device is created with the model meanwhile; reads the record
        of every device not read yet (seconds for 100,000 devices: an admin's rare operation).
        """
        with self._lock:
            users = []
            for device in map(self._registry.get, list(self._registry.sorted_ids)):
                if device is None:
                    continue
                try:
                    model = device.read_record().model
                except FleetError:
                    continue  # an unreadable record names no model; its device resets to the default
                if model == name:
                    users.append(device.id)
            if users:
                shown = ", ".join(users[:10]) + (f" and {len(users) - 10} more" if len(users) > 10 else "")
                raise ModelInUse(
                    f"model '{name}' is used by {len(users)} device(s): {shown}; delete them first"
                )
            self.models.delete(name, dry_run)

    def reset(self, device: Device) -> None:
        """The baseline model again; a running job is stopped first, as it would train on.

        Reading the job records first sets aside a ``jobs.json`` that cannot be read
        (``service.fleet.jobs``): reset is the way out of every unreadable file.
        """
        try:
            self.jobs.jobs(device)
        except FleetError as exc:  # the disk's fault: the jobs module reports it where it matters
            log.warning("device %s: job records not read at reset: %s", device.id, exc.message)
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

        Interpreters, and the weights they had not saved, go with the process. The records are
        written plainly, then flushed to disk together: a shutdown must fit in its grace period.
        """
        self.jobs.close()
        written: list[Device] = []
        for device in self._registry.alive():  # the others have nothing unwritten
            try:
                if device.flush(durable=False):
                    written.append(device)
            except FleetError as exc:  # one device's failing disk must not cost the others theirs
                log.error("could not persist device %s: %s", device.id, exc.message)
        if written:
            files = [d.directory / name for d in written for name in (RECORD, HISTORY)]
            try:
                make_durable([f for f in files if f.exists()], self.devices_dir)
            except OSError as exc:
                log.error("could not flush the records of %d devices to disk: %s", len(written), exc.strerror)
        self.models.close()


def _is_id(name: str) -> bool:
    try:
        check_id("device", name)
    except InvalidId:
        return False
    return True


def absent(device_id: str) -> DeviceNotFound:
    """The error for a device that is not there (InvalidId first, for an ID that could not be).

    Callers that hide a device the caller may not see raise this too, so that hidden and absent
    devices look the same.
    """
    check_id("device", device_id)
    return DeviceNotFound(f"no device '{device_id}'")


def process_rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc``; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
