"""NIID-Bench's CNN (Li et al. 2022) as an on-device-trainable ``tf.Module``, beside the tutorial's MLP.

conv 5x5x6 -> ReLU -> max-pool 2 -> conv 5x5x16 -> ReLU -> max-pool 2 -> FC 120 -> FC 84 -> FC 10,
trained with SGD, momentum and weight decay (PyTorch's ``torch.optim.SGD``: ``g += wd * w``;
``v = momentum * v + g``; ``w -= lr * v``). The signatures are the tutorial's four, with its names,
inputs and outputs, so everything that runs the MLP runs this.

The momentum buffers are the optimizer's, not the model's: ``save`` writes the weights only, and
``restore`` zeroes the buffers with the weights it loads, as NIID-Bench makes a fresh optimizer for
every round. An interpreter made for a device restores its checkpoint, so a device starts every
activation, and every adopted model version, with no momentum: whichever interpreter trains it
(its own or a lent one), the same weights and batches give the same steps.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from service.model.trainable import OnDeviceModule

LAYERS: dict[str, tuple[tuple[int, ...], int]] = {
    "conv1_kernel": ((5, 5, 1, 6), 25),
    "conv1_bias": ((6,), 25),
    "conv2_kernel": ((5, 5, 6, 16), 150),
    "conv2_bias": ((16,), 150),
    "fc1_kernel": ((256, 120), 256),
    "fc1_bias": ((120,), 256),
    "fc2_kernel": ((120, 84), 120),
    "fc2_bias": ((84,), 120),
    "fc3_kernel": ((84, 10), 84),
    "fc3_bias": ((10,), 84),
}
"""Each weight's shape and fan-in (28x28 inputs: 24 -> 12 -> 8 -> 4, so 4 * 4 * 16 = 256 features)."""


def torch_default(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """PyTorch's default initialiser for conv and linear layers, as NIID-Bench's CNN gets it:
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernels and biases alike."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


class TrainableCNN(OnDeviceModule):
    """The CNN with ``train``, ``infer``, ``save`` and ``restore`` signatures (28x28 images, 10 classes)."""

    img_size = 28
    num_classes = 10

    def __init__(
        self, learning_rate: float = 0.01, momentum: float = 0.9, weight_decay: float = 1e-5, seed: int = 0
    ) -> None:
        super().__init__(name="cnn")
        rng = np.random.default_rng(seed)
        self.learning_rate, self.momentum, self.weight_decay = learning_rate, momentum, weight_decay
        self.weights: dict[str, tf.Variable] = {
            name: tf.Variable(torch_default(rng, shape, fan_in), name=name)
            for name, (shape, fan_in) in LAYERS.items()
        }
        self.velocity: dict[str, tf.Variable] = {
            name: tf.Variable(np.zeros(shape, np.float32), name=f"{name}_velocity")
            for name, (shape, _) in LAYERS.items()
        }
        self._trace(self.img_size, self.num_classes)

    def _logits(self, x: tf.Tensor) -> tf.Tensor:
        w = self.weights
        h = tf.reshape(x, [-1, self.img_size, self.img_size, 1])
        for layer in ("conv1", "conv2"):
            h = tf.nn.relu(tf.nn.conv2d(h, w[f"{layer}_kernel"], 1, "VALID") + w[f"{layer}_bias"])
            h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        h = tf.reshape(h, [-1, LAYERS["fc1_kernel"][0][0]])
        h = tf.nn.relu(tf.matmul(h, w["fc1_kernel"]) + w["fc1_bias"])
        h = tf.nn.relu(tf.matmul(h, w["fc2_kernel"]) + w["fc2_bias"])
        return tf.matmul(h, w["fc3_kernel"]) + w["fc3_bias"]

    def _apply(self, names: list[str], gradients: list[tf.Tensor]) -> None:
        for name, gradient in zip(names, gradients, strict=True):
            variable, velocity = self.weights[name], self.velocity[name]
            velocity.assign(self.momentum * velocity + gradient + self.weight_decay * variable)
            variable.assign_sub(self.learning_rate * velocity)

    def _restore(self, checkpoint_path: tf.Tensor) -> dict[str, tf.Tensor]:
        restored = super()._restore(checkpoint_path)
        for name, value in restored.items():  # a fresh optimizer with the weights it loads
            self.velocity[name].assign(tf.zeros_like(value))
        return restored
