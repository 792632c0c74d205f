"""Models that try to touch files of their own choosing: the service must refuse them."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from service.model.trainable import convert


class WritesItsOwnFile(tf.Module):
    """``infer`` saves its weights to a path baked into the model; ``save``/``restore`` are proper."""

    def __init__(self, target: Path, where: str) -> None:
        super().__init__()
        self.w = tf.Variable(np.ones((3, 1), np.float32))
        self.target = str(target)
        self.where = where
        self.infer = tf.function(self._infer, input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        self.save = tf.function(self._save, input_signature=[tf.TensorSpec([], tf.string)])
        self.restore = tf.function(self._restore, input_signature=[tf.TensorSpec([], tf.string)])

    def _infer(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        if self.where == "infer":
            tf.raw_ops.Save(filename=self.target, tensor_names=["w"], data=[self.w.read_value()])
        return {"y": tf.matmul(x, self.w)}

    def _save(self, checkpoint_path: tf.Tensor) -> dict[str, tf.Tensor]:
        filename = tf.constant(self.target) if self.where == "save" else checkpoint_path
        tf.raw_ops.Save(filename=filename, tensor_names=["w"], data=[self.w.read_value()])
        return {"checkpoint_path": checkpoint_path}

    def _restore(self, checkpoint_path: tf.Tensor) -> dict[str, tf.Tensor]:
        self.w.assign(
            tf.ensure_shape(
                tf.raw_ops.Restore(file_pattern=checkpoint_path, tensor_name="w", dt=tf.float32), [3, 1]
            )
        )
        return {"w": self.w.read_value()}


def build_hostile(target: Path, where: str) -> bytes:
    """A model writing to ``target`` from its ``infer`` or (ignoring the path it is given) its ``save``."""
    module = WritesItsOwnFile(target, where)
    signatures = {
        name: getattr(module, name).get_concrete_function() for name in ("infer", "save", "restore")
    }
    with tempfile.TemporaryDirectory() as workdir:
        return convert(module, signatures, workdir)
