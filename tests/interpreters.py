"""A built model in ``tf.lite.Interpreter`` (TensorFlow's, not the service's), and its weights read back
through its own ``save`` and ``restore``: what the model tests compare the service against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf


def interpreter(model: bytes) -> tf.lite.Interpreter:
    made = tf.lite.Interpreter(model_content=model)
    made.allocate_tensors()
    return made


def weights_of(made: tf.lite.Interpreter, path: Path) -> dict[str, np.ndarray]:
    """The interpreter's weights, saved to ``path`` and read back through its restore."""
    made.get_signature_runner("save")(checkpoint_path=np.array(str(path).encode()))
    restored = made.get_signature_runner("restore")(checkpoint_path=np.array(str(path).encode()))
    return {name: np.array(value) for name, value in restored.items()}
