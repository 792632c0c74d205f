"""A second on-device-trainable model with other signature names and inputs (a linear regressor)."""

from __future__ import annotations

import tempfile

import numpy as np
import tensorflow as tf

from service.model.trainable import convert

FEATURES = 3


class LinearRegressor(tf.Module):
    """``fit(features, target) -> mse``, ``predict(features) -> prediction``, ``save``/``restore``."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(np.zeros((FEATURES, 1), np.float32), name="w")
        self.b = tf.Variable(np.zeros((1,), np.float32), name="b")
        features = tf.TensorSpec([None, FEATURES], tf.float32)
        target = tf.TensorSpec([None, 1], tf.float32)
        path = tf.TensorSpec([], tf.string)
        self.fit = tf.function(self._fit, input_signature=[features, target])
        self.predict = tf.function(self._predict, input_signature=[features])
        self.save = tf.function(self._save, input_signature=[path])
        self.restore = tf.function(self._restore, input_signature=[path])

    def _predict(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"prediction": tf.matmul(features, self.w) + self.b}

    def _fit(self, features: tf.Tensor, target: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            mse = tf.reduce_mean(tf.square(self._predict(features)["prediction"] - target))
        grad_w, grad_b = tape.gradient(mse, [self.w, self.b])
        self.w.assign_sub(0.1 * grad_w)
        self.b.assign_sub(0.1 * grad_b)
        return {"mse": mse}

    def _save(self, checkpoint_path: tf.Tensor) -> dict[str, tf.Tensor]:
        tf.raw_ops.Save(
            filename=checkpoint_path, tensor_names=["w", "b"], data=[self.w.read_value(), self.b.read_value()]
        )
        return {"checkpoint_path": checkpoint_path}

    def _restore(self, checkpoint_path: tf.Tensor) -> dict[str, tf.Tensor]:
        for name, variable in (("w", self.w), ("b", self.b)):
            value = tf.raw_ops.Restore(file_pattern=checkpoint_path, tensor_name=name, dt=tf.float32)
            variable.assign(tf.ensure_shape(value, variable.shape))
        return {"w": self.w.read_value(), "b": self.b.read_value()}


def build_regressor() -> bytes:
    module = LinearRegressor()
    signatures = {
        name: getattr(module, name).get_concrete_function() for name in ("fit", "predict", "save", "restore")
    }
    with tempfile.TemporaryDirectory() as workdir:
        return convert(module, signatures, workdir)


def regression_batch(rng: np.random.Generator, n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Samples of y = 2 x0 - x1 + 0.5 x2 + 1."""
    features = rng.normal(size=(n, FEATURES)).astype(np.float32)
    target = (features @ np.array([[2.0], [-1.0], [0.5]], np.float32) + 1.0).astype(np.float32)
    return features, target
