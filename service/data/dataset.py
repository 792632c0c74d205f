"""One stored dataset in memory: its splits, read memory-mapped, and the batches gathered from them.

See ``service.data.datasets`` for how datasets are stored."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from service.errors import (
    InvalidPartition,
    InvalidRequest,
    InvalidTensor,
)
from service.runtime import SignatureSpec
from service.runtime.specs import CheckedInputs


@dataclass(frozen=True)
class Split:
    """One split of a dataset: its arrays (memory-mapped) and, with a label, each sample's class."""

    name: str
    arrays: Mapping[str, np.ndarray]
    labels: np.ndarray | None
    groups: np.ndarray | None = None
    """Each sample's group (its writer, its user) when the dataset names one: not a model input."""

    @property
    def count(self) -> int:
        return len(next(iter(self.arrays.values())))

    def gather(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The samples at ``indices``, copied out of the mapped files (only their pages are read)."""
        return {name: np.ascontiguousarray(values[indices]) for name, values in self.arrays.items()}

    def check_inputs(
        self, signature: SignatureSpec, dataset: str, model: str, *, subset: bool = False
    ) -> None:
        """Refuse (InvalidTensor) unless every input of ``signature`` is an array here with its dtype
        and per-sample shape; with ``subset`` the split may hold more (a label ``infer`` does not take).
        ``dataset`` and ``model`` are names, for messages."""
        names = {spec.name for spec in signature.inputs}
        missing = sorted(names - set(self.arrays))
        extra = sorted(set(self.arrays) - names)
        if missing or (extra and not subset):
            raise InvalidTensor(
                f"dataset '{dataset}' does not match signature '{signature.name}' of model '{model}': "
                f"it takes {sorted(names)}, the dataset has {sorted(self.arrays)}"
            )
        for spec in signature.inputs:
            array = self.arrays[spec.name]
            if array.dtype != spec.dtype or not spec.accepts_shape((1, *array.shape[1:])):
                raise InvalidTensor(
                    f"dataset '{dataset}': array '{spec.name}' holds {array.dtype} samples of shape "
                    f"{list(array.shape[1:])}; signature '{signature.name}' of model '{model}' takes "
                    f"{spec.describe()}"
                )

    def batch(self, signature: SignatureSpec, indices: np.ndarray) -> CheckedInputs:
        """The samples at ``indices`` as inputs of ``signature`` that need no second check: the
        dataset's floats were found finite when it was stored, and ``check_inputs`` (which the caller
        runs first, once) matches dtypes and shapes."""
        return CheckedInputs(signature, {s.name: self.arrays[s.name][indices] for s in signature.inputs})


@dataclass(frozen=True)
class Dataset:
    name: str
    content_id: str
    label: str | None
    """The array that holds each sample's class (integer class or one-hot/score rows); None: unlabelled."""
    num_classes: int | None
    splits: Mapping[str, Split]
    created_at: str
    builtin: bool = False
    bytes: int = 0
    source: str = field(default="upload")
    group: str | None = None
    """The array naming each sample's group (writer or user), kept apart from the samples; None: none."""

    def split(self, name: str) -> Split:
        found = self.splits.get(name)
        if found is None:
            raise InvalidRequest(
                f"dataset '{self.name}' has no split '{name}'; it has {', '.join(sorted(self.splits))}"
            )
        return found

    def labels(self, split: str) -> np.ndarray:
        labels = self.split(split).labels
        if labels is None:
            raise InvalidRequest(
                f"dataset '{self.name}' has no label array: give `label` when adding it to use class-based "
                "partitions and accuracy"
            )
        return labels

    def groups(self, split: str, asked: str | None = None) -> np.ndarray:
        """Each sample's group in ``split``; InvalidPartition naming the array (``asked``, else the
        dataset's own) when the dataset has no such group array."""
        groups = self.split(split).groups
        if groups is None or (asked is not None and asked != self.group):
            name = asked or "writer"
            raise InvalidPartition(
                f"dataset '{self.name}' has no group array '{name}' naming each example's writer or user "
                f"(it has {repr(self.group) if self.group else 'none'}): a natural split needs one; add the "
                f"dataset with ?group={name}"
            )
        return groups

    def check_inputs(self, signature: SignatureSpec, model: str, *, subset: bool = False) -> None:
        """``Split.check_inputs`` (every split has the same arrays)."""
        next(iter(self.splits.values())).check_inputs(signature, self.name, model, subset=subset)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "builtin": self.builtin,
            "source": self.source,
            "content_id": self.content_id,
            "label": self.label,
            "group": self.group,
            "num_classes": self.num_classes,
            "bytes": self.bytes,
            "created_at": self.created_at,
            "splits": {
                name: {
                    "count": split.count,
                    "arrays": {
                        key: {"dtype": str(value.dtype), "shape": [None, *value.shape[1:]]}
                        for key, value in split.arrays.items()
                    },
                }
                for name, split in self.splits.items()
            },
        }
