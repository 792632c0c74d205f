"""The tutorial's on-device-trainable classifier as a ``tf.Module`` of plain variables.

The tutorial builds it from Keras layers; with Keras 3 that converts to a `.tflite` without
variable values (see the project notes), so the same network (Flatten -> Dense(relu) -> Dense,
Glorot-uniform kernels, zero biases, categorical cross-entropy on logits, plain SGD) is written
out here. The four signatures keep the tutorial's names, inputs and outputs.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """Keras' default kernel initialiser: U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out))."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)


class OnDeviceModule(tf.Module):
    """The tutorial's four signatures over ``self.weights``: a subclass gives ``_logits`` and ``_train``.

    ``save`` writes every weight to the path it is given and ``restore`` reads them back (what the
    service's checkpoints are); ``infer`` gives ``output`` (softmax) and ``logits``.
    """

    weights: dict[str, tf.Variable]

    def _trace(self, img_size: int, num_classes: int) -> None:
        """Make the signatures: they depend on constructor arguments, so they are traced here, not by
        decorators."""
        images = tf.TensorSpec([None, img_size, img_size], tf.float32)
        labels = tf.TensorSpec([None, num_classes], tf.float32)
        path = tf.TensorSpec([], tf.string)
        self.train = tf.function(self._train, input_signature=[images, labels])
        self.infer = tf.function(self._infer, input_signature=[images])
        self.save = tf.function(self._save, input_signature=[path])
        self.restore = tf.function(self._restore, input_signature=[path])

    def _logits(self, x: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def _train(self, x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
        raise NotImplementedError

    def _infer(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = self._logits(x)
        return {"output": tf.nn.softmax(logits, axis=-1), "logits": logits}

    def _save(self, checkpoint_path: tf.Tensor) -> dict[str, tf.Tensor]:
        tf.raw_ops.Save(
            filename=checkpoint_path,
            tensor_names=list(self.weights),
            data=[variable.read_value() for variable in self.weights.values()],
            name="save",
        )
        return {"checkpoint_path": checkpoint_path}

    def _restore(self, checkpoint_path: tf.Tensor) -> dict[str, tf.Tensor]:
        restored_tensors = {}
        for name, variable in self.weights.items():
            restored = tf.raw_ops.Restore(
                file_pattern=checkpoint_path, tensor_name=name, dt=variable.dtype, name="restore"
            )
            restored = tf.ensure_shape(restored, variable.shape)
            variable.assign(restored)
            restored_tensors[name] = restored
        return restored_tensors

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        return {
            "train": self.train.get_concrete_function(),
            "infer": self.infer.get_concrete_function(),
            "save": self.save.get_concrete_function(),
            "restore": self.restore.get_concrete_function(),
        }


class TrainableClassifier(OnDeviceModule):
    """A two-layer perceptron with ``train``, ``infer``, ``save`` and ``restore`` signatures."""

    def __init__(
        self,
        img_size: int = 28,
        hidden: int = 128,
        num_classes: int = 10,
        learning_rate: float = 0.01,
        seed: int = 0,
    ) -> None:
        super().__init__(name="classifier")
        rng = np.random.default_rng(seed)
        pixels = img_size * img_size
        self.img_size = img_size
        self.num_classes = num_classes
        self.learning_rate = learning_rate
        self.weights: dict[str, tf.Variable] = {
            "dense_1_kernel": tf.Variable(glorot_uniform(rng, pixels, hidden), name="dense_1_kernel"),
            "dense_1_bias": tf.Variable(np.zeros(hidden, np.float32), name="dense_1_bias"),
            "dense_2_kernel": tf.Variable(glorot_uniform(rng, hidden, num_classes), name="dense_2_kernel"),
            "dense_2_bias": tf.Variable(np.zeros(num_classes, np.float32), name="dense_2_bias"),
        }
        self._trace(img_size, num_classes)

    def _logits(self, x: tf.Tensor) -> tf.Tensor:
        w = self.weights
        flat = tf.reshape(x, [-1, self.img_size * self.img_size])
        hidden = tf.nn.relu(tf.matmul(flat, w["dense_1_kernel"]) + w["dense_1_bias"])
        return tf.matmul(hidden, w["dense_2_kernel"]) + w["dense_2_bias"]

    def _train(self, x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
        variables = list(self.weights.values())
        with tf.GradientTape() as tape:
            logits = self._logits(x)
            loss = tf.reduce_mean(-tf.reduce_sum(y * tf.nn.log_softmax(logits), axis=-1))
        gradients = tape.gradient(loss, variables)
        for variable, gradient in zip(variables, gradients, strict=True):
            variable.assign_sub(self.learning_rate * gradient)
        return {"loss": loss}


def convert(
    module: tf.Module, signatures: dict[str, tf.types.experimental.ConcreteFunction], workdir: str
) -> bytes:
    """Convert as the tutorial does: SavedModel, builtins + select TF ops, resource variables."""
    tf.saved_model.save(module, workdir, signatures=signatures)
    converter = tf.lite.TFLiteConverter.from_saved_model(workdir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    converter.experimental_enable_resource_variables = True
    return bytes(converter.convert())
