"""A device's weights on disk: the model's ``save`` and ``restore`` signatures run on a file path the
service chooses, and TensorFlow's errors turned into the service's own.

A checkpoint, a spill and a hand-over file are all written and read this way; which file is which,
and when each is used, is for ``service.fleet.checkpoints`` to say.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from service.errors import CorruptState, InvocationFailed, SignatureNotFound, StorageError, StorageFull
from service.runtime import CompiledModel, ModelInterpreter, SignatureSpec
from service.storage import shown

CHECKPOINT_SIGNATURES = ("save", "restore")
FULL_TEXTS = ("No space left", "File too large", "Disk quota exceeded", "Quota exceeded")
"""What TensorFlow's file errors say when the disk, a quota or the file size limit is full."""
_TFLITE_NOISE = re.compile(
    r"^signature '[^']*' of model '[^']*' failed: |\s*Node number \d+ \(\w+\) failed to invoke\.?"
)
"""What the runtime and TFLite wrap around TensorFlow's own error text."""


def checkpoint_signature(model: CompiledModel, name: str) -> SignatureSpec:
    """The model's ``save`` or ``restore``: SignatureNotFound unless it takes one string, the path."""
    spec = model.signature(name)
    if len(spec.inputs) != 1 or not spec.inputs[0].is_string:
        raise SignatureNotFound(
            f"model '{model.name}': signature '{name}' must take one string (the checkpoint path) "
            f"to be used for checkpoints; it takes {[s.describe() for s in spec.inputs]}"
        )
    return spec


def has_checkpoint_signatures(model: CompiledModel) -> bool:
    return all(name in model.signatures for name in CHECKPOINT_SIGNATURES)


def run_checkpoint(
    interpreter: ModelInterpreter, model: CompiledModel, name: str, path: Path, target: Path, data_dir: Path
) -> None:
    """Run ``save`` or ``restore`` on ``path`` (``target`` names the file in messages).

    A failed save is the disk's: StorageFull when TensorFlow's text says the disk, a quota or the file
    size limit is full, or no block is free; else StorageError. A failed restore is CorruptState,
    worded further by the caller. Messages name files from the data directory, never its own path.
    """
    spec = checkpoint_signature(model, name)
    try:
        interpreter.run(name, {spec.inputs[0].name: np.array(os.fsencode(path), spec.inputs[0].dtype)})
    except InvocationFailed as exc:
        text = without_paths(exc.message, data_dir)
        if name == "restore":
            raise CorruptState(text) from exc
        full = any(marker in text for marker in FULL_TEXTS) or _no_free_blocks(target.parent)
        error = StorageFull if full else StorageError
        raise error(f"could not write {shown(target, data_dir)}: {text}") from exc


def without_paths(text: str, data_dir: Path) -> str:
    """An error text (TensorFlow's) with the data directory taken out of the paths it names."""
    for root in dict.fromkeys((str(data_dir), os.path.realpath(data_dir))):
        text = text.replace(root + os.sep, "").replace(root, "<data dir>")
    return _TFLITE_NOISE.sub("", text).strip()


def _no_free_blocks(directory: Path) -> bool:
    """Whether the filesystem holding ``directory`` has no block left for unprivileged writers."""
    try:
        return os.statvfs(directory).f_bavail == 0
    except OSError:
        return False
