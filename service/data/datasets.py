"""Datasets kept by the service, stored once and shared by every device that trains on them.

A dataset is a directory ``data_dir/datasets/<name>/``::

    dataset.json            its description (splits, arrays, label, classes, content id)
    <split>/<array>.npy     one array per input of a training signature, first dimension = samples
    <split>.labels.npy      the class of each sample (from the label array), when it has one

Arrays are read memory-mapped: the pages of a dataset are shared by every device that uses it, and by
every process of a sharded fleet on one machine. A device's data is an index view into a split
(``service.data.assignment``), gathered when it trains or is evaluated.

The built-in ``fashion-mnist`` (the loader of ``service.model.dataset``: Debian's files, else Keras')
is written here the first time it is used, with the arrays the embedded model's ``train`` takes: ``x``
(float32 images in [0, 1]) and ``y`` (float32 one-hot labels).

Every float in a dataset is finite (an upload holding NaN or infinity is refused): a batch gathered
from it needs no scan before a training step (``Split.batch``).

Datasets are immutable: one is added whole (into a temporary directory, then renamed) and deleted
whole. Each has a content id (a hash of its arrays) that assignments record, so a dataset deleted and
added again under the same name is never mistaken for the one a device was assigned.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.errors import (
    CorruptState,
    DatasetExists,
    DatasetNotFound,
    InvalidRequest,
    InvalidTensor,
    LimitExceeded,
)
from service.runtime import SignatureSpec
from service.runtime.specs import CheckedInputs
from service.storage import check_id, read_json, remove_tree, shown, storage_error, utc_now, write_json

log = logging.getLogger(__name__)

DATASETS_DIR = "datasets"
DESCRIPTION = "dataset.json"
BUILTIN = "fashion-mnist"
DEFAULT_SPLIT = "train"
MAX_CLASSES = 10_000
NUMERIC_KINDS = frozenset("biuf")
"""Bool, signed and unsigned integers, floats: what a tensor of samples may hold."""
FINITE_CHUNK = 1 << 16
"""Samples scanned at once for NaN and infinity when a dataset is added (bounds the scan's memory)."""


@dataclass(frozen=True)
class Split:
    """One split of a dataset: its arrays (memory-mapped) and, with a label, each sample's class."""

    name: str
    arrays: Mapping[str, np.ndarray]
    labels: np.ndarray | None

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


BuiltinLoader = Callable[[], dict[str, dict[str, np.ndarray]]]
"""Returns a built-in dataset's splits: split name -> array name -> array."""


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


class DatasetStore:
    """The datasets under ``data_dir/datasets/``: the built-in one, and those added by upload.

    Opened datasets stay mapped while their directory holds the same content; a dataset deleted or
    replaced by another process (a sharded fleet shares the directory) is noticed at the next ``get``.
    """

    def __init__(
        self,
        data_dir: Path,
        max_bytes: int,
        builtins: Mapping[str, BuiltinLoader] | None = None,
        fashion_mnist_dir: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.directory = data_dir / DATASETS_DIR
        self.max_bytes = max_bytes
        self.builtins: Mapping[str, BuiltinLoader] = (
            builtins if builtins is not None else {BUILTIN: lambda: fashion_mnist_splits(fashion_mnist_dir)}
        )
        self._open: dict[str, tuple[int, Dataset]] = {}
        """Opened datasets by name, with their description file's inode number."""
        self._lock = threading.Lock()
        """Serialises adding, deleting and writing a built-in one; reading needs no lock."""

    def _path(self, name: str) -> Path:
        return self.directory / check_id("dataset", name)

    def names(self) -> list[str]:
        try:
            stored = {p.name for p in self.directory.iterdir() if (p / DESCRIPTION).is_file()}
        except FileNotFoundError:
            stored = set()
        except OSError as exc:
            raise storage_error(f"could not list {DATASETS_DIR}/", exc) from exc
        return sorted(stored | set(self.builtins))

    def describe_all(self) -> list[dict[str, object]]:
        """Every dataset's description; a built-in one not written yet is described, not written."""
        described = []
        for name in self.names():
            if name in self.builtins and not (self._path(name) / DESCRIPTION).exists():
                described.append(
                    {"name": name, "builtin": True, "source": f"built-in ({name})", "written": False}
                )
            else:
                described.append(self.get(name).describe())
        return described

    def get(self, name: str) -> Dataset:
        """The dataset, mapped; a built-in one is written on first use (blocking, seconds)."""
        path = self._path(name)
        try:
            inode = (path / DESCRIPTION).stat().st_ino
        except FileNotFoundError:
            if name not in self.builtins:
                self._open.pop(name, None)
                raise DatasetNotFound(
                    f"no dataset '{name}'; there are {', '.join(self.names()) or 'none'}"
                ) from None
            return self._write_builtin(name)
        except OSError as exc:
            raise storage_error(f"could not read {shown(path, self.data_dir)}", exc) from exc
        opened = self._open.get(name)
        if opened is not None and opened[0] == inode:
            return opened[1]
        dataset = self._read(name, path)
        self._open[name] = (inode, dataset)
        return dataset

    def _read(self, name: str, path: Path) -> Dataset:
        where = shown(path / DESCRIPTION, self.data_dir)
        value = read_json(path / DESCRIPTION, root=self.data_dir)
        try:
            splits = {}
            for split, arrays in value["splits"].items():
                mapped = {key: _mapped(path / split / f"{key}.npy") for key in arrays}
                labels_path = path / f"{split}.labels.npy"
                labels = np.load(labels_path, allow_pickle=False) if labels_path.exists() else None
                splits[split] = Split(split, mapped, labels)
            return Dataset(
                name=name,
                content_id=str(value["content_id"]),
                label=value.get("label"),
                num_classes=value.get("num_classes"),
                splits=splits,
                created_at=str(value["created_at"]),
                builtin=bool(value.get("builtin", False)),
                bytes=int(value.get("bytes", 0)),
                source=str(value.get("source", "upload")),
            )
        except (KeyError, TypeError, ValueError, AttributeError, OSError) as exc:
            raise CorruptState(f"dataset '{name}' cannot be read ({where}): {exc}; delete it") from exc

    def stored_bytes(self) -> int:
        """Bytes of the added (not built-in) datasets."""
        total = 0
        for name in self.names():
            if name in self.builtins:
                continue
            value = read_json(self._path(name) / DESCRIPTION, {}, root=self.data_dir)
            total += int(value.get("bytes", 0)) if isinstance(value, dict) else 0
        return total

    def add(self, name: str, arrays: Mapping[str, np.ndarray], label: str | None = None) -> Dataset:
        """Store an upload (arrays named ``<split>/<input>``); DatasetExists if the name is taken."""
        path = self._path(name)
        if name in self.builtins:
            raise DatasetExists(f"'{name}' is a built-in dataset's name")
        splits = split_arrays(arrays)
        size = sum(int(v.nbytes) for s in splits.values() for v in s.values())
        with self._lock:
            if path.exists():
                raise DatasetExists(f"dataset '{name}' exists; delete it first to replace it")
            stored = self.stored_bytes()
            if stored + size > self.max_bytes:
                raise LimitExceeded(
                    f"dataset '{name}' takes {size:,} bytes; with the {stored:,} stored, that passes "
                    f"{self.max_bytes:,} (FLEET_MAX_DATASET_BYTES)"
                )
            return self._write(name, splits, label, builtin=False, source="upload")

    def _write_builtin(self, name: str) -> Dataset:
        with self._lock:
            path = self._path(name)
            if not (path / DESCRIPTION).exists():  # DatasetUnavailable when its loader finds no files
                with contextlib.suppress(DatasetExists):  # another process sharing the directory wrote it
                    self._write(name, self.builtins[name](), "y", builtin=True, source=f"built-in ({name})")
        return self.get(name)

    def _write(
        self,
        name: str,
        splits: Mapping[str, Mapping[str, np.ndarray]],
        label: str | None,
        *,
        builtin: bool,
        source: str,
    ) -> Dataset:
        num_classes = check_splits(splits, label)
        self.directory.mkdir(parents=True, exist_ok=True)
        staging = self.directory / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir()
            description: dict[str, object] = {
                "name": name,
                "content_id": content_id(splits),
                "label": label,
                "num_classes": num_classes,
                "builtin": builtin,
                "source": source,
                "created_at": utc_now(),
                "bytes": sum(int(v.nbytes) for s in splits.values() for v in s.values()),
                "splits": {split: sorted(arrays) for split, arrays in splits.items()},
            }
            for split, arrays in splits.items():
                (staging / split).mkdir()
                for key, value in arrays.items():
                    np.save(staging / split / f"{key}.npy", np.ascontiguousarray(value), allow_pickle=False)
                if label is not None:
                    labels, _ = labels_of(arrays[label], f"array '{split}/{label}'")
                    np.save(staging / f"{split}.labels.npy", labels, allow_pickle=False)
            write_json(staging / DESCRIPTION, description, durable=True, root=self.data_dir)
            os.rename(staging, self._path(name))
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, FileExistsError | IsADirectoryError) or self._path(name).exists():
                raise DatasetExists(f"dataset '{name}' exists; delete it first to replace it") from exc
            raise storage_error(f"could not write dataset '{name}'", exc) from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self.get(name)

    def delete(self, name: str) -> None:
        """Remove an added dataset (a built-in one is only forgotten: it is written again when used).

        Devices assigned to it keep their assignments; they then fail with a message naming it.
        """
        path = self._path(name)
        with self._lock:
            if not (path / DESCRIPTION).exists():
                if name in self.builtins:
                    return
                raise DatasetNotFound(f"no dataset '{name}'")
            trash = self.directory / f".{name}.deleted-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(path, trash)
            except OSError as exc:
                raise storage_error(f"could not delete dataset '{name}'", exc) from exc
            self._open.pop(name, None)
        remove_tree(trash, self.data_dir)


def _mapped(path: Path) -> np.ndarray:
    """The array of a ``.npy`` file, mapped read-only, as a plain ndarray over the mapping: indexing a
    ``np.memmap`` makes another memmap each time, which costs a training step's batch more than
    gathering its rows does."""
    return np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)
