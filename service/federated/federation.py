"""The federated side of one fleet: its datasets, its devices' assignments, model versions and rounds.

Knows nothing of HTTP. In one process it is also where rounds' participants train (``Participants``):
on the fleet's own devices, through their own interpreters and locks.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from service.data.assignment import AssignmentCache, assign_many
from service.data.dataset import Dataset
from service.data.datasets import DatasetStore
from service.data.disjoint_assign import DisjointSpec, assign_disjoint
from service.data.pools import ClassPools
from service.data.spec import PartitionSpec
from service.errors import DeviceBusy, FleetError, InvalidRequest
from service.federated import client_side, local, upload
from service.federated.checkpoints import Weights, read_weights, write_weights
from service.federated.lending import Lending
from service.federated.local import INFER_SIGNATURE, Evaluation, accuracy, device_data
from service.federated.participants import Participants, Participation, Update
from service.federated.rounds import RoundRunner
from service.federated.spec import Evaluation as EvaluationSpec
from service.federated.strategies.base import MAX_BUFFERED_BYTES
from service.federated.task import ClientTask
from service.federated.versions import KEEP_VERSIONS, VersionStore
from service.fleet.device import Device
from service.fleet.fleet import Fleet, absent
from service.fleet.record import CHECKPOINT, HISTORY, RECORD
from service.fleet.weights import run_checkpoint
from service.profiles import DeviceProfile
from service.runtime import ModelInterpreter
from service.storage import atomic_target, make_durable, storage_error

HYPERPARAMETERS = "hyperparameters"
"""The signature a model tells its local optimizer's settings by (``service.model.trainable``)."""
SCRATCH_DIR = "rounds"
"""Where a scratch interpreter's copy of a version is put while it is restored (``data_dir/rounds/``)."""


