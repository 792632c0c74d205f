"""A device's weight files: which file holds what, when each is written and read, and what a bad one costs.

    checkpoint.ckpt    the user's checkpoint, written by the model's ``save`` signature
    spill.ckpt         unsaved weights of an evicted interpreter (never a user checkpoint)
    handover.ckpt      unsaved weights handed to the device's next owner (a shard of a sharded fleet)
    incoming.ckpt      weights it adopts (a model version), for the moment they are restored
    outgoing.ckpt      its weights written for the server (a federated update), until they are read

The tutorial's rule holds: whenever an interpreter is created for a device, it restores the
device's checkpoint if one exists (after an eviction, the spill instead, which is newer; after a
hand-over between processes, the hand-over file, newer still). How the model's ``save`` and
``restore`` signatures run on a file is ``service.fleet.weights``.

A file that cannot be read back is reported, never crashed on:

- ``checkpoint.ckpt``: the activation or ``restore`` that reads it raises CorruptState and keeps
  the file, the user's own; reset deletes it.
- ``spill.ckpt``: it holds only weights nobody saved, so the activation that cannot restore it drops
  it (logged) and raises CorruptState once, saying the unsaved weights are lost, as a restart would
  lose them; the next call starts from the checkpoint. ``handover.ckpt`` likewise, but it outlives
  a restart: the process that wrote it is gone by design.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Protocol

import numpy as np

from service.errors import CorruptState, NoCheckpoint
from service.fleet.ledger import Ledger
from service.fleet.record import CHECKPOINT, INCOMING, OUTGOING, remove_file
from service.fleet.stats import FleetStats
from service.fleet.weights import checkpoint_signature, has_checkpoint_signatures, run_checkpoint
from service.runtime import ModelInterpreter, SignatureSpec
from service.storage import WriteFence, atomic_target, shown, storage_error

log = logging.getLogger(__name__)


class CheckpointsOwner(Protocol):
    """What the checkpoints use of their device (``service.fleet.device.Device``)."""

    id: str
    directory: Path
    data_dir: Path
    lock: threading.Lock
    stats: FleetStats | None
    fence: WriteFence | None
    weights_changed: bool

    @property
    def resident(self) -> bool: ...

    @property
    def checkpoint_path(self) -> Path: ...

    @property
    def spill_path(self) -> Path: ...

    @property
    def handover_path(self) -> Path: ...

    def require_live(self) -> None: ...

    def live_interpreter(self) -> ModelInterpreter: ...


class Checkpoints:
    """Writes and restores a device's weight files, timed in the fleet's counters (``device.stats``)."""

    __slots__ = ("_device", "_ledger", "_problems")

    def __init__(self, device: CheckpointsOwner, ledger: Ledger, problems: dict[str, str]) -> None:
        self._device = device
        self._ledger = ledger
        self._problems = problems
        """The device's problems by file (shared with it): the checkpoint's are reported here."""

    def files(self) -> tuple[Path, ...]:
        """Every weight file the device may have: the checkpoint first, then the unsaved ones."""
        device = self._device
        return (
            device.checkpoint_path,
            device.spill_path,
            device.handover_path,
            device.directory / INCOMING,
            device.directory / OUTGOING,
        )

    def stat(self, problems: list[str]) -> os.stat_result | None:
        """The checkpoint's ``stat`` (None: there is none); a failure to stat it joins ``problems``."""
        path = self._device.checkpoint_path
        try:
            return path.stat()
        except FileNotFoundError:
            pass
        except OSError as exc:
            error = storage_error(f"could not stat {shown(path, self._device.data_dir)}", exc)
            problems.append(error.message)
        return None

    def has_unsaved(self) -> bool:
        """Whether a spill or a hand-over file holds weights nobody saved."""
        return self._device.spill_path.exists() or self._device.handover_path.exists()

    def signature(self, name: str) -> SignatureSpec:
        """The model's ``save`` or ``restore`` (SignatureNotFound unless it takes a path)."""
        return checkpoint_signature(self._ledger.load(), name)

    def has_signatures(self) -> bool:
        return has_checkpoint_signatures(self._ledger.load())

    def run(self, interpreter: ModelInterpreter, name: str, path: Path, target: Path) -> None:
        """``weights.run_checkpoint`` on this device's model, timed in the fleet's counters."""
        started = time.perf_counter()
        run_checkpoint(interpreter, self._ledger.load(), name, path, target, self._device.data_dir)
        if self._device.stats is not None:
            self._device.stats.observe_checkpoint(name, time.perf_counter() - started)

    def write(self, interpreter: ModelInterpreter, path: Path, durable: bool) -> None:
        """Write the interpreter's weights to ``path`` atomically: a failure leaves the old file intact."""
        device = self._device
        with atomic_target(path, durable, device.data_dir, device.fence) as tmp:
            self.run(interpreter, "save", tmp, path)

    # -- what a new interpreter starts from --------------------------------------------------

    def restore_into(self, interpreter: ModelInterpreter) -> bool:
        """Restore a new interpreter: the hand-over file, else the spill (removed once restored), else
        the checkpoint, if present. True when it got unsaved weights (a hand-over file or a spill)."""
        device = self._device
        unsaved = next((p for p in (device.handover_path, device.spill_path) if p.exists()), None)
        if unsaved is None:
            if device.checkpoint_path.exists():
                self.restore_checkpoint(interpreter)
            return False
        try:
            self.run(interpreter, "restore", unsaved, unsaved)
        except CorruptState as exc:
            remove_file(unsaved, device.data_dir)
            then = "its checkpoint" if device.checkpoint_path.exists() else "the baseline model"
            message = (
                f"device '{device.id}' lost the weights it had not saved: its spill from an eviction "
                f"cannot be restored ({exc.message}); the spill was dropped, the next call starts "
                f"from {then}"
            )
            log.error("%s", message)
            raise CorruptState(message) from exc
        remove_file(unsaved, device.data_dir)
        return True

    def restore_checkpoint(self, interpreter: ModelInterpreter) -> None:
        """Restore the user's checkpoint into ``interpreter``; CorruptState (the file kept) if it cannot be.

        A file TensorFlow cannot open fails before any variable is assigned (seen with garbage and
        truncated checkpoints), so a live interpreter keeps its weights.
        """
        device = self._device
        try:
            self.run(interpreter, "restore", device.checkpoint_path, device.checkpoint_path)
        except CorruptState as exc:
            message = (
                f"checkpoint of device '{device.id}' cannot be restored: {exc.message}; reset the device"
            )
            self._problems[CHECKPOINT] = message
            raise CorruptState(message) from exc
        self._problems.pop(CHECKPOINT, None)

    # -- the operations ----------------------------------------------------------------------

    def save(self, durable: bool = True) -> dict[str, np.ndarray]:
        """Write the interpreter's weights to the device's checkpoint, atomically, then the counters.

        A failure leaves the previous checkpoint intact (StorageFull when the disk is full). Without
        ``durable`` nothing is flushed to disk: the caller does it for many devices at once.
        """
        self.signature("save")
        device = self._device
        with device.lock:
            interpreter = device.live_interpreter()
            self.write(interpreter, device.checkpoint_path, durable)
            device.weights_changed = False
            self._problems.pop(CHECKPOINT, None)
            self._ledger.write_if_dirty(durable)
            return {"checkpoint_path": np.array(CHECKPOINT.encode())}

    def restore(self) -> dict[str, np.ndarray]:
        """Load the device's checkpoint into its interpreter (NoCheckpoint, a 409, if it has none).

        CorruptState if TensorFlow cannot read it; the file stays (reset deletes it).
        """
        self.signature("restore")
        device = self._device
        with device.lock:
            device.require_live()
            if not device.checkpoint_path.exists():
                raise NoCheckpoint(f"device '{device.id}' has no checkpoint to restore; save one first")
            if not device.resident:
                # The spill is superseded: the caller asked for the checkpoint.
                remove_file(device.spill_path, device.data_dir)
                device.live_interpreter()  # a new interpreter restores the checkpoint itself
            else:
                self.restore_checkpoint(device.live_interpreter())
            device.weights_changed = False
            return {"checkpoint_path": np.array(CHECKPOINT.encode())}

    def adopt(self, interpreter: ModelInterpreter, source: Path, name: str) -> int:
        """Restore ``source`` into ``interpreter`` from a private copy (``incoming.ckpt``, removed
        after) and return the file's size; ``name`` names the source in messages."""
        device = self._device
        incoming = device.directory / INCOMING
        try:
            shutil.copyfile(source, incoming)
            size = incoming.stat().st_size
        except OSError as exc:
            shown_dir = shown(device.directory, device.data_dir)
            raise storage_error(f"could not copy {name} into {shown_dir}", exc) from exc
        try:
            self.run(interpreter, "restore", incoming, incoming)
        except CorruptState as exc:
            raise CorruptState(f"{name} cannot be restored into device '{device.id}': {exc.message}") from exc
        finally:
            remove_file(incoming, device.data_dir)
        return size

    def write_weights(self) -> Path:
        """Write the live weights to ``outgoing.ckpt`` in the device's directory (for the server to read
        and remove: a federated update); the checkpoint and the unsaved state are untouched."""
        self.signature("save")
        device = self._device
        with device.lock:
            interpreter = device.live_interpreter()
            outgoing = device.directory / OUTGOING
            self.write(interpreter, outgoing, False)
            return outgoing
