"""One simulated device: its interpreter, its lock and its files, behind one object.

Everything durable about a device lives in its own directory:

    device.json        the record (model, created, train steps, last loss)
    history.json       loss per training step (bounded)
    checkpoint.ckpt    the user's checkpoint, written by the model's ``save`` signature
    spill.ckpt         unsaved weights of an evicted interpreter (never a user checkpoint)
    samples/           the device's own labelled samples (``service.fleet.samples``)
    jobs.json          its background training jobs (``service.fleet.jobs``)

The tutorial's rule holds: whenever an interpreter is created for a device, it restores the
device's checkpoint if one exists (after an eviction, the spill instead, which is newer).
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np

from service.errors import (
    CorruptState,
    DeviceNotFound,
    InvalidTensor,
    NoCheckpoint,
    SignatureNotFound,
    StorageError,
)
from service.fleet.files import atomic_target, read_json, write_json
from service.fleet.samples import SampleStats, SampleStore
from service.fleet.stats import FleetStats
from service.runtime import CompiledModel, ModelInterpreter, SignatureSpec

RECORD = "device.json"
CHECKPOINT = "checkpoint.ckpt"
SPILL = "spill.ckpt"
CHECKPOINT_SIGNATURES = ("save", "restore")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class DeviceRecord:
    id: str
    model: str
    created_at: str
    train_steps: int = 0
    last_loss: float | None = None

    @classmethod
    def read(cls, path: Path) -> DeviceRecord:
        try:
            return cls(**read_json(path))
        except TypeError as exc:  # missing or unknown fields; read_json reports unreadable files
            raise CorruptState(f"{path.parent.name}/{path.name} is not a device record: {exc}") from exc


@dataclass(frozen=True)
class DeviceInfo:
    id: str
    model: str
    created_at: str
    resident: bool
    train_steps: int
    last_loss: float | None
    has_checkpoint: bool
    checkpoint_saved_at: str | None
    checkpoint_bytes: int | None
    has_spill: bool


HISTORY = "history.json"
HISTORY_LIMIT = 10_000
"""Loss history entries kept per device."""
SAMPLE_CAPACITY = 10_000
HistorySource = Literal["train", "job"]
HistoryEntry = dict[str, object]


def scalar_loss(outputs: Mapping[str, np.ndarray]) -> float | None:
    """The step's loss: the ``loss`` output, else the only output when it is a scalar; None if
    there is none or it is not finite (a diverged step has no loss worth recording)."""
    value = outputs.get("loss")
    if value is None and len(outputs) == 1:
        value = next(iter(outputs.values()))
    if value is None or np.size(value) != 1:
        return None
    loss = float(np.asarray(value).reshape(()))
    return loss if math.isfinite(loss) else None


ActivationHook = Callable[["Device"], None]
ModelResolver = Callable[[str], CompiledModel]
"""Model name -> compiled model (the fleet's model store)."""
_FIRST_READ = threading.Lock()
EvictOutcome = Literal["busy", "absent", "spilled", "dropped"]


class Device:
    """A device ID with its model, its directory and, while resident, its interpreter.

    Every public method takes the device's lock: an interpreter is not thread-safe, so calls on
    one device run one at a time, while calls on different devices run in parallel.
    """

    def __init__(
        self,
        device_id: str,
        directory: Path,
        models: ModelResolver,
        sample_capacity: int = SAMPLE_CAPACITY,
        record: DeviceRecord | None = None,
    ) -> None:
        self.id = device_id
        self.directory = directory
        self._models = models
        self._record = record
        self._model: CompiledModel | None = None
        self.samples = SampleStore(directory, sample_capacity)
        self._history: deque[HistoryEntry] | None = None
        self._history_dirty = False
        self.lock = threading.Lock()
        self.deleted = False
        self.last_used = time.monotonic()
        self._interpreter: ModelInterpreter | None = None
        self._record_dirty = False
        self._weights_changed = False
        """Whether the live weights differ from what a new interpreter would restore (evictions spill)."""
        self.on_activate: ActivationHook | None = None
        self.on_release: ActivationHook | None = None
        self.stats: FleetStats | None = None
        """The fleet's counters (train steps, checkpoint times), set when the fleet registers the device."""

    @property
    def record(self) -> DeviceRecord:
        """The device's record, read from its directory on first use.

        Reading lazily lets a service with 100,000 devices on disk start in seconds. The first read
        in a process also drops a spill left by the previous one: after a service restart, as after
        an app restart, a device starts from its checkpoint.
        """
        if self._record is None:
            with _FIRST_READ:
                if self._record is None:
                    record = DeviceRecord.read(self.directory / RECORD)
                    self.spill_path.unlink(missing_ok=True)
                    self._record = record
        return self._record

    @property
    def model(self) -> CompiledModel:
        if self._model is None:
            self._model = self._models(self.record.model)
        return self._model

    @property
    def checkpoint_path(self) -> Path:
        return self.directory / CHECKPOINT

    @property
    def spill_path(self) -> Path:
        return self.directory / SPILL

    @property
    def resident(self) -> bool:
        return self._interpreter is not None

    # -- files -------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        record: DeviceRecord,
        directory: Path,
        models: ModelResolver,
        sample_capacity: int = SAMPLE_CAPACITY,
    ) -> Device:
        try:
            directory.mkdir(parents=True)
        except OSError as exc:
            raise StorageError(f"could not create the directory of device '{record.id}': {exc}") from exc
        device = cls(record.id, directory, models, sample_capacity, record)
        device.write_record()
        return device

    def write_record(self) -> None:
        write_json(self.directory / RECORD, asdict(self.record))
        if self._history is not None and self._history_dirty:
            write_json(self.directory / HISTORY, list(self._history))
            self._history_dirty = False
        self._record_dirty = False

    @property
    def history(self) -> list[HistoryEntry]:
        """Loss per training step, oldest first (the last HISTORY_LIMIT), from memory or the device's file."""
        with self.lock:
            return list(self._loaded_history())

    def _loaded_history(self) -> deque[HistoryEntry]:
        if self._history is None:
            self._history = deque(read_json(self.directory / HISTORY, []), maxlen=HISTORY_LIMIT)
        return self._history

    def flush(self) -> None:
        """Persist counters that changed since the last write (called at shutdown and eviction)."""
        with self.lock:
            if self._record_dirty and not self.deleted:
                self.write_record()

    def info(self) -> DeviceInfo:
        try:
            stat = self.checkpoint_path.stat()
        except FileNotFoundError:
            stat = None
        return DeviceInfo(
            id=self.id,
            model=self.record.model,
            created_at=self.record.created_at,
            resident=self.resident,
            train_steps=self.record.train_steps,
            last_loss=self.record.last_loss,
            has_checkpoint=stat is not None,
            checkpoint_saved_at=(
                datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(timespec="milliseconds")
                if stat
                else None
            ),
            checkpoint_bytes=stat.st_size if stat else None,
            has_spill=self.spill_path.exists(),
        )

    # -- the interpreter ---------------------------------------------------------------------

    def checkpoint_signature(self, name: str) -> SignatureSpec:
        spec = self.model.signature(name)
        if len(spec.inputs) != 1 or not spec.inputs[0].is_string:
            raise SignatureNotFound(
                f"model '{self.model.name}': signature '{name}' must take one string (the checkpoint path) "
                f"to be used for checkpoints; it takes {[s.describe() for s in spec.inputs]}"
            )
        return spec

    def _run_checkpoint(self, interpreter: ModelInterpreter, name: str, path: Path) -> None:
        spec = self.checkpoint_signature(name)
        started = time.perf_counter()
        interpreter.run(name, {spec.inputs[0].name: np.array(os.fsencode(path), dtype=spec.inputs[0].dtype)})
        if self.stats is not None:
            self.stats.observe_checkpoint(name, time.perf_counter() - started)

    def _require_live(self) -> None:
        if self.deleted:
            raise DeviceNotFound(f"device '{self.id}' was deleted")

    def _interpreter_or_activate(self) -> ModelInterpreter:
        """The live interpreter; creating one restores the spill, else the checkpoint, if present."""
        self._require_live()
        self.last_used = time.monotonic()
        if self._interpreter is not None:
            return self._interpreter
        interpreter = self.model.interpreter()
        from_spill = self.spill_path.exists()
        if from_spill:
            self._run_checkpoint(interpreter, "restore", self.spill_path)
            self.spill_path.unlink()
        elif self.checkpoint_path.exists():
            self._run_checkpoint(interpreter, "restore", self.checkpoint_path)
        self._interpreter = interpreter
        self._weights_changed = from_spill
        if self.on_activate:
            self.on_activate(self)
        return interpreter

    def _drop_interpreter(self) -> None:
        if self._interpreter is not None:
            self._interpreter = None
            if self.on_release:
                self.on_release(self)

    def evict(self) -> EvictOutcome:
        """Spill the weights and free the interpreter, unless a call holds the device.

        Never blocks: a busy device is skipped ("busy"). A model without save/restore signatures
        cannot spill, so its device's weights are those of a fresh interpreter when it comes back.
        """
        if not self.lock.acquire(blocking=False):
            return "busy"
        try:
            if self._interpreter is None or self.deleted:
                return "absent"
            spilled = self._weights_changed and self._has_checkpoint_signatures()
            if spilled:
                with atomic_target(self.spill_path, durable=False) as tmp:
                    self._run_checkpoint(self._interpreter, "save", tmp)
            if self._record_dirty:
                self.write_record()
            self._drop_interpreter()
            return "spilled" if spilled else "dropped"
        finally:
            self.lock.release()

    def _has_checkpoint_signatures(self) -> bool:
        return all(name in self.model.signatures for name in CHECKPOINT_SIGNATURES)

    # -- the operations ----------------------------------------------------------------------

    def callable_signature(self, signature: str) -> SignatureSpec:
        """The spec of a signature callers may feed: not a checkpoint one, no string inputs."""
        if signature in CHECKPOINT_SIGNATURES:
            raise InvalidTensor(
                f"signature '{signature}' works on the device's own checkpoint; it takes no inputs"
            )
        spec = self.model.signature(signature)
        if spec.string_inputs:
            raise InvalidTensor(
                f"signature '{signature}' takes string input(s) {[s.name for s in spec.string_inputs]}; "
                "string inputs are refused because a model can use them as file paths"
            )
        return spec

    def add_samples(self, signature: str, inputs: Mapping[str, np.ndarray]) -> SampleStats:
        """Keep labelled samples (inputs of a training signature) in the device's own store."""
        checked = self.callable_signature(signature).check(inputs)
        self._require_live()
        return self.samples.add(signature, checked)

    def run(
        self, signature: str, inputs: Mapping[str, np.ndarray], source: HistorySource = "train"
    ) -> dict[str, np.ndarray]:
        """Run any signature on checked inputs. ``save``/``restore`` use the device's own checkpoint.

        ``train`` (and a job's training signature, ``source="job"``) counts as a training step.
        """
        if signature in CHECKPOINT_SIGNATURES:
            if inputs:
                raise InvalidTensor(
                    f"signature '{signature}' takes no inputs here: the service passes the device's own "
                    "checkpoint path"
                )
            return self.save() if signature == "save" else self.restore()
        checked = self.callable_signature(signature).check(inputs)
        with self.lock:
            outputs = self._interpreter_or_activate().run(signature, checked)
            # Only "infer" is known to leave weights alone; any other signature may change them.
            self._weights_changed |= signature != "infer"
            if signature == "train" or source == "job":
                self.record.train_steps += 1
                if self.stats is not None:
                    self.stats.train_steps.inc()
                self.record.last_loss = scalar_loss(outputs)
                if self.record.last_loss is not None:
                    self._history_dirty = True
                    self._loaded_history().append(
                        {
                            "step": self.record.train_steps,
                            "loss": self.record.last_loss,
                            "source": source,
                            "at": time.time(),
                        }
                    )
                self._record_dirty = True
            return outputs

    def save(self) -> dict[str, np.ndarray]:
        """Write the interpreter's weights to the device's checkpoint, atomically."""
        self.checkpoint_signature("save")
        with self.lock:
            interpreter = self._interpreter_or_activate()
            with atomic_target(self.checkpoint_path) as tmp:
                self._run_checkpoint(interpreter, "save", tmp)
            self._weights_changed = False
            self.write_record()
            return {"checkpoint_path": np.array(CHECKPOINT.encode())}

    def restore(self) -> dict[str, np.ndarray]:
        """Load the device's checkpoint into its interpreter (409 if it has none)."""
        self.checkpoint_signature("restore")
        with self.lock:
            self._require_live()
            if not self.checkpoint_path.exists():
                raise NoCheckpoint(f"device '{self.id}' has no checkpoint to restore; save one first")
            if self._interpreter is None and not self.spill_path.exists():
                self._interpreter_or_activate()  # a new interpreter restores the checkpoint itself
            else:
                self._run_checkpoint(self._interpreter_or_activate(), "restore", self.checkpoint_path)
            self._weights_changed = False
            return {"checkpoint_path": np.array(CHECKPOINT.encode())}

    def reset(self) -> None:
        """Back to the baseline model: delete the checkpoint (and any spill), start a fresh interpreter."""
        with self.lock:
            self._require_live()
            self.checkpoint_path.unlink(missing_ok=True)
            self.spill_path.unlink(missing_ok=True)
            self._drop_interpreter()
            self.record.train_steps = 0
            self.record.last_loss = None
            self._history, self._history_dirty = deque(maxlen=HISTORY_LIMIT), True
            self.write_record()
            self._interpreter_or_activate()

    def restart(self) -> None:
        """Drop the interpreter as an app restart would: unsaved weights are gone, the checkpoint stays."""
        with self.lock:
            self._require_live()
            self.spill_path.unlink(missing_ok=True)
            self._drop_interpreter()
            if self._record_dirty:
                self.write_record()

    def delete(self) -> None:
        with self.lock:
            if self.deleted:
                return
            self.deleted = True
            self._drop_interpreter()
            shutil.rmtree(self.directory, ignore_errors=True)