class RemoteParticipants(Participants, Protocol):
    """A round's participants in other processes (a sharded fleet's shards), holding connections until
    ``close``. The cluster implements it; the service takes it in (``create_app(participants=...)``)."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Selection:
    """Which devices an operation covers: IDs, a prefix, or all (the fleet's own, in one process)."""

    ids: tuple[str, ...] | None = None
    prefix: str | None = None
    all: bool = False

    def check(self) -> None:
        given = sum((self.ids is not None, self.prefix is not None, self.all))
        if given != 1:
            raise InvalidRequest("select devices with exactly one of: ids, prefix, all")


class Federation:
    def __init__(
        self,
        fleet: Fleet,
        *,
        max_dataset_bytes: int = 2 * 1024**3,
        keep_versions: int = KEEP_VERSIONS,
        round_workers: int = 3,
        fashion_mnist_dir: Path | None = None,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
    ) -> None:
        self.fleet = fleet
        self.data_dir = fleet.data_dir
        self.datasets = DatasetStore(fleet.data_dir, max_dataset_bytes, fashion_mnist_dir=fashion_mnist_dir)
        self.versions = VersionStore(fleet.data_dir, self._write_base, keep_versions)
        self.rounds = RoundRunner(fleet.data_dir, self, round_workers, max_buffered_bytes)
        self.lending = Lending(keep=round_workers)
        """Interpreters a round lends participants that have none (``device_weights="saved"``)."""
        self._pools: dict[tuple[str, str], ClassPools] = {}
        self.assignments = AssignmentCache()
        self._unflushed: set[Path] = set()
        """Files participants saved without flushing them; the round's end flushes them together."""
        self._lock = threading.Lock()
        fleet.jobs.assigned = self

    def close(self) -> None:
        self.rounds.close()

    # -- devices -----------------------------------------------------------------------------

    def select(
        self, selection: Selection, allowed: Callable[[str], bool] | None = None, *, here: bool = True
    ) -> list[str]:
        """The selected devices' IDs in order; a given ID not ``allowed``, or with ``here`` unknown to
        this process's fleet, raises (a sharded fleet's rounds name devices of every shard).
        ``allowed`` None: every device is (an admin's; a prefix or all is then the registry's slice)."""
        selection.check()
        if selection.ids is not None:
            ids = list(dict.fromkeys(selection.ids))
            for device_id in ids:
                if allowed is not None and not allowed(device_id):
                    raise absent(device_id)
                if here:
                    self.fleet.get(device_id)
            return ids
        found = self.fleet.ids(selection.prefix or "")
        return found if allowed is None else [i for i in found if allowed(i)]

    # -- assignments -------------------------------------------------------------------------

    def _class_pools(self, name: str) -> ClassPools:
        dataset = self.datasets.get(name)
        key = (name, dataset.content_id)
        pools = self._pools.get(key)
        if pools is None:
            if "test" not in dataset.splits:
                raise InvalidRequest(
                    f"dataset '{name}' has no test split: add its arrays as test/<input> to assign local "
                    "test data"
                )
            try:
                pools = ClassPools.build(dataset.labels("train"), dataset.labels("test"), dataset.num_classes)
            except ValueError as exc:
                raise InvalidRequest(f"dataset '{name}' cannot be partitioned: {exc}") from exc
            self._pools = {key: pools}  # one at a time: pools of a large dataset take memory
        return pools

    def assign(
        self,
        name: str,
        device_ids: Sequence[str],
        spec: PartitionSpec | DisjointSpec,
        parties: Sequence[str] | None = None,
    ) -> dict[str, object]:
        """Give each device its own local train and test data from dataset ``name`` (seeded per device;
        a ``DisjointSpec`` deals the dataset among the sorted ``parties``, by default the devices).

        Every device is checked before anything is written: registered here, and its model taking the
        dataset's inputs. When every model the fleet has takes them, no record is read (a million
        devices would be a million reads); else each device's record is read for its model.
        """
        if not device_ids:
            raise InvalidRequest("the assignment selects no devices")
        started = time.perf_counter()
        dataset = self.datasets.get(name)
        pools = self._class_pools(name)
        if self._every_model_takes(dataset):
            for device_id in device_ids:
                if not self.fleet.known(device_id):
                    self.fleet.get(device_id)  # raises: unknown, or another shard's
        else:
            checked: set[str] = set()
            for device_id in device_ids:
                model = self.fleet.get(device_id).load()
                if model.name not in checked:
                    dataset.check_inputs(model.signature(local.TRAIN_SIGNATURE), model.name)
                    checked.add(model.name)
        devices_dir = self.fleet.devices_dir
        if isinstance(spec, DisjointSpec):
            dealt = assign_disjoint(device_ids, devices_dir.joinpath, dataset, spec, self.data_dir, parties)
            seconds = round(time.perf_counter() - started, 3)
            return {"dataset": name, "devices": len(device_ids), **dealt.describe(), "seconds": seconds}
        places = ((device_id, devices_dir / device_id) for device_id in device_ids)
        try:
            count = assign_many(places, spec, pools, name, dataset.content_id, self.data_dir)
        except ValueError as exc:  # the partition cannot be drawn as asked
            raise InvalidRequest(str(exc)) from exc
        return {
            "dataset": name,
            "devices": count,
            "scheme": spec.kind,
            "seed": spec.seed,
            "train_per_device": spec.train_per_device,
            "test_per_device": spec.test_per_device,
            "seconds": round(time.perf_counter() - started, 3),
        }

    def _every_model_takes(self, dataset: Dataset) -> bool:
        """Whether every model of the fleet takes ``dataset``'s inputs (False too if one cannot be loaded)."""
        try:
            for model_name in self.fleet.models.names():
                model = self.fleet.models.get(model_name)
                dataset.check_inputs(model.signature(local.TRAIN_SIGNATURE), model_name)
        except FleetError:
            return False
        return True

    def assignment(self, device: Device) -> dict[str, object] | None:
        found = self.assignments.read(device.directory, self.data_dir)
        return None if found is None else found.describe()

    # -- jobs over assigned data (``service.fleet.jobs.AssignedData``) -------------------------

    def count(self, device: Device) -> int:
        found = self.assignments.read(device.directory, self.data_dir)
        return 0 if found is None else len(found.train)

    def load(self, device: Device) -> dict[str, np.ndarray]:
        return device_data(device, self.datasets, self.assignments.read).train()

    # -- evaluation --------------------------------------------------------------------------

    def samples_of(
        self, device: Device, dataset: str | None, split: str, limit: int | None
    ) -> tuple[Mapping[str, np.ndarray], str]:
        """Samples to evaluate on and their label array: the device's own (``dataset`` None: its
        assigned ``split``, train or test) or a dataset's split; the first ``limit`` of them."""
        if dataset is not None:
            return self.split_samples(dataset, split, limit)
        data = device_data(device, self.datasets, self.assignments.read)
        if split not in ("train", "test"):
            raise InvalidRequest(f"a device's own data has splits train and test, not '{split}'")
        samples = data.train() if split == "train" else data.test()
        if data.dataset.label is None:
            raise InvalidRequest(f"dataset '{data.dataset.name}' has no label array: accuracy needs one")
        return {k: v[:limit] for k, v in samples.items()}, data.dataset.label

    def split_samples(self, dataset: str, split: str, limit: int | None) -> tuple[dict[str, np.ndarray], str]:
        """The first ``limit`` samples (None: all) of a dataset's split, and its label array."""
        found = self.datasets.get(dataset)
        part = found.split(split)
        if found.label is None:
            raise InvalidRequest(f"dataset '{dataset}' has no label array: accuracy needs one")
        count = part.count if limit is None else min(limit, part.count)
        return part.gather(np.arange(count)), found.label

    def evaluate(
        self,
        device: Device,
        samples: Mapping[str, np.ndarray],
        label: str,
        version: int | None = None,
        viewer: str | None = None,
    ) -> Evaluation:
        """Accuracy of the device's current weights on ``samples`` (or of a version of its model that
        ``viewer`` sees, in an interpreter of its own: the device is untouched)."""
        if version is None:
            return local.evaluate(device, samples, label)
        model = device.load().name
        self.resolve_version(model, version, viewer)
        with self._version_interpreter(model, version) as interpreter:
            signature = device.callable_signature(INFER_SIGNATURE)
            return accuracy(lambda chunk: interpreter.run(INFER_SIGNATURE, chunk), signature, samples, label)

    def adopt(
        self, device: Device, version: int | None, save: bool = False, viewer: str | None = None
    ) -> dict[str, object]:
        model = device.load().name
        number = self.resolve_version(model, version, viewer)
        with self.versions.pinned(model, number):
            self._check_idle(device)
            device.adopt_weights(self.versions.path(model, number), f"version {number} of model '{model}'")
        if save:
            device.save()
        return {"device": device.id, "model": model, "version": number, "saved": save}

    def _check_idle(self, device: Device) -> None:
        job = self.fleet.jobs.active(device)
        if job is not None:
            raise DeviceBusy(f"device '{device.id}' runs job '{job.id}'; cancel it or wait for it to end")
        if device.participating:
            raise DeviceBusy(f"device '{device.id}' trains in a federated round; try again after its part")

    @contextlib.contextmanager
    def _participating(self, device: Device) -> Iterator[None]:
        """Mark the device as a round's for the block: no job starts on it, nor another round's part.
        Set under the device's lock, which a job's start also takes: the two never overlap."""
        with device.lock:
            self._check_idle(device)
            device.participating = True
        try:
            yield
        finally:
            device.participating = False

    # -- model versions (and ``rounds.Participants``) ----------------------------------------

    @contextlib.contextmanager
    def _version_interpreter(self, model: str, version: int) -> Iterator[ModelInterpreter]:
        """A fresh interpreter of ``model`` holding ``version``, restored from a private copy."""
        compiled = self.fleet.models.get(model)
        source = self.versions.path(model, version)
        scratch = self.data_dir / SCRATCH_DIR / f".version-{uuid.uuid4().hex[:12]}.ckpt"
        scratch.parent.mkdir(parents=True, exist_ok=True)
        interpreter = compiled.interpreter()
        try:
            scratch.write_bytes(source.read_bytes())
            run_checkpoint(interpreter, compiled, "restore", scratch, source, self.data_dir)
        finally:
            scratch.unlink(missing_ok=True)
        yield interpreter

    def _write_base(self, model: str, path: Path) -> None:
        compiled = self.fleet.models.get(model)
        with atomic_target(path, True, self.data_dir) as tmp:
            run_checkpoint(compiled.interpreter(), compiled, "save", tmp, path, self.data_dir)

    def resolve_version(self, model: str, number: int | None, viewer: str | None = None) -> int:
        self.fleet.models.get(model)
        return self.versions.resolve(model, number, viewer).number

    def version_weights(self, model: str, version: int) -> Weights:
        return self.versions.weights(model, version)

    def store_version(self, model: str, weights: Weights, meta: dict[str, object]) -> int:
        return self.versions.add(model, weights, **meta).number

    def evaluate_version(self, model: str, version: int, evaluation: EvaluationSpec) -> float:
        samples, label = self.split_samples(evaluation.dataset, evaluation.split, evaluation.limit)
        signature = self.fleet.models.get(model).signature(INFER_SIGNATURE)
        with self._version_interpreter(model, version) as interpreter:
            return accuracy(
                lambda chunk: interpreter.run(INFER_SIGNATURE, chunk), signature, samples, label
            ).accuracy

    def pin(self, model: str, version: int) -> contextlib.AbstractContextManager[object]:
        return self.versions.pinned(model, version)

    def profile(self, device_id: str) -> DeviceProfile | None:
        """From the device's record (read once a process; a participant reads its record anyway)."""
        try:
            return self.fleet.get(device_id).read_record().profile
        except FleetError:  # gone, or a record that cannot be read: its part fails with the reason
            return None

    def sample_counts(self, device_id: str) -> tuple[int, int]:
        return self.sample_counts_in(self.fleet.get(device_id).directory)

    def sample_counts_in(self, directory: Path) -> tuple[int, int]:
        """The train and test samples of the assignment in a device's directory ((0, 0) without one)."""
        found = self.assignments.read(directory, self.data_dir)
        return (0, 0) if found is None else (len(found.train), len(found.test))

    def hyperparameters(self, model: str) -> dict[str, float]:
        compiled = self.fleet.models.get(model)
        if HYPERPARAMETERS not in compiled.signatures:
            raise InvalidRequest(
                f"model '{model}' has no '{HYPERPARAMETERS}' signature: this strategy needs its local "
                "learning rate and momentum (models built by `fleet build-model` have it)"
            )
        outputs = compiled.interpreter().run(HYPERPARAMETERS, {})
        return {name: float(np.asarray(value)) for name, value in outputs.items()}

    def publish(self, run_id: str, name: str, weights: Weights) -> str:
        """Keeps one file a run and kind (``control-<round>`` replaces ``control-<round - 1>``)."""
        published = f"{run_id}-{name}"
        path = client_side.published_path(self.data_dir, published)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_weights(path, weights, durable=False, root=self.data_dir)
        kind = published.rsplit("-", 1)[0]
        for old in path.parent.glob(f"{kind}-*.ckpt"):
            if old != path:
                old.unlink(missing_ok=True)
        return published

    def version_size(self, model: str, version: int) -> int:
        try:
            return self.versions.path(model, version).stat().st_size
        except OSError as exc:
            raise storage_error(f"could not read version {version} of model '{model}'", exc) from exc

    def flush(self) -> None:
        with self._lock:
            files, self._unflushed = self._unflushed, set()
        try:
            make_durable([f for f in files if f.exists()], self.fleet.devices_dir)
        except OSError as exc:
            raise storage_error("could not flush the round's checkpoints to disk", exc) from exc

    def participate(
        self, device_id: str, asked: Participation, stop: Callable[[], bool] = lambda: False
    ) -> Update:
        """One participant's part of a round, on this process's device: adopt, train, send, evaluate."""
        model = asked.model
        device = self.fleet.get(device_id)
        used = device.load().name
        if used != model:
            raise InvalidRequest(f"device '{device_id}' uses model '{used}'; the round trains '{model}'")
        with self._participating(device):
            return self._participate(device, asked, stop)

    def _participate(self, device: Device, asked: Participation, stop: Callable[[], bool]) -> Update:
        data = device_data(device, self.datasets, self.assignments.read)
        started = time.perf_counter()
        source = None if asked.version is None else self.versions.path(asked.model, asked.version)
        lent = self._adopt(device, asked, source) if source is not None else None
        try:
            return self._train(device, asked, stop, data, source, started)
        finally:
            if lent is not None:
                device.give_back(lent)  # raises, keeping it, if unsaved weights cannot be spilled
                self.lending.give(device.load(), lent)

    def _adopt(self, device: Device, asked: Participation, source: Path) -> ModelInterpreter | None:
        """Adopt the round's version; a device without an interpreter whose part ends saved borrows
        one (returned: the interpreter to give back)."""
        compiled = device.load()
        offer = self.lending.take(compiled) if asked.device_weights == "saved" else None
        try:
            taken = device.adopt_weights(source, f"version {asked.version} of model '{asked.model}'", offer)
        except BaseException:
            if offer is not None:
                self.lending.give(compiled, offer)
            raise
        if offer is not None and not taken:
            self.lending.give(compiled, offer)
        return offer if taken else None

    def _train(
        self,
        device: Device,
        asked: Participation,
        stop: Callable[[], bool],
        data: local.DeviceData,
        source: Path | None,
        started: float,
    ) -> Update:
        rng = np.random.default_rng(list(asked.seed))
        task = asked.task
        part = client_side.Prepared()
        if task != ClientTask():
            if asked.version is None:
                raise InvalidRequest(f"signature '{task.signature}' trains from a global version: give one")
            global_weights = self.versions.weights(asked.model, asked.version)
            part = client_side.prepare(task, global_weights, device.directory, self.data_dir)
        trained = local.train(device, data, asked.training, rng, "round", stop, task.signature, part.inputs)
        weights = None
        if asked.device_weights == "saved" and not stop():
            device.save(durable=asked.durable)
            if not asked.durable:
                with self._lock:
                    self._unflushed.update(device.directory / name for name in (CHECKPOINT, RECORD, HISTORY))
            if source is not None:  # the checkpoint holds the update: no second save
                weights = read_weights(device.checkpoint_path, root=self.data_dir)
                upload.count_upload(device, source)
        elif source is not None and not stop():
            outgoing = device.write_weights()
            try:
                weights = read_weights(outgoing, root=self.data_dir)
                upload.count_upload(device, source)
            finally:
                outgoing.unlink(missing_ok=True)
        control = None
        if part.server_control is not None and weights is not None and not stop():
            rate = self.hyperparameters(asked.model)["learning_rate"]
            control = part.finish_control(weights, trained.steps, rate, asked.durable)
        payload = None
        if asked.privatize is not None and weights is not None and asked.version is not None:
            global_weights = self.versions.weights(asked.model, asked.version)
            payload = upload.privatized(device, asked, weights, global_weights, asked.privatize)
            weights = None  # nothing but the privatized vector leaves the device
        seconds = time.perf_counter() - started
        local_accuracy = None
        if asked.local_accuracy and not stop():
            label = data.dataset.label
            if label is None:
                raise InvalidRequest(f"dataset '{data.dataset.name}' has no label array: accuracy needs one")
            local_accuracy = local.evaluate(device, data.test(), label).accuracy
        if asked.device_weights == "checkpoint":
            device.restart()
        return Update(
            device.id,
            trained.samples,
            trained.steps,
            trained.mean_loss,
            local_accuracy,
            weights,
            seconds,
            control,
            payload,
        )
