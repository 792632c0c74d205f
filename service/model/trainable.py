"""The tutorial's on-device-trainable classifier as a ``tf.Module`` of plain variables.

The tutorial builds it from Keras layers; with Keras 3 that converts to a `.tflite` without
variable values (see the project notes), so the same network (Flatten -> Dense(relu) -> Dense,
Glorot-uniform kernels, zero biases, categorical cross-entropy on logits, plain SGD) is written
out here. The four signatures keep the tutorial's names, inputs and outputs.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from service.model.names import CORRECTION_PREFIX, GLOBAL_PREFIX


def glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """Keras' default kernel initialiser: U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out))."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)


class OnDeviceModule(tf.Module):
    """The tutorial's four signatures over ``self.weights``, and the federated strategies' variants of
    ``train``: a subclass gives ``_logits`` and its optimizer's step (``_apply``).

    ``save`` writes every weight to the path it is given and ``restore`` reads them back (what the
    service's checkpoints are); ``infer`` gives ``output`` (softmax) and ``logits``. The variants:

    - ``train_prox(x, y, mu, global_<weight>...)``: FedProx's step (Li et al. 2020), on the loss plus
      ``mu / 2 * ||w - global||**2``; it answers the plain loss, as ``train`` does;
    - ``train_scaffold(x, y, correction_<weight>...)``: SCAFFOLD's step (Karimireddy et al. 2020) as
      NIID-Bench takes it: the optimizer's step, then ``w -= learning_rate * correction``;
    - ``hyperparameters()``: the local optimizer's ``learning_rate``, ``momentum`` and ``weight_decay``
      (SCAFFOLD's control variate and FedNova's normalization need them).
    """

    weights: dict[str, tf.Variable]
    learning_rate: float
    momentum: float = 0.0
    weight_decay: float = 0.0

    def _trace(self, img_size: int, num_classes: int) -> None:
        """Make the signatures: they depend on constructor arguments, so they are traced here, not by
        decorators."""
        images = tf.TensorSpec([None, img_size, img_size], tf.float32)
        labels = tf.TensorSpec([None, num_classes], tf.float32)
        path = tf.TensorSpec([], tf.string)
        per_weight = [(name, variable.shape) for name, variable in self.weights.items()]
        globals_ = [tf.TensorSpec(shape, tf.float32, name=GLOBAL_PREFIX + n) for n, shape in per_weight]
        corrections = [
            tf.TensorSpec(shape, tf.float32, name=CORRECTION_PREFIX + n) for n, shape in per_weight
        ]
        self.train = tf.function(self._train, input_signature=[images, labels])
        mu = tf.TensorSpec([], tf.float32, name="mu")
        self.train_prox = tf.function(self._train_prox, input_signature=[images, labels, mu, *globals_])
        self.train_scaffold = tf.function(
            self._train_scaffold, input_signature=[images, labels, *corrections]
        )
        self.hyperparameters = tf.function(self._hyperparameters, input_signature=[])
        self.infer = tf.function(self._infer, input_signature=[images])
        self.save = tf.function(self._save, input_signature=[path])
        self.restore = tf.function(self._restore, input_signature=[path])

    def _logits(self, x: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def _apply(self, names: list[str], gradients: list[tf.Tensor]) -> None:
        """The optimizer's step on ``self.weights[name]`` for each name, from its gradient."""
        raise NotImplementedError

    def _loss(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Categorical cross-entropy on the logits, the batch's mean."""
        return tf.reduce_mean(-tf.reduce_sum(y * tf.nn.log_softmax(self._logits(x)), axis=-1))

    def _train(self, x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
        names = list(self.weights)
        with tf.GradientTape() as tape:
            loss = self._loss(x, y)
        self._apply(names, tape.gradient(loss, [self.weights[name] for name in names]))
        return {"loss": loss}

    def _train_prox(
        self, x: tf.Tensor, y: tf.Tensor, mu: tf.Tensor, *global_weights: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        names = list(self.weights)
        variables = [self.weights[name] for name in names]
        with tf.GradientTape() as tape:
            loss = self._loss(x, y)
            distance = tf.add_n(
                [tf.reduce_sum(tf.square(v - g)) for v, g in zip(variables, global_weights, strict=True)]
            )
            total = loss + mu / 2.0 * distance
        self._apply(names, tape.gradient(total, variables))
        return {"loss": loss}

    def _train_scaffold(self, x: tf.Tensor, y: tf.Tensor, *corrections: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = self._train(x, y)
        for variable, correction in zip(self.weights.values(), corrections, strict=True):
            variable.assign_sub(self.learning_rate * correction)
        return outputs

    def _hyperparameters(self) -> dict[str, tf.Tensor]:
        return {
            "learning_rate": tf.constant(self.learning_rate, tf.float32),
            "momentum": tf.constant(self.momentum, tf.float32),
            "weight_decay": tf.constant(self.weight_decay, tf.float32),
        }

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
            "train_prox": self.train_prox.get_concrete_function(),
            "train_scaffold": self.train_scaffold.get_concrete_function(),
            "hyperparameters": self.hyperparameters.get_concrete_function(),
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

    def _apply(self, names: list[str], gradients: list[tf.Tensor]) -> None:
        for name, gradient in zip(names, gradients, strict=True):
            self.weights[name].assign_sub(self.learning_rate * gradient)


def convert(
    module: tf.Module, signatures: dict[str, tf.types.experimental.ConcreteFunction], workdir: str
) -> bytes:
    """Convert as the tutorial does: SavedModel, builtins + select TF ops, resource variables."""
    tf.saved_model.save(module, workdir, signatures=signatures)
    converter = tf.lite.TFLiteConverter.from_saved_model(workdir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    converter.experimental_enable_resource_variables = True
    return bytes(converter.convert())
