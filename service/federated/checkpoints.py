"""A model's weights file as numpy, without an interpreter: what its ``save`` signature writes, and what
its ``restore`` signature reads.

That file is TensorFlow's TF1 checkpoint format (``tf.raw_ops.Save``: one SSTable file, one tensor per
variable name). It is read with TensorFlow's checkpoint reader and written with ``tf.raw_ops.Save`` run
eagerly, the op the model's own ``save`` runs: the bytes come out identical to the model's.

Embedded model's 407,564-byte file, 2 cores: read ~0.7 ms, write ~1.7 ms (durable ~2.3; first ~38 ms).

TensorFlow's reader takes a glob pattern, not a file name (``x[1].ckpt`` would not match itself, ``*``
could merge several files), so names are escaped. It also prefers a TF2 checkpoint of the same prefix:
with a file ``<path>.index`` beside ``path`` it would read that one, so such a file is refused as
ambiguous (the model's ``restore`` would read the other). Its ``get_tensor`` cannot return float16,
uint16 or complex tensors (``Data type not supported``), which ``Save`` writes; those are read with
``tf.raw_ops.Restore``, the op the model's ``restore`` runs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import CorruptState, InvalidTensor, StorageError, StorageFull
from service.fleet.weights import FULL_TEXTS
from service.storage import atomic_target, shown

Weights = dict[str, np.ndarray]
"""A model's variables by name (the checkpoint's tensor names), ordered by name."""

WRITABLE_DTYPES = frozenset(
    np.dtype(t)
    for t in (
        np.float16,
        np.float32,
        np.float64,
        np.complex64,
        np.complex128,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.bool_,
    )
)
"""What ``tf.raw_ops.Save`` writes (it refuses uint32 and uint64)."""
_GLOB_CHARACTERS = re.compile(r"([*?\[\\])")
_TF_NOISE = re.compile(
    r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]|: perhaps your file is in a different file format.*$",
    re.DOTALL,
)


def read_weights(path: Path, root: Path | None = None) -> Weights:
    """Every tensor in the weights file at ``path``, by name.

    CorruptState when the file is missing or is not such a file (garbage, truncated, a flipped bit:
    the format's block checksums catch those); StorageError when it may not be read. Messages name the
    file as ``shown(path, root)`` does.
    """
    import tensorflow as tf

    name = shown(path, root)
    if not path.is_file():
        raise CorruptState(f"{name} does not exist" if not path.exists() else f"{name} is not a file")
    if path.with_name(f"{path.name}.index").exists():
        raise CorruptState(f"{name} is ambiguous: a TF2 checkpoint ({path.name}.index) lies beside it")
    pattern = _GLOB_CHARACTERS.sub(r"\\\1", os.fspath(path))
    try:
        reader = tf.compat.v1.train.NewCheckpointReader(pattern)
        dtypes = reader.get_variable_to_dtype_map()
        weights: Weights = {}
        for key in sorted(dtypes):
            try:
                value = reader.get_tensor(key)
            except tf.errors.UnimplementedError:  # a dtype the reader does not convert
                value = tf.raw_ops.Restore(file_pattern=pattern, tensor_name=key, dt=dtypes[key]).numpy()
            weights[key] = np.asarray(value)
    except tf.errors.PermissionDeniedError as exc:
        raise StorageError(f"could not read {name}: {_reason(exc, path, name)}") from exc
    except (tf.errors.OpError, ValueError, RuntimeError, TypeError) as exc:
        raise CorruptState(f"{name} is not a readable weights file: {_reason(exc, path, name)}") from exc
    return weights


def write_weights(path: Path, weights: Weights, durable: bool = True, root: Path | None = None) -> None:
    """Write ``weights`` to ``path`` in the format the model's ``save`` writes; atomically.

    The file is written beside ``path`` under a temporary name and renamed over it, so a failure leaves
    the previous file as it was. InvalidTensor when a tensor cannot be held in the format (no tensors,
    uint32, uint64, object arrays); StorageFull when the disk or the file size limit is full; else
    StorageError.
    """
    import tensorflow as tf

    name = shown(path, root)
    if not weights:
        raise InvalidTensor(f"no tensors to write to {name}")
    for key, value in weights.items():
        if np.asarray(value).dtype not in WRITABLE_DTYPES:
            raise InvalidTensor(
                f"tensor '{key}' is {np.asarray(value).dtype}: a weights file holds only "
                f"{sorted(str(d) for d in WRITABLE_DTYPES)}"
            )
    names = sorted(weights)
    with atomic_target(path, durable=durable, root=root) as tmp:
        try:
            tf.raw_ops.Save(
                filename=os.fspath(tmp),
                tensor_names=names,
                data=[tf.constant(np.asarray(weights[key])) for key in names],
            )
        except (tf.errors.OpError, ValueError, RuntimeError, TypeError) as exc:
            text = _reason(exc, tmp, name)
            full = any(marker in text for marker in FULL_TEXTS) or _no_free_blocks(path.parent)
            error = StorageFull if full else StorageError
            raise error(f"could not write {name}: {text}") from exc


def same_layout(a: Weights, b: Weights) -> str | None:
    """None when ``b`` has ``a``'s names, shapes and dtypes; else the first difference, worded from ``a``.

    ``a`` is the reference (the global weights), ``b`` the candidate (a participant's update).
    """
    missing = sorted(set(a) - set(b))
    if missing:
        return f"tensor '{missing[0]}' is missing"
    extra = sorted(set(b) - set(a))
    if extra:
        return f"tensor '{extra[0]}' is not one of the model's ({len(a)} tensors)"
    for key in sorted(a):
        x, y = np.asarray(a[key]), np.asarray(b[key])
        if x.shape != y.shape:
            return f"tensor '{key}' has shape {list(y.shape)}, not {list(x.shape)}"
        if x.dtype != y.dtype:
            return f"tensor '{key}' is {y.dtype}, not {x.dtype}"
    return None


def _reason(exc: Any, path: Path, name: str) -> str:
    """TensorFlow's error text without its op decorations and with ``path`` named as ``name``."""
    text = str(getattr(exc, "message", None) or exc)
    text = _TF_NOISE.sub("", text).strip()
    for spelled in dict.fromkeys((os.fspath(path), os.path.realpath(path))):
        escaped = _GLOB_CHARACTERS.sub(r"\\\1", spelled)
        # The file as TensorFlow names it: escaped or not, or a temporary of its own (``.tempstate<n>``).
        text = re.sub(f"(?:{re.escape(escaped)}|{re.escape(spelled)})[^\\s;:]*", lambda _: name, text)
    text = text.removeprefix(f"{name}; ").removeprefix(f"{name}: ")
    for directory in dict.fromkeys((os.fspath(path.parent), os.path.realpath(path.parent))):
        text = text.replace(directory, "<dir>")
    return text


def _no_free_blocks(directory: Path) -> bool:
    """Whether the filesystem holding ``directory`` has no block left for unprivileged writers."""
    try:
        return os.statvfs(directory).f_bavail == 0
    except OSError:
        return False
