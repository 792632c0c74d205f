"""A device's record and loss history: ``device.json`` and ``history.jsonl``, in memory and on disk.

The record is read on first use, then kept; the device's model is resolved from it once. It is
written (fsync and rename) on save, eviction, restart and flush, never per training step.

The history is a log: the steps trained since it was last written wait in memory (``pending``) and
are appended, a line each, when the record is written; nothing rewrites it, until it passes
HISTORY_COMPACT_LINES lines and is replaced, in one rename, by its last HISTORY_LIMIT entries. The
file is read to be shown, and before a device's first training step while it holds its interpreter,
only if it changed (a ``stat``) since this object last read or wrote it. A ``history.json`` of an
earlier version is read in its place and replaced by the log at the next write.

A file that cannot be read back is reported, never crashed on:

- ``device.json`` missing or unreadable: ``Device.info()`` shows it as ``problem``; other calls raise
  CorruptState. Reset writes a fresh record (the same ID; the model it named if that can still be
  read and loaded, else the default; created now).
- ``history.jsonl`` (or ``history.json``): ``history()`` and training steps raise CorruptState, a step
  before it runs (nothing is applied, so a retry cannot apply it twice). Reset deletes the file. A last
  line without its newline is no problem: a crash tore it mid-append; it is ignored, and cut off when
  the next lines are appended.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import orjson

from service.errors import CorruptState, FleetError
from service.fleet.models import DEFAULT_MODEL
from service.fleet.record import (
    HISTORY,
    HISTORY_COMPACT_LINES,
    HISTORY_LIMIT,
    LEGACY_HISTORY,
    RECORD,
    SPILL,
    DeviceRecord,
    HistoryEntry,
    is_history_entry,
    remove_file,
)
from service.runtime import CompiledModel
from service.storage import (
    MISSING,
    WriteFence,
    append,
    read_json,
    read_log,
    shown,
    storage_error,
    utc_now,
    write_atomic,
    write_json,
)

log = logging.getLogger(__name__)

REMEDY = "reset or delete the device"

ModelResolver = Callable[[str], CompiledModel]
"""Model name -> compiled model (the fleet's model store)."""

Stamp = tuple[int, int, int]
"""What a file is: inode, size and modification time (ns); ABSENT when there is none."""
ABSENT: Stamp = (0, 0, 0)


def stamp_of(status: os.stat_result) -> Stamp:
    return (status.st_ino, status.st_size, status.st_mtime_ns)


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
        "_history_checked",
        "_history_lines",
        "_history_stamp",
        "_legacy_history",
        "_load_lock",
        "_model",
        "_models",
        "_problems",
        "pending",
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
        self.pending: list[HistoryEntry] = []
        """Steps trained since the history was last written, oldest first (at most HISTORY_LIMIT)."""
        self._history_stamp: Stamp | None = None
        """The history file as this object last read or wrote it (None: not yet)."""
        self._history_lines = 0
        """Lines in the history file then."""
        self._legacy_history = False
        """The entries read came from ``history.json``: the next write replaces it with the log."""
        self._history_checked = False
        """Checked before a training step; again only once the device has dropped its interpreter."""
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
        """Write the record, and append the steps trained since the history was written; durably
        (fsync, rename, fsync of the directory) unless the caller flushes many devices at once."""
        assert self.record is not None, "only a loaded record is written"
        device = self._device
        write_json(device.directory / RECORD, self.record.to_json(), durable, device.data_dir, device.fence)
        self.record_dirty = False
        if self.pending:
            self._write_history(durable)

    def write_if_dirty(self, durable: bool = True) -> bool:
        if self.record_dirty or self.pending:
            self.write(durable)
            return True
        return False

    def _write_history(self, durable: bool) -> None:
        device = self._device
        path = device.directory / HISTORY
        if self._legacy_history or self._history_lines + len(self.pending) > HISTORY_COMPACT_LINES:
            kept = (self.read_history() + self.pending)[-HISTORY_LIMIT:]
            write_atomic(path, _lines(kept), durable, device.data_dir, device.fence)
            if self._legacy_history:
                remove_file(device.directory / LEGACY_HISTORY, device.data_dir)
                self._legacy_history = False
            self._history_stamp, self._history_lines = self._stat_history(), len(kept)
        else:
            status = append(path, _lines(self.pending), durable, device.data_dir, device.fence)
            self._history_stamp = stamp_of(status)
            self._history_lines += len(self.pending)
        self.pending = []

    # -- the history -------------------------------------------------------------------------

    @property
    def history_dirty(self) -> bool:
        """Whether steps were trained since the history was last written."""
        return bool(self.pending)

    def add_step(self, entry: HistoryEntry) -> None:
        """A training step's entry, written with the record (the last HISTORY_LIMIT are kept)."""
        self.pending.append(entry)
        if len(self.pending) > 2 * HISTORY_LIMIT:
            del self.pending[:-HISTORY_LIMIT]

    def drop_pending(self) -> None:
        """Forget the steps not written yet (the device is reset or deleted)."""
        self.pending = []

    def entries(self) -> list[HistoryEntry]:
        """Loss per training step, oldest first (the last HISTORY_LIMIT). Blocking: it reads the file.

        CorruptState when the history file cannot be read.
        """
        return (self.read_history() + self.pending)[-HISTORY_LIMIT:]

    def check_history(self) -> None:
        """Before a training step: CorruptState if the history file cannot be read. It is read only
        if it changed since this object last read or wrote it, and checked once while the device
        holds its interpreter (as the history was kept in memory while it trained)."""
        if self._history_checked:
            return
        if self._history_stamp is None or self._history_stamp != self._stat_history():
            self.read_history()
        self._history_checked = True

    def _stat_history(self) -> Stamp:
        path = self._device.directory / HISTORY
        try:
            return stamp_of(path.stat())
        except FileNotFoundError:
            return ABSENT
        except OSError as exc:
            raise storage_error(f"could not stat {self._shown(path)}", exc) from exc

    def read_history(self) -> list[HistoryEntry]:
        """The history file's entries, checked (the last HISTORY_LIMIT); CorruptState naming it."""
        directory = self._device.directory
        path = directory / HISTORY
        try:
            stamp = self._stat_history()  # before the read: a change during it shows next time
            entries = read_log(path, self._device.data_dir)
            legacy = False
            if entries is None:
                path = directory / LEGACY_HISTORY
                entries = read_json(path, MISSING, root=self._device.data_dir)
                legacy = entries is not MISSING
                entries = entries if legacy else []
            if not isinstance(entries, list) or not all(is_history_entry(e) for e in entries):
                raise CorruptState(f"{self._shown(path)} is not a loss history")
        except CorruptState as exc:
            message = f"{exc.message}; {REMEDY}"
            self._problems[HISTORY] = message
            raise CorruptState(message) from exc
        self._problems.pop(HISTORY, None)
        self._history_stamp, self._history_lines = stamp, 0 if legacy else len(entries)
        self._legacy_history = legacy
        return entries[-HISTORY_LIMIT:]

    def release(self) -> None:
        """The device dropped its interpreter: its history is checked again before it next trains."""
        if not self.pending:
            self._history_checked = False

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

        The history files are the caller's to delete first."""
        record.train_steps, record.last_loss = 0, None
        with self._load_lock:
            self.record, self._model = record, model
        self.pending = []
        self._history_stamp, self._history_lines, self._legacy_history = ABSENT, 0, False
        self._history_checked = True
        self.record_dirty = True
        self.write()


def _lines(entries: list[HistoryEntry]) -> bytes:
    return b"".join(orjson.dumps(entry) + b"\n" for entry in entries)
