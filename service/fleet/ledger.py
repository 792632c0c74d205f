"""A device's record and loss history: ``device.json`` and ``history.json``, in memory and on disk.

The record is read on first use, then kept; the device's model is resolved from it once. The history
is loaded by training and kept while the device is resident. Both are written (fsync and rename) on
save, eviction, restart and flush, never per training step.

A file that cannot be read back is reported, never crashed on:

- ``device.json`` missing or unreadable: ``Device.info()`` shows it as ``problem``; other calls raise
  CorruptState. Reset writes a fresh record (the same ID; the model it named if that can still be
  read and loaded, else the default; created now).
- ``history.json``: ``history()`` and training steps raise CorruptState, a step before it runs
  (nothing is applied, so a retry cannot apply it twice). Reset deletes the file.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from service.errors import CorruptState, FleetError
from service.fleet.models import DEFAULT_MODEL
from service.fleet.record import (
    HISTORY,
    HISTORY_LIMIT,
    RECORD,
    SPILL,
    DeviceRecord,
    HistoryEntry,
    is_history_entry,
    remove_file,
)
from service.runtime import CompiledModel
from service.storage import MISSING, WriteFence, read_json, shown, utc_now, write_json

log = logging.getLogger(__name__)

REMEDY = "reset or delete the device"

ModelResolver = Callable[[str], CompiledModel]
"""Model name -> compiled model (the fleet's model store)."""


class LedgerOwner(Protocol):
    """What the ledger uses of its device (``service.fleet.device.Device``)."""

    id: str
    directory: Path
    data_dir: Path
    fence: WriteFence | None


class Ledger:
    """The device's record, its model and its loss history.

    ``read_record()`` and ``load()`` take a lock of their own, not the device's, so that a listing
    never waits behind a running call; every other call is made under the device's lock.
    """

    __slots__ = (
        "_device",
        "_load_lock",
        "_model",
        "_models",
        "_problems",
        "history",
        "history_dirty",
        "record",
        "record_dirty",
    )

    def __init__(
        self,
        device: LedgerOwner,
        models: ModelResolver,
        record: DeviceRecord | None,
        problems: dict[str, str],
    ) -> None:
        self._device = device
        self._models = models
        self.record = record
        """None until read (``read_record()``); replaced only by a reset. Read it, never assign it."""
        self._model: CompiledModel | None = None
        self._load_lock = threading.Lock()
        """Guards reading the record and resolving the model."""
        self._problems = problems
        """The device's problems by file (shared with it): the history's are reported here."""
        self.history: deque[HistoryEntry] | None = None
        """Loaded by training and kept while resident; dropped with the interpreter once written."""
        self.history_dirty = False
        self.record_dirty = False

    def _shown(self, path: Path) -> str:
        return shown(path, self._device.data_dir)

    # -- the record and the model ------------------------------------------------------------

    def read_record(self) -> DeviceRecord:
        """The record, read from the directory on first use, then kept: blocking the first time.

        CorruptState when it is missing or cannot be read (the message says the way out).

        Reading lazily lets a service with 100,000 devices on disk start in seconds. The first read
        in a process also drops a spill left by the previous one: after a service restart, as after
        an app restart, a device starts from its checkpoint.
        """
        record = self.record
        if record is not None:
            return record
        device = self._device
        with self._load_lock:
            if self.record is None:
                path = device.directory / RECORD
                try:
                    value = read_json(path, MISSING, root=device.data_dir)
                    if value is MISSING:
                        raise CorruptState(f"{self._shown(path)} is missing")
                    record = DeviceRecord.parse(device.id, value, self._shown(path))
                except CorruptState as exc:
                    raise CorruptState(f"{exc.message}; {REMEDY}") from exc
                remove_file(device.directory / SPILL, device.data_dir)
                self.record = record
            return self.record

    def load(self) -> CompiledModel:
        """Read the record and resolve the device's model, once (``Device.load``); blocking."""
        model = self._model
        if model is not None:
            return model
        record = self.read_record()
        with self._load_lock:
            if self._model is None:
                self._model = self._models(record.model)
            return self._model

    def loaded_model(self) -> CompiledModel | None:
        """The device's model if ``load()`` has resolved it; None otherwise. Never touches the disk."""
        return self._model

    # -- writing -----------------------------------------------------------------------------

    def write(self, durable: bool = True) -> None:
        """Write the record, and the history if it changed, durably (fsync, rename, fsync of the dir)."""
        assert self.record is not None, "only a loaded record is written"
        device = self._device
        write_json(device.directory / RECORD, self.record.to_json(), durable, device.data_dir, device.fence)
        self.record_dirty = False
        if self.history is not None and self.history_dirty:
            write_json(device.directory / HISTORY, list(self.history), durable, device.data_dir, device.fence)
            self.history_dirty = False

    def write_if_dirty(self, durable: bool = True) -> bool:
        if self.record_dirty or self.history_dirty:
            self.write(durable)
            return True
        return False

    # -- the history -------------------------------------------------------------------------

    def entries(self) -> list[HistoryEntry]:
        """Loss per training step, oldest first (the last HISTORY_LIMIT). Blocking: it may read the file.

        CorruptState when ``history.json`` cannot be read. The history is kept in memory only while
        the device trains; otherwise it is read for the call and not kept.
        """
        if self.history is not None:
            return list(self.history)
        return self.read_history()

    def read_history(self) -> list[HistoryEntry]:
        path = self._device.directory / HISTORY
        try:
            entries = read_json(path, [], root=self._device.data_dir)
            if not isinstance(entries, list) or not all(is_history_entry(e) for e in entries):
                raise CorruptState(f"{self._shown(path)} is not a loss history")
        except CorruptState as exc:
            message = f"{exc.message}; {REMEDY}"
            self._problems[HISTORY] = message
            raise CorruptState(message) from exc
        self._problems.pop(HISTORY, None)
        return entries

    def loaded_history(self) -> deque[HistoryEntry]:
        if self.history is None:
            self.history = deque(self.read_history(), maxlen=HISTORY_LIMIT)
        return self.history

    def release(self) -> None:
        """Drop the history from memory once it is written (the interpreter goes: memory follows)."""
        if not self.history_dirty:
            self.history = None

    # -- reset -------------------------------------------------------------------------------

    def record_for_reset(self) -> tuple[DeviceRecord, CompiledModel]:
        """The record to reset to and its model; a readable record whose model is gone raises (nothing
        has changed yet)."""
        try:
            record = self.read_record()
        except FleetError as exc:
            log.warning(
                "device %s: a fresh record replaces the unreadable one: %s", self._device.id, exc.message
            )
            model = self._salvaged_model()
            return DeviceRecord(id=self._device.id, model=model.name, created_at=utc_now()), model
        return record, self.load()

    def _salvaged_model(self) -> CompiledModel:
        """The model an unreadable record still names, if it loads; else the default model."""
        try:
            value = read_json(self._device.directory / RECORD, root=self._device.data_dir)
            name = value.get("model") if isinstance(value, dict) else None
            if isinstance(name, str) and name:
                return self._models(name)
        except FleetError:
            pass
        return self._models(DEFAULT_MODEL)

    def start_over(self, record: DeviceRecord, model: CompiledModel) -> None:
        """Take ``record`` (from ``record_for_reset``) with no steps and an empty history, and write it.

        The history file is the caller's to delete first, and the history in memory to drop."""
        record.train_steps, record.last_loss = 0, None
        with self._load_lock:
            self.record, self._model = record, model
        self.history = deque(maxlen=HISTORY_LIMIT)
        self.record_dirty = True
        self.write()
