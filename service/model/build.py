"""The tutorial's pipeline: pre-train in TensorFlow, convert, check parity, write model + card + plot."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from service.errors import ModelBuildError
from service.model.dataset import FashionMNIST, one_hot

if TYPE_CHECKING:  # TensorFlow is imported when a build starts
    from service.model.cnn import TrainableCNN
    from service.model.trainable import TrainableClassifier

Architecture = Literal["mlp", "cnn"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
"""``mlp``: the tutorial's (``service.model.trainable``); ``cnn``: NIID-Bench's (``service.model.cnn``)."""

SIGNATURES = ("train", "infer", "save", "restore", "train_prox", "train_scaffold", "hyperparameters")
"""The tutorial's four, then the federated strategies' (``trainable.OnDeviceModule``)."""
PARITY_TOLERANCE = 1e-4
"""The build fails when the converted model's logits differ from TensorFlow's by more than this."""


@dataclass(frozen=True)
class BuildSettings:
    """Defaults are the tutorial's."""

    arch: Architecture = "mlp"
    epochs: int = 100
    batch_size: int = 100
    learning_rate: float = 0.01
    img_size: int = 28
    hidden: int = 128
    num_classes: int = 10
    train_limit: int | None = None
    """Use only the first N training images (for quick builds)."""
    seed: int = 0
    momentum: float = 0.9
    """The CNN's SGD momentum (the MLP trains with plain SGD, as the tutorial's)."""
    weight_decay: float = 1e-5
    """The CNN's L2 weight decay, added to each gradient."""

    def describe(self) -> dict[str, object]:
        """The settings as the model card gives them: the CNN's optimizer fields only for the CNN
        (an MLP card of an earlier version, without ``arch``, reads as ``mlp``)."""
        settings = asdict(self)
        if self.arch != "cnn":
            del settings["momentum"], settings["weight_decay"]
        return settings

    @property
    def optimizer(self) -> str:
        if self.arch == "cnn":
            return f"SGD, momentum {self.momentum:g}, weight decay {self.weight_decay:g}"
        return "SGD"


@dataclass
class BuildResult:
    settings: BuildSettings
    losses: list[float]
    tf_test_accuracy: float
    tflite_test_accuracy: float
    test_images: int
    parity_max_abs_diff: float
    tensorflow_version: str
    dataset_source: str
    seconds: float
    model: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.model).hexdigest()

    def card(self, name: str) -> dict[str, object]:
        return {
            "name": name,
            "signatures": list(SIGNATURES),
            "settings": self.settings.describe(),
            "optimizer": self.settings.optimizer,
            "loss": "categorical cross-entropy on logits; per epoch: the last batch's loss, as the tutorial",
            "losses": [round(v, 6) for v in self.losses],
            "tf_test_accuracy": round(self.tf_test_accuracy, 6),
            "tflite_test_accuracy": round(self.tflite_test_accuracy, 6),
            "test_images": self.test_images,
            "parity_max_abs_diff": self.parity_max_abs_diff,
            "parity_tolerance": PARITY_TOLERANCE,
            "tensorflow_version": self.tensorflow_version,
            "dataset": self.dataset_source,
            "build_seconds": round(self.seconds, 1),
            "size_bytes": len(self.model),
            "sha256": self.sha256,
        }


EpochCallback = Callable[[int, float], None]


