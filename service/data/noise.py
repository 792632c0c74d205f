"""Feature noise (NIID-Bench's "noise-based feature imbalance"): a device's inputs with Gaussian noise
of its own scale, ``sigma_i = noise * i / (N - 1)`` for device ``i`` of ``N`` (device 0 clean).

The noise is not in the assignment (the split is a homogeneous one); it is added where a device's data
are gathered, drawn afresh each time and never clipped, as NIID-Bench's transform does on every load:

    a training batch    from a generator seeded by the assignment's seed, the device's index and a
                        number drawn from the participant's own stream (``batch``): every batch of
                        every epoch has new noise, and two runs with the same seeds the same noise
    local test data     from the assignment's seed and the device's index (``gather``): the same noisy
                        copy at every evaluation, so local accuracies compare across rounds
    a job's train data  likewise, once per load (a job keeps the samples it loaded between slices)

Noise goes on every float array but the label array; integer inputs (token IDs) are left as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from service.data.assignment import Assignment
from service.data.dataset import Dataset, Split
from service.runtime import SignatureSpec
from service.runtime.specs import CheckedInputs

FEATURE_NOISE = "feature_noise"
"""The scheme whose assignments carry a ``sigma``."""
TRAIN_STREAM, TEST_STREAM, LOAD_STREAM = 1, 2, 3


class Assigned(Protocol):
    """A device's assignment and the dataset it views (``service.federated.local.DeviceData``)."""

    @property
    def assignment(self) -> Assignment: ...

    @property
    def dataset(self) -> Dataset: ...


def sigma(noise: float, device: int, parties: int) -> float:
    """Device ``device``'s noise scale among ``parties``: 0 for device 0, ``noise`` for the last."""
    return noise * device / (parties - 1) if parties > 1 else 0.0


@dataclass(frozen=True)
class FeatureNoise:
    sigma: float
    seed: int
    device: int

    @classmethod
    def of(cls, assignment: Assignment) -> FeatureNoise | None:
        """The assignment's noise; None for another scheme, or a device whose sigma is 0."""
        if assignment.scheme != FEATURE_NOISE:
            return None
        scale, device = assignment.parameters.get("sigma"), assignment.parameters.get("device")
        if not isinstance(scale, int | float) or not isinstance(device, int) or not scale > 0:
            return None
        return cls(float(scale), assignment.seed, device)

    def generator(self, stream: int, key: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.device, stream, key])

    def add(
        self, arrays: Mapping[str, np.ndarray], label: str | None, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """``arrays`` with noise on each float array but ``label`` (new arrays; the inputs untouched)."""
        noisy = {}
        for name, values in arrays.items():
            if name == label or values.dtype.kind != "f":
                noisy[name] = values
                continue
            drawn = values.dtype if values.dtype in (np.float32, np.float64) else np.dtype(np.float32)
            noise = rng.standard_normal(values.shape, dtype=drawn) * drawn.type(self.sigma)
            noisy[name] = (values + noise).astype(values.dtype, copy=False)
        return noisy


def gather(data: Assigned, which: Literal["train", "test"]) -> dict[str, np.ndarray]:
    """The device's assigned train or test samples, with its noise when it has some."""
    assignment = data.assignment
    split = data.dataset.split(assignment.train_split if which == "train" else assignment.test_split)
    samples = split.gather(assignment.train if which == "train" else assignment.test)
    noise = FeatureNoise.of(assignment)
    if noise is None:
        return samples
    stream = LOAD_STREAM if which == "train" else TEST_STREAM
    return noise.add(samples, data.dataset.label, noise.generator(stream))


def batch(
    split: Split, signature: SignatureSpec, indices: np.ndarray, data: Assigned, rng: np.random.Generator
) -> CheckedInputs:
    """``split.batch``, with the device's noise when it has some: drawn for this batch from a generator
    keyed by a number from ``rng`` (the participant's stream; nothing is drawn from it otherwise)."""
    gathered = split.batch(signature, indices)
    noise = FeatureNoise.of(data.assignment)
    if noise is None:
        return gathered
    generator = noise.generator(TRAIN_STREAM, int(rng.integers(2**63)))
    return CheckedInputs(signature, noise.add(gathered, data.dataset.label, generator))
