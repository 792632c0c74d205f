"""One simulated device: its interpreter, its lock and its files, behind one object.

Everything durable about a device lives in its own directory, ``data_dir/devices/<id>/`` (names and
shapes in ``service.fleet.record``):

    device.json        the record (model, created, train steps, last loss)
    history.jsonl      loss per training step, a line each (bounded; ``history.json`` before)
    checkpoint.ckpt    the user's checkpoint, written by the model's ``save`` signature
    spill.ckpt         unsaved weights of an evicted interpreter (never a user checkpoint)
    handover.ckpt      unsaved weights handed to the device's next owner (a shard of a sharded fleet)
    incoming.ckpt      weights it adopts (a model version), for the moment they are restored
    outgoing.ckpt      its weights written for the server (a federated update), until they are read
    samples/           the device's own labelled samples (``service.fleet.samples``)
    jobs.json          its background training jobs (``service.fleet.jobs``)

``Device`` keeps what a device owns: its lock, its directory and its interpreter's lifetime
(activation, eviction, hand-over, restart, reset, deletion). It delegates the rest to collaborators,
each with one job (it holds the ledger; the others hold nothing and are made when used):

    ledger        the record and the loss history (``service.fleet.ledger``)
    checkpoints   the weight files: checkpoint, spill, hand-over (``service.fleet.checkpoints``)
    phone         the profile and the simulated clock (``service.fleet.phone``)
    calls         signatures, samples, training and inference steps (``service.fleet.calls``)

No attribute does I/O: ``load()`` reads the record and resolves the model (blocking), while
``loaded_model()`` answers from memory. A file that cannot be read back is reported, never crashed
on (how, file by file: the ledger and the checkpoints), and ``reset()`` and ``delete()`` always work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np

from service.errors import DeviceMoving, DeviceNotFound, FleetError
from service.fleet.calls import Calls
from service.fleet.checkpoints import Checkpoints
from service.fleet.ledger import Ledger, ModelResolver
from service.fleet.phone import Phone
from service.fleet.record import (
    CHECKPOINT,
    HANDOVER,
    HISTORY,
    LEGACY_HISTORY,
    SPILL,
    DeviceInfo,
    DeviceRecord,
    HistoryEntry,
    HistorySource,
    remove_file,
)
from service.fleet.samples import SAMPLE_CAPACITY, SAMPLE_CAPACITY_BYTES, SampleStats, SampleStore
from service.fleet.stats import FleetStats
from service.fleet.trash import move_to_trash
from service.profiles import DeviceProfile
from service.runtime import CompiledModel, ModelInterpreter, SignatureSpec
from service.storage import WriteFence, remove_tree, shown, storage_error

ActivationHook = Callable[["Device"], None]
EvictOutcome = Literal["busy", "absent", "spilled", "dropped"]


class Device:
    """A device ID with its model, its directory and, while resident, its interpreter.

    Every call that touches the interpreter or the device's files takes the device's lock (``info()``,
    ``load()`` and the signature lookups read only what does not change under a call): an interpreter
    is not thread-safe, so calls on one device run one at a time, while calls on different devices
    run in parallel.
    """

    __slots__ = (
        "__weakref__",  # the fleet's registry finds a device's one object by weak reference
        "_interpreter",
        "_problems",
        "data_dir",
        "deleted",
        "directory",
        "fence",
        "id",
        "last_used",
        "ledger",
        "lock",
        "moved",
        "on_activate",
        "on_release",
        "participating",
        "samples",
        "stats",
        "weights_changed",
    )

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
        self.samples = SampleStore(directory, sample_capacity, sample_capacity_bytes, root=self.data_dir)
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
        self.weights_changed = False
        """Whether the live weights differ from what a new interpreter would restore (evictions spill)."""
        self.on_activate: ActivationHook | None = None
        self.on_release: ActivationHook | None = None
        self.stats: FleetStats | None = None
        """The fleet's counters (train steps, checkpoint times), set when the fleet registers the device."""
        self.fence: WriteFence | None = None
        """Refuses this process's writes of weights and records once another owns the device (sharded)."""
        self.ledger = Ledger(self, models, record, self._problems)

    # The collaborators below hold nothing of their own (the ledger holds the device's record and
    # history): made when used, they cost a device nothing while it waits, and a million wait.

    @property
    def checkpoints(self) -> Checkpoints:
        """The device's weight files: checkpoint, spill, hand-over, adopted and outgoing weights."""
        return Checkpoints(self, self.ledger, self._problems)

    @property
    def phone(self) -> Phone:
        """The device's profile and clock."""
        return Phone(self, self.ledger)

    @property
    def calls(self) -> Calls:
        """Signature calls and samples."""
        ledger = self.ledger
        phone = Phone(self, ledger)
        return Calls(self, ledger, phone, Checkpoints(self, ledger, self._problems))

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

    # -- the record, the model and the phone (``Ledger``, ``Phone``) -------------------------

    def read_record(self) -> DeviceRecord:
        """The record, read on first use, then kept: blocking the first time; CorruptState when it
        is missing or cannot be read (``Ledger.read_record``)."""
        return self.ledger.read_record()

    def load(self) -> CompiledModel:
        """Read the record and resolve the device's model, once; blocking, so never on the event loop.

        Idempotent, and cheap once loaded. CorruptState when the record cannot be read (the message
        says how to get out of it); ModelNotFound when it names a model the fleet does not have.
        """
        return self.ledger.load()

    def loaded_record(self) -> DeviceRecord | None:
        """The record if it has been read; None otherwise. Never touches the disk."""
        return self.ledger.record

    def loaded_model(self) -> CompiledModel | None:
        """The device's model if ``load()`` has resolved it; None otherwise. Never touches the disk."""
        return self.ledger.loaded_model()

    @property
    def profile(self) -> DeviceProfile | None:
        """The phone it simulates; None for an unprofiled device (or one whose record is not read yet:
        ``read_record()`` first where that matters)."""
        record = self.ledger.record
        return None if record is None else record.profile

    @property
    def clock(self) -> float:
        """Simulated seconds its operations took so far (0 without a profile)."""
        record = self.ledger.record
        return 0.0 if record is None else record.clock

    def set_profile(self, profile: DeviceProfile | None, durable: bool = True) -> None:
        """Give the device a profile (None: take it away, and its clock with it); written at once."""
        self.phone.set_profile(profile, durable)

    def advance(self, seconds: float) -> None:
        """Add ``seconds`` of simulated time to the clock (the caller holds the lock)."""
        self.phone.advance(seconds)

    def history(self) -> list[HistoryEntry]:
        """Loss per training step, oldest first (the last HISTORY_LIMIT); blocking: it may read the file
        (``Ledger.entries``). CorruptState when the history file cannot be read."""
        with self.lock:
            return self.ledger.entries()

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
            raise storage_error(f"could not create {shown(directory, device.data_dir)}", exc) from exc
        try:
            device.ledger.write(durable)
        except FleetError:
            remove_tree(directory, device.data_dir)
            raise
        return device

    def flush(self, durable: bool = True) -> bool:
        """Persist counters that changed since the last write (called at shutdown); True if it wrote.

        Without ``durable`` the caller flushes the files to disk, for many devices at once.
        """
        with self.lock:
            return not (self.deleted or self.moved) and self.ledger.write_if_dirty(durable)

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
        checkpoint = self.checkpoints.stat(problems)
        return DeviceInfo.of(
            self.id,
            record,
            checkpoint,
            resident=self.resident,
            has_spill=self.checkpoints.has_unsaved(),
            problems=problems,
        )

    # -- the interpreter ---------------------------------------------------------------------

    def require_live(self) -> None:
        """Raise unless the device still serves calls: DeviceNotFound once deleted, DeviceMoving once
        handed over."""
        if self.deleted:
            raise DeviceNotFound(f"device '{self.id}' was deleted")
        if self.moved:
            raise DeviceMoving(f"device '{self.id}' moved to another shard; retry", retry_after=0.2)

    def live_interpreter(self) -> ModelInterpreter:
        """The live interpreter (the caller holds the lock); creating one restores the hand-over file
        or the spill, else the checkpoint, if present (``Checkpoints.restore_into``)."""
        self.require_live()
        self.last_used = time.monotonic()
        if self._interpreter is not None:
            if self._interpreter.alive:
                return self._interpreter
            self._drop_interpreter()  # its worker process died: what it had not saved went with it
        interpreter = self.ledger.load().interpreter()
        from_spill = self.checkpoints.restore_into(interpreter)
        self._interpreter = interpreter
        self.weights_changed = from_spill
        if self.on_activate:
            self.on_activate(self)
        return interpreter

    def _drop_interpreter(self) -> None:
        """Free the interpreter; the loss history is checked again before the next training step."""
        if self._interpreter is not None:
            self._interpreter = None
            if self.on_release:
                self.on_release(self)
        self.ledger.release()

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
            self.ledger.write_if_dirty()
            alive = self._interpreter.alive  # a dead worker's interpreter has nothing left to spill
            spilled = alive and self.weights_changed and self.checkpoints.has_signatures()
            if spilled:
                self.checkpoints.write(self._interpreter, self.spill_path, False)
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
            self.ledger.write_if_dirty()
            live = self._interpreter if self._interpreter is not None and self._interpreter.alive else None
            if live is not None and self.weights_changed and self.checkpoints.has_signatures():
                self.checkpoints.write(live, self.handover_path, True)
            self.moved = True
            self._drop_interpreter()

    # -- the operations (``Calls``, ``Checkpoints``) -----------------------------------------

    def checkpoint_signature(self, name: str) -> SignatureSpec:
        return self.checkpoints.signature(name)

    def callable_signature(self, signature: str) -> SignatureSpec:
        """The spec of a signature callers may feed: not a checkpoint one, no string inputs."""
        return self.calls.callable_signature(signature)

    def add_samples(self, signature: str, inputs: Mapping[str, np.ndarray]) -> SampleStats:
        """Keep labelled samples (inputs of a training signature) in the device's own store."""
        return self.calls.add_samples(signature, inputs)

    def sample_stats(self) -> SampleStats:
        return self.calls.sample_stats()

    def clear_samples(self) -> None:
        self.calls.clear_samples()

    def run(
        self, signature: str, inputs: Mapping[str, np.ndarray], source: HistorySource = "train"
    ) -> dict[str, np.ndarray]:
        """Run any signature on checked inputs (``Calls.run``); ``train`` counts as a training step."""
        return self.calls.run(signature, inputs, source)

    def save(self, durable: bool = True) -> dict[str, np.ndarray]:
        """Write the interpreter's weights to the device's checkpoint, atomically, then the counters
        (``Checkpoints.save``)."""
        return self.checkpoints.save(durable)

    def restore(self) -> dict[str, np.ndarray]:
        """Load the device's checkpoint into its interpreter (``Checkpoints.restore``)."""
        return self.checkpoints.restore()

    def write_weights(self) -> Path:
        """Write the live weights to ``outgoing.ckpt``, for the server (``Checkpoints.write_weights``)."""
        return self.checkpoints.write_weights()

    def adopt_weights(self, source: Path, name: str, lent: ModelInterpreter | None = None) -> bool:
        """Replace the live weights with those of ``source`` (a model version's file; ``name`` in messages).

        The model's ``restore`` runs on a private copy in the device's directory: a model touches no
        file but the device's own, so a shared version file stays as it was whatever the model does.
        The weights are unsaved, as after training; the checkpoint is untouched.

        A device without an interpreter takes ``lent`` (an idle interpreter of its model) if given,
        instead of making one: the adoption replaces every weight it held, and it does not count as
        resident (``give_back`` ends the loan). True when it took ``lent``.
        """
        self.checkpoints.signature("restore")
        with self.lock:
            self.require_live()
            fresh = self._interpreter is None  # then nothing it would restore is needed: it is replaced
            interpreter = (lent or self.ledger.load().interpreter()) if fresh else self._interpreter
            assert interpreter is not None
            size = self.checkpoints.adopt(interpreter, source, name)
            if fresh:
                for unsaved in (self.handover_path, self.spill_path):  # superseded by the adopted weights
                    remove_file(unsaved, self.data_dir)
                self._interpreter = interpreter
                if self.on_activate and lent is None:
                    self.on_activate(self)
            self.last_used = time.monotonic()
            self.weights_changed = True
            self.phone.download(size)  # a phone downloads the version it adopts
            return fresh and lent is not None

    def give_back(self, lent: ModelInterpreter) -> None:
        """End the loan of an interpreter ``adopt_weights`` took: weights not saved are spilled first,
        as an eviction spills them, and the device has no interpreter again (unless it dropped the
        lent one meanwhile: deleted, reset, handed over)."""
        with self.lock:
            if self._interpreter is not lent:
                return
            if (
                self.weights_changed
                and not (self.deleted or self.moved)
                and self.checkpoints.has_signatures()
            ):
                try:
                    self.checkpoints.write(lent, self.spill_path, False)
                except FleetError:  # it keeps the interpreter, now its own, and its weights with it
                    if self.on_activate:
                        self.on_activate(self)
                    raise
            self._interpreter = None
            self.ledger.release()

    # -- lifecycle ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the baseline model: delete the checkpoint, spill and history, start a fresh interpreter.

        Works whatever the files hold: a record that cannot be read is written afresh (the same ID;
        the model it named if that still loads, else the default; created now).
        """
        with self.lock:
            self.require_live()
            record, model = self.ledger.record_for_reset()
            try:
                temporaries = list(self.directory.glob(".*.tmp-*"))  # left by a crash mid-write
            except OSError:
                temporaries = []
            histories = (self.directory / HISTORY, self.directory / LEGACY_HISTORY)
            for path in (*self.checkpoints.files(), *histories, *temporaries):
                remove_file(path, self.data_dir)
            self.ledger.drop_pending()
            self._drop_interpreter()
            self._problems.clear()
            self.ledger.start_over(record, model)
            self.live_interpreter()

    def restart(self) -> None:
        """Drop the interpreter as an app restart would: unsaved weights are gone, the checkpoint stays.

        The counters are written first; if that fails, the device is left as it was.
        """
        with self.lock:
            self.require_live()
            self.ledger.write_if_dirty()
            remove_file(self.spill_path, self.data_dir)
            remove_file(self.handover_path, self.data_dir)
            self._drop_interpreter()

    def delete(self) -> None:
        """Move the directory to the trash in one rename, then remove it there.

        After the rename the ID is free; a crash before the removal leaves only trash, which the
        fleet empties when it next starts. If the rename fails (StorageError), the device is as it was.
        """
        with self.lock:
            if self.deleted:
                return
            self.require_live()  # a device handed over is another process's to delete
            target = move_to_trash(self.directory, self.data_dir, self.id)
            self.deleted = True
            self.ledger.drop_pending()
            self._drop_interpreter()
        if target is not None:
            remove_tree(target, self.data_dir)
