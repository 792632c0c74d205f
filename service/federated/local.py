"""What one device does with server-side data: gather its assigned samples, train on them, be evaluated.

These run on the device's own interpreter, through its lock (``Device.run``), like any HTTP call on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.data import noise
from service.data.arrays import labels_of
from service.data.assignment import Assignment, read_assignment
from service.data.dataset import Dataset
from service.data.datasets import DatasetStore
from service.errors import InvalidRequest, InvalidTensor, NoAssignment
from service.fleet.device import Device
from service.fleet.record import HistorySource, scalar_loss
from service.profiles import DeviceProfile
from service.runtime import SignatureSpec

EVAL_CHUNK = 1000
"""Samples per ``infer`` call when evaluating."""
AssignmentReader = Callable[[Path, Path | None], Assignment | None]
TRAIN_SIGNATURE = "train"
INFER_SIGNATURE = "infer"
CLASS_OUTPUTS = ("logits", "output")
"""Which ``infer`` output holds the class scores, in order of preference (else its only output)."""


@dataclass(frozen=True)
class DeviceData:
    """A device's assignment and the dataset it views."""

    assignment: Assignment
    dataset: Dataset

    def train(self) -> dict[str, np.ndarray]:
        return noise.gather(self, "train")  # with its feature noise, if its assignment has some

    def test(self) -> dict[str, np.ndarray]:
        return noise.gather(self, "test")


def device_data(
    device: Device, datasets: DatasetStore, read: AssignmentReader = read_assignment
) -> DeviceData:
    """The device's assigned data; NoAssignment without one, or when its dataset changed since."""
    assignment = read(device.directory, device.data_dir)
    if assignment is None:
        raise NoAssignment(
            f"device '{device.id}' has no data assigned; POST /v1/datasets/{{name}}/assign gives it some"
        )
    dataset = datasets.get(assignment.dataset)
    if dataset.content_id != assignment.content_id:
        raise NoAssignment(
            f"device '{device.id}' was assigned data of dataset '{assignment.dataset}' as it was before it "
            "was deleted and added again; assign the device again"
        )
    return DeviceData(assignment, dataset)


def class_output(signature: SignatureSpec) -> str:
    names = [spec.name for spec in signature.outputs]
    for name in CLASS_OUTPUTS:
        if name in names:
            return name
    if len(names) == 1:
        return names[0]
    raise InvalidRequest(
        f"signature '{signature.name}' has outputs {names}; accuracy needs one named "
        f"{' or '.join(CLASS_OUTPUTS)}, or a single output"
    )


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    correct: int
    count: int

    def describe(self) -> dict[str, object]:
        return {"accuracy": self.accuracy, "correct": self.correct, "count": self.count}


InferRunner = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]
"""Runs ``infer`` on checked inputs: a device's interpreter, or a scratch one holding a model version."""


def accuracy(
    infer: InferRunner, signature: SignatureSpec, samples: Mapping[str, np.ndarray], label: str
) -> Evaluation:
    """Accuracy on ``samples``: argmax of ``infer``'s class output against the class in
    ``samples[label]`` (integer classes or one-hot rows), ``EVAL_CHUNK`` samples per call."""
    if label not in samples:
        raise InvalidTensor(f"the samples have no label array '{label}' (they have {sorted(samples)})")
    output = class_output(signature)
    labels, _ = labels_of(np.asarray(samples[label]), f"label array '{label}'")
    names = [spec.name for spec in signature.inputs]
    missing = [name for name in names if name not in samples]
    if missing:
        raise InvalidTensor(f"signature '{signature.name}' takes {names}; the samples lack {missing}")
    count = len(labels)
    correct = 0
    for start in range(0, count, EVAL_CHUNK):
        chunk = signature.check({name: samples[name][start : start + EVAL_CHUNK] for name in names})
        scores = infer(chunk)[output]
        correct += int((np.argmax(scores, axis=-1) == labels[start : start + EVAL_CHUNK]).sum())
    return Evaluation(correct / count if count else 0.0, correct, count)


def evaluate(device: Device, samples: Mapping[str, np.ndarray], label: str) -> Evaluation:
    """Accuracy of the device's current weights on ``samples``."""
    signature = device.callable_signature(INFER_SIGNATURE)
    return accuracy(lambda chunk: device.run(INFER_SIGNATURE, chunk), signature, samples, label)


@dataclass(frozen=True)
class LocalTraining:
    epochs: int = 1
    batch_size: int = 32
    shuffle: bool = True

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise InvalidRequest(
                f"epochs and batch_size must be at least 1 (got {self.epochs}, {self.batch_size})"
            )

    def steps(self, samples: int) -> int:
        return self.epochs * math.ceil(samples / self.batch_size)


def participation_seconds(
    profile: DeviceProfile, training: LocalTraining, samples: int, test_samples: int, weights_bytes: int
) -> float:
    """Simulated seconds of a profiled participant's part of a round: download the global weights
    (``weights_bytes``: the version file's size, 0 without aggregation), train ``samples`` for every
    epoch, upload an update charged at the same size (the same model's weights), predict
    ``test_samples`` (0 unless local accuracy is measured).

    The round's coordinator plans with this; the device's clock counts the same parts as they happen
    (``Device.adopt_weights`` at the version file's size, ``Device.run`` per batch, the upload in
    ``Federation._participate`` at the version file's size too): the two agree up to float rounding.
    """
    seconds = profile.train_seconds(samples * training.epochs)
    if weights_bytes:
        seconds += profile.download_seconds(weights_bytes) + profile.upload_seconds(weights_bytes)
    if test_samples:
        seconds += profile.infer_seconds(test_samples)
    return seconds


@dataclass(frozen=True)
class Trained:
    steps: int
    samples: int
    mean_loss: float | None
    """Mean loss of the last epoch's steps."""


def train(
    device: Device,
    data: DeviceData,
    training: LocalTraining,
    rng: np.random.Generator,
    source: HistorySource = "round",
    stop: Callable[[], bool] | None = None,
    variant: str = TRAIN_SIGNATURE,
    extra: Mapping[str, np.ndarray] | None = None,
) -> Trained:
    """Train the device over its assigned train data for ``training.epochs`` epochs, one ``train``
    call per batch, each batch gathered from the mapped split as it comes (no copy of all);
    ``stop`` is asked after every step (a cancelled round). A strategy's ``variant`` of ``train``
    (``train_prox``) takes the same data and ``extra`` inputs, the same at every step."""
    signature = device.callable_signature(TRAIN_SIGNATURE)
    if variant != TRAIN_SIGNATURE:
        device.callable_signature(variant).check_names(
            {**{s.name: 0 for s in signature.inputs}, **(extra or {})}
        )
    split = data.dataset.split(data.assignment.train_split)
    split.check_inputs(signature, data.dataset.name, device.load().name)
    rows = data.assignment.train
    count = len(rows)
    steps, losses = 0, list[float]()
    for _ in range(training.epochs):
        order = rng.permutation(count) if training.shuffle else np.arange(count)
        losses = []
        for start in range(0, count, training.batch_size):
            batch = noise.batch(split, signature, rows[order[start : start + training.batch_size]], data, rng)
            inputs = {**batch, **extra} if extra else batch
            outputs = device.run(variant, inputs, source=source)
            loss = scalar_loss(outputs)
            if loss is not None:
                losses.append(loss)
            steps += 1
            if stop is not None and stop():
                return Trained(steps, count, float(np.mean(losses)) if losses else None)
    return Trained(steps, count, float(np.mean(losses)) if losses else None)
