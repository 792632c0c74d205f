"""The arrays of a dataset being added: split by name, checked (numeric, finite, one length per split,
labels in range), and hashed into the content id that assignments record."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from service.errors import (
    InvalidTensor,
)
from service.storage import check_id

DEFAULT_SPLIT = "train"


MAX_CLASSES = 10_000


NUMERIC_KINDS = frozenset("biuf")
"""Bool, signed and unsigned integers, floats: what a tensor of samples may hold."""


FINITE_CHUNK = 1 << 16
"""Samples scanned at once for NaN and infinity when a dataset is added (bounds the scan's memory)."""


def fashion_mnist_splits(directory: Path | None = None) -> dict[str, dict[str, np.ndarray]]:
    from service.model.dataset import load_fashion_mnist, one_hot

    data = load_fashion_mnist(directory)
    return {
        "train": {"x": data.train_images, "y": one_hot(data.train_labels)},
        "test": {"x": data.test_images, "y": one_hot(data.test_labels)},
    }


def split_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """An upload's arrays by split: ``<split>/<input>``, or ``<input>`` alone for the train split."""
    splits: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        split, _, name = key.rpartition("/")
        split = split or DEFAULT_SPLIT
        check_id("split", split)
        check_id("array", name)
        if name in splits.get(split, {}):
            raise InvalidTensor(f"array '{name}' of split '{split}' is given twice")
        splits.setdefault(split, {})[name] = value
    return splits


def labels_of(values: np.ndarray, where: str) -> tuple[np.ndarray, int]:
    """Each sample's class from a label array (integer classes, or rows whose argmax is the class)."""
    if values.ndim == 1 and values.dtype.kind in "iub":
        if len(values) and int(values.min()) < 0:
            raise InvalidTensor(f"{where}: class labels must not be negative (found {int(values.min())})")
        classes = int(values.max()) + 1 if len(values) else 0
        labels = values.astype(np.int64)
    elif values.ndim == 2 and values.shape[1] >= 1:
        classes = values.shape[1]
        labels = np.argmax(values, axis=1)
    else:
        raise InvalidTensor(
            f"{where}: a label array must hold integer classes (one per sample) or one row per sample "
            f"(one-hot or scores); it is {values.dtype} of shape {list(values.shape)}"
        )
    if classes > MAX_CLASSES:
        raise InvalidTensor(f"{where}: {classes} classes; at most {MAX_CLASSES} are supported")
    return labels.astype(np.uint16 if classes <= 65_536 else np.int64), classes


def check_splits(splits: Mapping[str, Mapping[str, np.ndarray]], label: str | None) -> int | None:
    """Refuse an upload the fleet could not train on; returns the number of classes (None unlabelled)."""
    if not splits:
        raise InvalidTensor("the dataset holds no arrays")
    reference_name, reference = next(iter(splits.items()))
    num_classes: int | None = None
    for split, arrays in splits.items():
        if set(arrays) != set(reference):
            raise InvalidTensor(
                f"split '{split}' has arrays {sorted(arrays)}, split '{reference_name}' has "
                f"{sorted(reference)}: "
                "every split must have the same arrays"
            )
        sizes = {}
        for name, value in arrays.items():
            where = f"array '{split}/{name}'"
            if value.dtype.kind not in NUMERIC_KINDS:
                raise InvalidTensor(f"{where} holds {value.dtype}; only numbers can be samples")
            if value.ndim == 0:
                raise InvalidTensor(f"{where} is a scalar; arrays hold samples along their first dimension")
            if value.dtype.kind == "f" and not _finite(value):
                raise InvalidTensor(
                    f"{where} holds NaN or infinite values: a training step on them would make the "
                    "weights NaN"
                )
            ref = reference[name]
            if value.dtype != ref.dtype or value.shape[1:] != ref.shape[1:]:
                raise InvalidTensor(
                    f"{where} is {value.dtype} of per-sample shape {list(value.shape[1:])}, but in split "
                    f"'{reference_name}' it is {ref.dtype} of {list(ref.shape[1:])}"
                )
            sizes[name] = value.shape[0]
        if len(set(sizes.values())) != 1:
            raise InvalidTensor(f"split '{split}': the arrays hold different numbers of samples: {sizes}")
        if not next(iter(sizes.values())):
            raise InvalidTensor(f"split '{split}' holds no samples")
        if label is not None:
            if label not in arrays:
                raise InvalidTensor(
                    f"label array '{label}' is not in split '{split}' (it has {sorted(arrays)})"
                )
            _, classes = labels_of(arrays[label], f"array '{split}/{label}'")
            num_classes = max(num_classes or 0, classes)
    return num_classes


def check_group(splits: Mapping[str, Mapping[str, np.ndarray]], group: str, label: str | None) -> None:
    """Refuse a group array (each sample's writer or user) that is not one integer per sample."""
    if group == label:
        raise InvalidTensor(f"array '{group}' cannot be both the label and the group")
    for split, arrays in splits.items():
        if group not in arrays:
            raise InvalidTensor(f"group array '{group}' is not in split '{split}' (it has {sorted(arrays)})")
        value = arrays[group]
        if value.ndim != 1 or value.dtype.kind not in "iu":
            raise InvalidTensor(
                f"group array '{split}/{group}' must hold one integer per sample (a writer's or user's "
                f"number); it is {value.dtype} of shape {list(value.shape)}"
            )
        if len(arrays) < 2:
            raise InvalidTensor(f"split '{split}' holds only its group array '{group}': no samples")


def _finite(value: np.ndarray) -> bool:
    return all(
        bool(np.isfinite(value[start : start + FINITE_CHUNK]).all())
        for start in range(0, len(value), FINITE_CHUNK)
    )


def content_id(splits: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for split in sorted(splits):
        for name in sorted(splits[split]):
            value = np.ascontiguousarray(splits[split][name])
            digest.update(f"{split}/{name}:{value.dtype.str}:{value.shape}".encode())
            digest.update(value.data)
    return digest.hexdigest()