def batches(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def accuracy(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, labels: np.ndarray) -> float:
    """Share of images whose argmax logit is the label, predicted in chunks of 1,000."""
    correct = 0
    for part in batches(len(images), 1000):
        correct += int((predict(images[part]).argmax(axis=-1) == labels[part]).sum())
    return correct / len(images)


def _module(settings: BuildSettings) -> TrainableClassifier | TrainableCNN:
    """The untrained network ``settings.arch`` names."""
    if settings.arch == "cnn":
        from service.model.cnn import TrainableCNN

        if (settings.img_size, settings.num_classes) != (TrainableCNN.img_size, TrainableCNN.num_classes):
            raise ModelBuildError("the CNN takes 28x28 images and 10 classes, as NIID-Bench's")
        return TrainableCNN(settings.learning_rate, settings.momentum, settings.weight_decay, settings.seed)
    if settings.arch != "mlp":
        raise ModelBuildError(
            f"unknown architecture {settings.arch!r}; choose one of {', '.join(ARCHITECTURES)}"
        )
    from service.model.trainable import TrainableClassifier

    return TrainableClassifier(
        img_size=settings.img_size,
        hidden=settings.hidden,
        num_classes=settings.num_classes,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
    )


def build(
    data: FashionMNIST,
    settings: BuildSettings = BuildSettings(),
    on_epoch: EpochCallback | None = None,
) -> BuildResult:
    """Pre-train, convert and check parity; raises ModelBuildError if parity fails."""
    import tensorflow as tf

    from service.model.trainable import convert

    started = time.monotonic()
    tf.random.set_seed(settings.seed)
    module = _module(settings)
    images = data.train_images[: settings.train_limit]
    labels = one_hot(data.train_labels[: settings.train_limit], settings.num_classes)
    # Tensors made once: the loop then costs one tf.function call per batch, as in the tutorial.
    train_batches = [
        (tf.constant(images[s]), tf.constant(labels[s])) for s in batches(len(images), settings.batch_size)
    ]
    losses: list[float] = []
    for epoch in range(settings.epochs):
        for x, y in train_batches:
            result = module.train(x, y)
        losses.append(float(result["loss"]))
        if on_epoch:
            on_epoch(epoch + 1, losses[-1])

    with tempfile.TemporaryDirectory() as workdir:
        model = convert(module, module.signatures(), workdir)

    interpreter = tf.lite.Interpreter(model_content=model)
    interpreter.allocate_tensors()
    infer_lite = interpreter.get_signature_runner("infer")

    def predict_tf(x: np.ndarray) -> np.ndarray:
        return module.infer(tf.constant(x))["logits"].numpy()

    def predict_lite(x: np.ndarray) -> np.ndarray:
        return infer_lite(x=x)["logits"]

    sample = data.test_images[:1000]
    diff = float(np.abs(predict_tf(sample) - predict_lite(sample)).max())
    if diff > PARITY_TOLERANCE:
        raise ModelBuildError(
            f"converted model's infer logits differ from TensorFlow's by {diff:.3g} (> {PARITY_TOLERANCE})"
        )
    return BuildResult(
        settings=settings,
        losses=losses,
        tf_test_accuracy=accuracy(predict_tf, data.test_images, data.test_labels),
        tflite_test_accuracy=accuracy(predict_lite, data.test_images, data.test_labels),
        test_images=len(data.test_images),
        parity_max_abs_diff=diff,
        tensorflow_version=tf.__version__,
        dataset_source=data.source,
        seconds=time.monotonic() - started,
        model=model,
    )


def plot_losses(path: Path, series: dict[str, tuple[list[int], list[float]]]) -> None:
    """The tutorial's figure: loss per epoch, one line per phase, y from 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, (epochs, losses) in series.items():
        ax.plot(epochs, losses, label=label)
    ax.set_ylim(0, max(ax.get_ylim()))
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Loss [Cross Entropy]")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(result: BuildResult, model_path: Path) -> tuple[Path, Path]:
    """Write the `.tflite`, its JSON card beside it (``.json``) and the loss plot (``.png``)."""
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_bytes(result.model)
    card_path = model_path.with_suffix(".json")
    card_path.write_text(json.dumps(result.card(model_path.stem), indent=2) + "\n")
    plot_path = model_path.with_suffix(".png")
    epochs = list(range(1, len(result.losses) + 1))
    plot_losses(plot_path, {"Pre-training": (epochs, result.losses)})
    return card_path, plot_path
