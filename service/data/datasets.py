"""Datasets kept by the service, stored once and shared by every device that trains on them.

A dataset is a directory ``data_dir/datasets/<name>/``::

    dataset.json            its description (splits, arrays, label, classes, content id)
    <split>/<array>.npy     one array per input of a training signature, first dimension = samples
    <split>.labels.npy      the class of each sample (from the label array), when it has one
    <split>.groups.npy      each sample's group (its writer or user), when the upload names one (not
                            a model input: the group array is kept here, not among the split's arrays)

Arrays are read memory-mapped: the pages of a dataset are shared by every device that uses it, and by
every process of a sharded fleet on one machine. A device's data is an index view into a split
(``service.data.assignment``), gathered when it trains or is evaluated (``service.data.dataset``).

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
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from service.data.arrays import (
    check_group,
    check_splits,
    content_id,
    fashion_mnist_splits,
    labels_of,
    split_arrays,
)
from service.data.dataset import Dataset, Split
from service.errors import (
    CorruptState,
    DatasetExists,
    DatasetNotFound,
    LimitExceeded,
)
from service.storage import check_id, read_json, remove_tree, shown, storage_error, utc_now, write_json

log = logging.getLogger(__name__)

DATASETS_DIR = "datasets"


DESCRIPTION = "dataset.json"


BUILTIN = "fashion-mnist"


BuiltinLoader = Callable[[], dict[str, dict[str, np.ndarray]]]
"""Returns a built-in dataset's splits: split name -> array name -> array."""


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
                groups_path = path / f"{split}.groups.npy"
                groups = np.load(groups_path, allow_pickle=False) if groups_path.exists() else None
                splits[split] = Split(split, mapped, labels, groups)
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
                group=value.get("group"),
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

    def add(
        self, name: str, arrays: Mapping[str, np.ndarray], label: str | None = None, group: str | None = None
    ) -> Dataset:
        """Store an upload (arrays named ``<split>/<input>``); DatasetExists if the name is taken.
        ``group`` names an array of each sample's writer or user, kept apart from the samples."""
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
            return self._write(name, splits, label, builtin=False, source="upload", group=group)

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
        group: str | None = None,
    ) -> Dataset:
        num_classes = check_splits(splits, label)
        if group is not None:
            check_group(splits, group, label)
        self.directory.mkdir(parents=True, exist_ok=True)
        staging = self.directory / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir()
            description: dict[str, object] = {
                "name": name,
                "content_id": content_id(splits),
                "label": label,
                "group": group,
                "num_classes": num_classes,
                "builtin": builtin,
                "source": source,
                "created_at": utc_now(),
                "bytes": sum(int(v.nbytes) for s in splits.values() for v in s.values()),
                "splits": {split: sorted(set(arrays) - {group}) for split, arrays in splits.items()},
            }
            for split, arrays in splits.items():
                (staging / split).mkdir()
                for key, value in arrays.items():
                    target = staging / (f"{split}.groups.npy" if key == group else f"{split}/{key}.npy")
                    np.save(target, np.ascontiguousarray(value), allow_pickle=False)
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
