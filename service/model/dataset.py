"""Fashion-MNIST: the four IDX files from a local directory, else Keras' own loader."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.errors import DatasetUnavailable

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package puts the files."""
KERAS_CACHE_DIR = Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "datasets" / "fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)


@dataclass(frozen=True)
class FashionMNIST:
    """Images as float32 in [0, 1] (N, 28, 28); labels as uint8 class indices (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str


def one_hot(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Labels as float32 one-hot rows, as ``tf.keras.utils.to_categorical`` makes them."""
    return np.eye(num_classes, dtype=np.float32)[labels]


def scale(images: np.ndarray) -> np.ndarray:
    """uint8 pixels to float32 in [0, 1], as the tutorial does (``/ 255.0``)."""
    return (images / 255.0).astype(np.float32)


def read_idx(path: Path) -> np.ndarray:
    """Read one gzip'd IDX file (big-endian header, then raw uint8)."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:  # not gzip, or cut short
        raise DatasetUnavailable(f"{path} is not a readable gzip'd IDX file: {exc}") from exc
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise DatasetUnavailable(f"{path} is not a uint8 IDX file (magic {magic:#x})")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    array = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if array.size != int(np.prod(dims)):
        raise DatasetUnavailable(f"{path} is truncated: {array.size} values for shape {dims}")
    return array.reshape(dims)


def _from_directory(directory: Path) -> FashionMNIST:
    arrays = {key: read_idx(directory / name) for key, name in FILES.items()}
    return FashionMNIST(
        train_images=scale(arrays["train_images"]),
        train_labels=arrays["train_labels"],
        test_images=scale(arrays["test_images"]),
        test_labels=arrays["test_labels"],
        source=str(directory),
    )


def _from_keras() -> FashionMNIST:
    import tensorflow as tf

    (train_x, train_y), (test_x, test_y) = tf.keras.datasets.fashion_mnist.load_data()
    return FashionMNIST(scale(train_x), train_y, scale(test_x), test_y, source=f"keras ({KERAS_CACHE_DIR})")


def load_fashion_mnist(directory: Path | None = None) -> FashionMNIST:
    """Load from ``directory`` (default: Debian's), else from Keras' cache or download.

    Raises DatasetUnavailable naming both places when neither works.
    """
    directory = directory or DEBIAN_DIR
    if all((directory / name).is_file() for name in FILES.values()):
        return _from_directory(directory)
    try:
        return _from_keras()
    except Exception as exc:  # Keras raises anything from URLError to OSError here.
        raise DatasetUnavailable(
            f"Fashion-MNIST not found: {directory} lacks the four IDX files "
            f"({', '.join(FILES.values())}), and Keras' loader failed "
            f"(cache {KERAS_CACHE_DIR}, then download): {exc}. "
            "Install Debian's dataset-fashion-mnist package or pass --data-dir."
        ) from exc
