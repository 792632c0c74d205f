"""``ClassPools``: a dataset's per-class index pools and label-sorted train order, built once per dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


def class_pools(labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """The indices of each class, in dataset order."""
    return [np.flatnonzero(labels == c) for c in range(num_classes)]


@dataclass(frozen=True, eq=False)
class ClassPools:
    """A dataset's labels arranged for drawing: built once (``build``), shared by every ``device_split``.

    ``train_order`` is the train set's indices sorted by label (stably, so a class keeps dataset order):
    class ``c``'s pool is ``train_order[train_bounds[c]:train_bounds[c + 1]]``, and ``shards`` cuts this
    order. The same for the test set. ``order`` and ``bounds`` put the two end to end (``2 * num_classes``
    ranges: the train classes, then the test classes), so that a device's train and test draws are one
    draw. The arrays are read-only.
    """

    num_classes: int
    train_order: np.ndarray
    train_bounds: np.ndarray
    test_order: np.ndarray
    test_bounds: np.ndarray
    order: np.ndarray
    bounds: np.ndarray

    @classmethod
    def build(
        cls, train_labels: np.ndarray, test_labels: np.ndarray, num_classes: int | None = None
    ) -> ClassPools:
        """ValueError for labels that are not 1-D integers in ``[0, num_classes)``."""
        for name, labels in (("train", train_labels), ("test", test_labels)):
            if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) == 0:
                raise ValueError(f"the {name} labels must be a non-empty 1-D array of integers")
        low = min(int(train_labels.min()), int(test_labels.min()))
        high = max(int(train_labels.max()), int(test_labels.max()))
        num_classes = num_classes or high + 1
        if low < 0 or high >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}); found {low}..{high}")
        train_order, train_bounds = _sorted_by_label(train_labels, num_classes)
        test_order, test_bounds = _sorted_by_label(test_labels, num_classes)
        order = np.concatenate((train_order, test_order))
        bounds = np.concatenate((train_bounds, test_bounds[1:] + len(train_order)))
        arrays = (train_order, train_bounds, test_order, test_bounds, order, bounds)
        for array in arrays:
            array.setflags(write=False)
        return cls(num_classes, *arrays)

    @property
    def train_size(self) -> int:
        return len(self.train_order)

    @property
    def test_size(self) -> int:
        return len(self.test_order)

    def pools(self, split: Literal["train", "test"]) -> list[np.ndarray]:
        """Each class's indices into ``split``, in dataset order (what ``class_pools`` gives)."""
        order, bounds = (
            (self.train_order, self.train_bounds) if split == "train" else (self.test_order, self.test_bounds)
        )
        return [order[bounds[c] : bounds[c + 1]] for c in range(self.num_classes)]


def _sorted_by_label(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(labels, minlength=num_classes))))
    return order, bounds
