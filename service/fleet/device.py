"""One simulated device: its interpreter, its lock and its files, behind one object.

Everything durable about a device lives in its own directory, ``data_dir/devices/<id>/`` (names and
shapes in ``service.fleet.record``):

    device.json        the record (model, created, train steps, last loss)
    history.json       loss per training step (bounded)
    checkpoint.ckpt    the user's checkpoint, written by the model's ``save`` signature
    spill.ckpt         unsaved weights of an evicted interpreter (never a user checkpoint)
    handover.ckpt      unsaved weights handed to the device's next owner (a shard of a sharded fleet)
    incoming.ckpt      weights it adopts (a model version), for the moment they are restored
    outgoing.ckpt      its weights written for the server (a federated update), until they are read
    samples/           the device's own labelled samples (``service.fleet.samples``)
    jobs.json          its background training jobs (``service.fleet.jobs``)

The tutorial's rule holds: whenever an interpreter is created for a device, it restores the
device's checkpoint if one exists (after an eviction, the spill instead, which is newer; after a
hand-over between processes, the hand-over file, newer still).

No attribute does I/O: ``load()`` reads the record and resolves the model (blocking), while
``loaded_model()`` answers from memory. The record and the history are written (fsync and rename)
on save, eviction, restart and flush, never per training step.

A file that cannot be read back is reported, never crashed on, and ``reset()`` and ``delete()``
always work:

- ``device.json`` missing or unreadable: ``info()`` shows it as ``problem``; other calls raise
  CorruptState. Reset writes a fresh record (the same ID; the model it named if that can still be
  read and loaded, else the default; created now).
- ``history.json``: ``history()`` and training steps raise CorruptState, a step before it runs
  (nothing is applied, so a retry cannot apply it twice). Reset deletes the file.
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
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np

from service.errors import (
    CorruptState,
    DeviceMoving,
    DeviceNotFound,
    FleetError,
    InvalidTensor,
    NoCheckpoint,
)
from service.fleet.models import DEFAULT_MODEL
from service.fleet.record import (
    CHECKPOINT,
    HANDOVER,
    HISTORY,
    HISTORY_LIMIT,
    INCOMING,
    OUTGOING,
    RECORD,
    SPILL,
    TRASH,
    DeviceInfo,
    DeviceRecord,
    HistoryEntry,
    HistorySource,
    is_history_entry,
    scalar_loss,
)
from service.fleet.samples import SAMPLE_CAPACITY, SAMPLE_CAPACITY_BYTES, SampleStats, SampleStore
from service.fleet.stats import FleetStats
from service.fleet.weights import (
    CHECKPOINT_SIGNATURES,
    checkpoint_signature,
    has_checkpoint_signatures,
    run_checkpoint,
)
from service.profiles import DeviceProfile
from service.runtime import CompiledModel, ModelInterpreter, SignatureSpec
from service.storage import (
    MISSING,
    WriteFence,
    atomic_target,
    read_json,
    remove_tree,
    shown,
    storage_error,
    utc_now,
    write_json,
)

log = logging.getLogger(__name__)

REMEDY = "reset or delete the device"


ActivationHook = Callable[["Device"], None]
ModelResolver = Callable[[str], CompiledModel]
"""Model name -> compiled model (the fleet's model store)."""
EvictOutcome = Literal["busy", "absent", "spilled", "dropped"]


class Device:
    """A device ID with its model, its directory and, while resident, its interpreter.

    Every call that touches the interpreter or the device's files takes the device's lock (``info()``,
    ``load()`` and the signature lookups read only what does not change under a call): an interpreter
    is not thread-safe, so calls on one device run one at a time, while calls on different devices
    run in parallel.
    """

    def __init__(
        self,
        device_id: str,
        directory: Path,
        models: ModelResolver,
        sample_capacity: int = SAMPLE_CAPACITY,
        record: DeviceRecord | None = None,
        *,
        sample_capacity_bytes: int = SAMPLE_CAPACITY_BYTES,
    ) -> None:
        self.id = device_id
        self.directory = directory
        self.data_dir = directory.parent.parent
        """The data directory (devices live in ``data_dir/devices/<id>``); messages name files from it."""
        self._models = models
        self._record = record
        self._model: CompiledModel | None = None
        self._load_lock = threading.Lock()
        """Guards reading the record and resolving the model; not the device lock, so that a listing
        never waits behind a running call."""
        self.samples = SampleStore(directory, sample_capacity, sample_capacity_bytes, root=self.data_dir)
        self._history: deque[HistoryEntry] | None = None
        """Loaded by training and kept while resident; dropped with the interpreter once written."""
        self._history_dirty = False
        self._problems: dict[str, str] = {}
        """Problems found in files other than the record (checkpoint, history), by file, until fixed."""
        self.lock = threading.Lock()
        self.deleted = False
        self.moved = False
        """Handed over to another process (``hand_over``): this object serves no more calls."""
        self.participating = False
        """A federated round trains it now (``service.federated``): no job starts meanwhile."""
        self.last_used = time.monotonic()
        self._interpreter: ModelInterpreter | None = None
        self._record_dirty = False
        self._weights_changed = False
        """Whether the live weights differ from what a new interpreter would restore (evictions spill)."""
        self.on_activate: ActivationHook | None = None
        self.on_release: ActivationHook | None = None
        self.stats: FleetStats | None = None
        """The fleet's counters (train steps, checkpoint times), set when the fleet registers the device."""
        self.fence: WriteFence | None = None
        """Refuses this process's writes of weights and records once another owns the device (sharded)."""

    @property
    def checkpoint_path(self) -> Path:
        return self.directory / CHECKPOINT

    @property
    def spill_path(self) -> Path:
        return self.directory / SPILL

    @property
    def handover_path(self) -> Path:
        return self.directory / HANDOVER

    @property
    def resident(self) -> bool:
        return self._interpreter is not None

    def _shown(self, path: Path) -> str:
        return shown(path, self.data_dir)

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise storage_error(f"could not remove {self._shown(path)}", exc) from exc

    # -- the record and the model ------------------------------------------------------------

    def read_record(self) -> DeviceRecord:
        """The record, read from the directory on first use, then kept: blocking the first time.

        CorruptState when it is missing or cannot be read (the message says the way out).

        Reading lazily lets a service with 100,000 devices on disk start in seconds. The first read
        in a process also drops a spill left by the previous one: after a service restart, as after
        an app restart, a device starts from its checkpoint.
        """
        record = self._record
        if record is not None:
            return record
        with self._load_lock:
            if self._record is None:
                path = self.directory / RECORD
                try:
                    value = read_json(path, MISSING, root=self.data_dir)
                    if value is MISSING:
                        raise CorruptState(f"{self._shown(path)} is missing")
                    record = DeviceRecord.parse(self.id, value, self._shown(path))
                except CorruptState as exc:
                    raise CorruptState(f"{exc.message}; {REMEDY}") from exc
                self._unlink(self.spill_path)
                self._record = record
            return self._record

    def load(self) -> CompiledModel:
        """Read the record and resolve the device's model, once; blocking, so never on the event loop.

        Idempotent, and cheap once loaded. CorruptState when the record cannot be read (the message
        says how to get out of it); ModelNotFound when it names a model the fleet does not have.
        """
        model = self._model
        if model is not None:
            return model
        record = self.read_record()
        with self._load_lock:
            if self._model is None:
                self._model = self._models(record.model)
            return self._model

    @property
    def profile(self) -> DeviceProfile | None:
        """The phone it simulates; None for an unprofiled device (or one whose record is not read yet:
        ``read_record()`` first where that matters)."""
        record = self._record
        return None if record is None else record.profile

    @property
    def clock(self) -> float:
        """Simulated seconds its operations took so far (0 without a profile)."""
        record = self._record
        return 0.0 if record is None else record.clock

    def set_profile(self, profile: DeviceProfile | None, durable: bool = True) -> None:
        """Give the device a profile (None: take it away, and its clock with it); written at once."""
        with self.lock:
            self._require_live()
            record = self.read_record()
            record.profile = profile
            if profile is None:
                record.clock = 0.0
            self._write_record(durable)

    def advance(self, seconds: float) -> None:
        """Add ``seconds`` of simulated time to the clock (the caller holds the lock; written with the
        record, as the counters are)."""
        record = self.read_record()
        record.clock += seconds
        self._record_dirty = True

    def loaded_record(self) -> DeviceRecord | None:
        """The record if it has been read; None otherwise. Never touches the disk."""
        return self._record

    def loaded_model(self) -> CompiledModel | None:
        """The device's model if ``load()`` has resolved it; None otherwise. Never touches the disk."""
        return self._model

    # -- files -------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        record: DeviceRecord,
        directory: Path,
        models: ModelResolver,
        sample_capacity: int = SAMPLE_CAPACITY,
        *,
        sample_capacity_bytes: int = SAMPLE_CAPACITY_BYTES,
        durable: bool = True,
    ) -> Device:
        """Make the device's directory and write its record; a failure leaves no directory behind.

        Without ``durable`` the record is not flushed to disk: the caller does it for many at once
        (``files.make_durable``).
        """
        device = cls(
            record.id, directory, models, sample_capacity, record, sample_capacity_bytes=sample_capacity_bytes
        )
        try:
            directory.mkdir()  # not its parents: the fleet made them
        except OSError as exc:
            raise storage_error(f"could not create {device._shown(directory)}", exc) from exc
        try:
            device._write_record(durable)
        except FleetError:
            remove_tree(directory, device.data_dir)
            raise
        return device

    def _write_record(self, durable: bool = True) -> None:
        """Write the record, and the history if it changed, durably (fsync, rename, fsync of the dir)."""
        assert self._record is not None, "only a loaded record is written"
        write_json(self.directory / RECORD, self._record.to_json(), durable, self.data_dir, self.fence)
        self._record_dirty = False
        if self._history is not None and self._history_dirty:
            write_json(self.directory / HISTORY, list(self._history), durable, self.data_dir, self.fence)
            self._history_dirty = False

    def _write_record_if_dirty(self, durable: bool = True) -> bool:
        if self._record_dirty or self._history_dirty:
            self._write_record(durable)
            return True
        return False

    def history(self) -> list[HistoryEntry]:
        """Loss per training step, oldest first (the last HISTORY_LIMIT). Blocking: it may read the file.

        CorruptState when ``history.json`` cannot be read. The history is kept in memory only while
        the device trains; otherwise it is read for the call and not kept.
        """
        with self.lock:
            if self._history is not None:
                return list(self._history)
            return self._read_history()

    def _read_history(self) -> list[HistoryEntry]:
        path = self.directory / HISTORY
        try:
            entries = read_json(path, [], root=self.data_dir)
            if not isinstance(entries, list) or not all(is_history_entry(e) for e in entries):
                raise CorruptState(f"{self._shown(path)} is not a loss history")
        except CorruptState as exc:
            message = f"{exc.message}; {REMEDY}"
            self._problems[HISTORY] = message
            raise CorruptState(message) from exc
        self._problems.pop(HISTORY, None)
        return entries

    def _loaded_history(self) -> deque[HistoryEntry]:
        if self._history is None:
            self._history = deque(self._read_history(), maxlen=HISTORY_LIMIT)
        return self._history

    def flush(self, durable: bool = True) -> bool:
        """Persist counters that changed since the last write (called at shutdown); True if it wrote.

        Without ``durable`` the caller flushes the files to disk, for many devices at once.
        """
        with self.lock:
            return not (self.deleted or self.moved) and self._write_record_if_dirty(durable)

    def info(self) -> DeviceInfo:
        """What the device is, from memory and ``stat`` (the first call reads the record): blocking.

        Never raises for the device's files: what cannot be read shows in ``problem``, and the fields
        that would come from it are None.
        """
        problems: list[str] = []
        record: DeviceRecord | None = None
        try:
            record = self.read_record()
        except FleetError as exc:
            problems.append(exc.message)
        problems += list(self._problems.values())
        stat = None
        try:
            stat = self.checkpoint_path.stat()
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(storage_error(f"could not stat {self._shown(self.checkpoint_path)}", exc).message)
        return DeviceInfo(
            id=self.id,
            model=record.model if record else None,
            created_at=record.created_at if record else None,
            resident=self.resident,
            train_steps=record.train_steps if record else None,
            last_loss=record.last_loss if record else None,
            has_checkpoint=stat is not None,
            checkpoint_saved_at=(
                datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(timespec="milliseconds")
                if stat
                else None
            ),
            checkpoint_bytes=stat.st_size if stat else None,
            has_spill=self.spill_path.exists() or self.handover_path.exists(),
            problem=" | ".join(problems) or None,
            profile=record.profile.describe() if record and record.profile else None,
            clock=record.clock if record else None,
        )

    # -- the interpreter ---------------------------------------------------------------------

    def checkpoint_signature(self, name: str) -> SignatureSpec:
        return checkpoint_signature(self.load(), name)

    def _run_checkpoint(self, interpreter: ModelInterpreter, name: str, path: Path, target: Path) -> None:
        """``weights.run_checkpoint`` on this device's model, timed in the fleet's counters."""
        started = time.perf_counter()
        run_checkpoint(interpreter, self.load(), name, path, target, self.data_dir)
        if self.stats is not None:
            self.stats.observe_checkpoint(name, time.perf_counter() - started)

    def _restore_checkpoint(self, interpreter: ModelInterpreter) -> None:
        """Restore the user's checkpoint into ``interpreter``; CorruptState (the file kept) if it cannot be.

        A file TensorFlow cannot open fails before any variable is assigned (seen with garbage and
        truncated checkpoints), so a live interpreter keeps its weights.
        """
        try:
            self._run_checkpoint(interpreter, "restore", self.checkpoint_path, self.checkpoint_path)
        except CorruptState as exc:
            message = f"checkpoint of device '{self.id}' cannot be restored: {exc.message}; reset the device"
            self._problems[CHECKPOINT] = message
            raise CorruptState(message) from exc
        self._problems.pop(CHECKPOINT, None)

    def _require_live(self) -> None:
        if self.deleted:
            raise DeviceNotFound(f"device '{self.id}' was deleted")
        if self.moved:
            raise DeviceMoving(f"device '{self.id}' moved to another shard; retry", retry_after=0.2)

    def _interpreter_or_activate(self) -> ModelInterpreter:
        """The live interpreter; creating one restores the spill, else the checkpoint, if present."""
        self._require_live()
        self.last_used = time.monotonic()
        if self._interpreter is not None:
            if self._interpreter.alive:
                return self._interpreter
            self._drop_interpreter()  # its worker process died: what it had not saved went with it
        interpreter = self.load().interpreter()
        unsaved = next((p for p in (self.handover_path, self.spill_path) if p.exists()), None)
        from_spill = unsaved is not None
        if unsaved is not None:
            try:
                self._run_checkpoint(interpreter, "restore", unsaved, unsaved)
            except CorruptState as exc:
                self._unlink(unsaved)
                then = "its checkpoint" if self.checkpoint_path.exists() else "the baseline model"
                message = (
                    f"device '{self.id}' lost the weights it had not saved: its spill from an eviction "
                    f"cannot be restored ({exc.message}); the spill was dropped, the next call starts "
                    f"from {then}"
                )
                log.error("%s", message)
                raise CorruptState(message) from exc
            self._unlink(unsaved)
        elif self.checkpoint_path.exists():
            self._restore_checkpoint(interpreter)
        self._interpreter = interpreter
        self._weights_changed = from_spill
        if self.on_activate:
            self.on_activate(self)
        return interpreter

    def _drop_interpreter(self) -> None:
        """Free the interpreter, and the loss history with it once written: memory follows residency."""
        if self._interpreter is not None:
            self._interpreter = None
            if self.on_release:
                self.on_release(self)
        if not self._history_dirty:
            self._history = None

    def evict(self) -> EvictOutcome:
        """Write the counters, spill the weights and free the interpreter, unless a call holds the device.

        Never blocks: a busy device is skipped ("busy"). A failure to write leaves the device resident
        as it was (its weights and counters kept) and raises. A model without save/restore signatures
        cannot spill, so its device's weights are those of a fresh interpreter when it comes back.
        """
        if not self.lock.acquire(blocking=False):
            return "busy"
        try:
            if self._interpreter is None or self.deleted or self.moved:
                return "absent"
            self._write_record_if_dirty()
            alive = self._interpreter.alive  # a dead worker's interpreter has nothing left to spill
            spilled = alive and self._weights_changed and self._has_checkpoint_signatures()
            if spilled:
                with atomic_target(self.spill_path, False, self.data_dir, self.fence) as tmp:
                    self._run_checkpoint(self._interpreter, "save", tmp, self.spill_path)
            self._drop_interpreter()
            return "spilled" if spilled else "dropped"
        finally:
            self.lock.release()

    def hand_over(self) -> None:
        """Give the device up to another process: wait for a running call, write the counters and
        history, spill unsaved weights durably, free the interpreter. A failure to write leaves the
        device here as it was, and raises; afterwards every call on this object raises DeviceMoving.
        """
        with self.lock:
            if self.deleted or self.moved:
                return
            self._write_record_if_dirty()
            live = self._interpreter if self._interpreter is not None and self._interpreter.alive else None
            if live is not None and self._weights_changed and self._has_checkpoint_signatures():
                with atomic_target(self.handover_path, True, self.data_dir, self.fence) as tmp:
                    self._run_checkpoint(live, "save", tmp, self.handover_path)
            self.moved = True
            self._drop_interpreter()

    def _has_checkpoint_signatures(self) -> bool:
        return has_checkpoint_signatures(self.load())

    # -- the operations ----------------------------------------------------------------------

    def callable_signature(self, signature: str) -> SignatureSpec:
        """The spec of a signature callers may feed: not a checkpoint one, no string inputs. Blocking
        the first time (``load()``)."""
        if signature in CHECKPOINT_SIGNATURES:
            raise InvalidTensor(
                f"signature '{signature}' works on the device's own checkpoint; it takes no inputs"
            )
        spec = self.load().signature(signature)
        if spec.string_inputs:
            raise InvalidTensor(
                f"signature '{signature}' takes string input(s) {[s.name for s in spec.string_inputs]}; "
                "string inputs are refused because a model can use them as file paths"
            )
        return spec

    def add_samples(self, signature: str, inputs: Mapping[str, np.ndarray]) -> SampleStats:
        """Keep labelled samples (inputs of a training signature) in the device's own store.

        Every input must be a batch (a first dimension, the same for all): the store keeps samples,
        not tensors. Under the device's lock, so a deleted device's store is never touched.
        """
        checked = self.callable_signature(signature).check(inputs)
        sizes = {name: value.shape[0] if value.ndim else None for name, value in checked.items()}
        if not sizes or None in sizes.values() or len(set(sizes.values())) > 1:
            raise InvalidTensor(
                f"samples of signature '{signature}' must be batches with one first dimension for every "
                f"input; got {sizes or 'no inputs'}"
            )
        with self.lock:
            self._require_live()
            return self.samples.add(signature, checked)

    def sample_stats(self) -> SampleStats:
        with self.lock:
            self._require_live()
            return self.samples.stats()

    def clear_samples(self) -> None:
        with self.lock:
            self._require_live()
            self.samples.clear()

    def run(
        self, signature: str, inputs: Mapping[str, np.ndarray], source: HistorySource = "train"
    ) -> dict[str, np.ndarray]:
        """Run any signature on checked inputs. ``save``/``restore`` use the device's own checkpoint.

        ``train`` (and a job's training signature, ``source="job"``) counts as a training step. Such
        a step writes nothing: everything that can fail (activation, reading the history) fails before
        the interpreter runs, so a call either applies its step and counts it, or does neither.
        """
        if signature in CHECKPOINT_SIGNATURES:
            if inputs:
                raise InvalidTensor(
                    f"signature '{signature}' takes no inputs here: the service passes the device's own "
                    "checkpoint path"
                )
            return self.save() if signature == "save" else self.restore()
        checked = self.callable_signature(signature).check(inputs)
        training = signature == "train" or source == "job"
        with self.lock:
            interpreter = self._interpreter_or_activate()
            history = self._loaded_history() if training else None
            # Only "infer" is known to leave weights alone; any other signature may change them.
            self._weights_changed |= signature != "infer"
            outputs = interpreter.run(signature, checked)
            record = self.read_record()  # in memory: the activation read it
            if record.profile is not None:  # the phone's time for the batch
                batch = next((len(v) for v in checked.values() if np.ndim(v) > 0), 1)
                compute = record.profile.train_seconds if training else record.profile.infer_seconds
                self.advance(compute(batch))
            if history is not None:
                record.train_steps += 1
                if self.stats is not None:
                    self.stats.train_steps.inc()
                record.last_loss = scalar_loss(outputs)
                if record.last_loss is not None:
                    self._history_dirty = True
                    history.append(
                        {
                            "step": record.train_steps,
                            "loss": record.last_loss,
                            "source": source,
                            "at": time.time(),
                        }
                    )
                self._record_dirty = True
            return outputs

    def save(self, durable: bool = True) -> dict[str, np.ndarray]:
        """Write the interpreter's weights to the device's checkpoint, atomically, then the counters.

        A failure leaves the previous checkpoint intact (StorageFull when the disk is full). Without
        ``durable`` nothing is flushed to disk: the caller does it for many devices at once.
        """
        self.checkpoint_signature("save")
        with self.lock:
            interpreter = self._interpreter_or_activate()
            with atomic_target(self.checkpoint_path, durable, self.data_dir, self.fence) as tmp:
                self._run_checkpoint(interpreter, "save", tmp, self.checkpoint_path)
            self._weights_changed = False
            self._problems.pop(CHECKPOINT, None)
            self._write_record_if_dirty(durable)
            return {"checkpoint_path": np.array(CHECKPOINT.encode())}

    def restore(self) -> dict[str, np.ndarray]:
        """Load the device's checkpoint into its interpreter (409 if it has none).

        CorruptState if TensorFlow cannot read it; the file stays (reset deletes it).
        """
        self.checkpoint_signature("restore")
        with self.lock:
            self._require_live()
            if not self.checkpoint_path.exists():
                raise NoCheckpoint(f"device '{self.id}' has no checkpoint to restore; save one first")
            if self._interpreter is None:
                self._unlink(self.spill_path)  # superseded: the caller asked for the checkpoint
                self._interpreter_or_activate()  # a new interpreter restores the checkpoint itself
            else:
                self._restore_checkpoint(self._interpreter_or_activate())
            self._weights_changed = False
            return {"checkpoint_path": np.array(CHECKPOINT.encode())}

    def adopt_weights(self, source: Path, name: str) -> None:
        """Replace the live weights with those of ``source`` (a model version's file; ``name`` in messages).

        The model's ``restore`` runs on a private copy in the device's directory: a model touches no
        file but the device's own, so a shared version file stays as it was whatever the model does.
        The weights are unsaved, as after training; the checkpoint is untouched.
        """
        self.checkpoint_signature("restore")
        with self.lock:
            self._require_live()
            fresh = self._interpreter is None  # then nothing it would restore is needed: it is replaced
            interpreter = self.load().interpreter() if fresh else self._interpreter
            assert interpreter is not None
            incoming = self.directory / INCOMING
            try:
                shutil.copyfile(source, incoming)
                size = incoming.stat().st_size
            except OSError as exc:
                raise storage_error(f"could not copy {name} into {self._shown(self.directory)}", exc) from exc
            try:
                self._run_checkpoint(interpreter, "restore", incoming, incoming)
            except CorruptState as exc:
                raise CorruptState(
                    f"{name} cannot be restored into device '{self.id}': {exc.message}"
                ) from exc
            finally:
                self._unlink(incoming)
            if fresh:
                for unsaved in (self.handover_path, self.spill_path):  # superseded by the adopted weights
                    self._unlink(unsaved)
                self._interpreter = interpreter
                if self.on_activate:
                    self.on_activate(self)
            self.last_used = time.monotonic()
            self._weights_changed = True
            profile = self.read_record().profile
            if profile is not None:  # a phone downloads the version it adopts
                self.advance(profile.download_seconds(size))

    def write_weights(self) -> Path:
        """Write the live weights to ``outgoing.ckpt`` in the device's directory (for the server to read
        and remove: a federated update); the checkpoint and the unsaved state are untouched."""
        self.checkpoint_signature("save")
        with self.lock:
            interpreter = self._interpreter_or_activate()
            outgoing = self.directory / OUTGOING
            with atomic_target(outgoing, False, self.data_dir, self.fence) as tmp:
                self._run_checkpoint(interpreter, "save", tmp, outgoing)
            return outgoing

    def reset(self) -> None:
        """Back to the baseline model: delete the checkpoint, spill and history, start a fresh interpreter.

        Works whatever the files hold: a record that cannot be read is written afresh (the same ID;
        the model it named if that still loads, else the default; created now).
        """
        with self.lock:
            self._require_live()
            record, model = self._record_for_reset()
            try:
                temporaries = list(self.directory.glob(".*.tmp-*"))  # left by a crash mid-write
            except OSError:
                temporaries = []
            unsaved = (
                self.spill_path,
                self.handover_path,
                self.directory / INCOMING,
                self.directory / OUTGOING,
            )
            for path in (self.checkpoint_path, *unsaved, self.directory / HISTORY, *temporaries):
                self._unlink(path)
            self._history_dirty = False
            self._drop_interpreter()
            record.train_steps, record.last_loss = 0, None
            with self._load_lock:
                self._record, self._model = record, model
            self._history = deque(maxlen=HISTORY_LIMIT)
            self._problems.clear()
            self._record_dirty = True
            self._write_record()
            self._interpreter_or_activate()

    def _record_for_reset(self) -> tuple[DeviceRecord, CompiledModel]:
        """The record to reset to and its model; a readable record whose model is gone raises (nothing
        has changed yet)."""
        try:
            record = self.read_record()
        except FleetError as exc:
            log.warning("device %s: a fresh record replaces the unreadable one: %s", self.id, exc.message)
            model = self._salvaged_model()
            return DeviceRecord(id=self.id, model=model.name, created_at=utc_now()), model
        return record, self.load()

    def _salvaged_model(self) -> CompiledModel:
        """The model an unreadable record still names, if it loads; else the default model."""
        try:
            value = read_json(self.directory / RECORD, root=self.data_dir)
            name = value.get("model") if isinstance(value, dict) else None
            if isinstance(name, str) and name:
                return self._models(name)
        except FleetError:
            pass
        return self._models(DEFAULT_MODEL)

    def restart(self) -> None:
        """Drop the interpreter as an app restart would: unsaved weights are gone, the checkpoint stays.

        The counters are written first; if that fails, the device is left as it was.
        """
        with self.lock:
            self._require_live()
            self._write_record_if_dirty()
            self._unlink(self.spill_path)
            self._unlink(self.handover_path)
            self._drop_interpreter()

    def delete(self) -> None:
        """Move the directory to the trash in one rename, then remove it there.

        After the rename the ID is free; a crash before the removal leaves only trash, which the
        fleet empties when it next starts. If the rename fails (StorageError), the device is as it was.
        """
        with self.lock:
            if self.deleted:
                return
            self._require_live()  # a device handed over is another process's to delete
            trash = self.data_dir / TRASH
            moved_to = trash / f"{self.id}-{uuid.uuid4().hex[:12]}"
            target: Path | None = moved_to
            try:
                trash.mkdir(exist_ok=True)
                os.rename(self.directory, moved_to)
            except FileNotFoundError:  # its directory is gone already
                target = None
            except OSError as exc:
                raise storage_error(f"could not move {self._shown(self.directory)} to {TRASH}/", exc) from exc
            self.deleted = True
            self._history_dirty = False
            self._drop_interpreter()
        if target is not None:
            remove_tree(target, self.data_dir)
