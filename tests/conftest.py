"""Shared fixtures: small real models, built once per session with the real TensorFlow pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from service.model.build import BuildResult, BuildSettings, build, write_outputs
from service.model.dataset import FashionMNIST, load_fashion_mnist, one_hot

pytest_plugins = ["tests.browser"]  # Chromium pages, for tests/ui and the sharded dashboard


@pytest.fixture(scope="session")
def fashion_mnist() -> FashionMNIST:
    return load_fashion_mnist()


@pytest.fixture(scope="session")
def tiny_build(fashion_mnist: FashionMNIST) -> BuildResult:
    """The tutorial's model, narrowed and trained briefly on a subset: seconds, not minutes."""
    return build(fashion_mnist, BuildSettings(epochs=2, hidden=32, train_limit=2000))


@pytest.fixture(scope="session")
def tiny_model_path(tiny_build: BuildResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.tflite"
    write_outputs(tiny_build, path)
    return path


@pytest.fixture(scope="session")
def regressor_model() -> bytes:
    from tests.regressor import build_regressor

    return build_regressor()


@pytest.fixture(scope="session")
def train_batch(fashion_mnist: FashionMNIST) -> tuple[np.ndarray, np.ndarray]:
    """The first 100 training images and their one-hot labels: the default model's train inputs."""
    return fashion_mnist.train_images[:100], one_hot(fashion_mnist.train_labels[:100])
