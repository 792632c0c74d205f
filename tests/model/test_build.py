"""The build pipeline's outputs: the card, parity, the four signatures in tf.lite.Interpreter, the CLI."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import service
from service.cli import main
from service.model.build import PARITY_TOLERANCE, BuildResult, BuildSettings
from service.model.dataset import FashionMNIST
from service.model.tutorial import PRE_TRAINING_LOSSES as TUTORIAL_PRE_TRAINING

EMBEDDED_MODEL = Path(service.__file__).parent / "models" / "fashion_mnist.tflite"

CARD_FIELDS = {
    "name",
    "signatures",
    "settings",
    "optimizer",
    "loss",
    "losses",
    "tf_test_accuracy",
    "tflite_test_accuracy",
    "test_images",
    "parity_max_abs_diff",
    "parity_tolerance",
    "tensorflow_version",
    "dataset",
    "build_seconds",
    "size_bytes",
    "sha256",
}


def read_card(model_path: Path) -> dict[str, Any]:
    card: dict[str, Any] = json.loads(model_path.with_suffix(".json").read_text())
    return card


def new_interpreter(model_path: Path) -> tf.lite.Interpreter:
    interpreter = tf.lite.Interpreter(model_path=str(model_path))
    interpreter.allocate_tensors()
    return interpreter


def path_tensor(path: Path) -> np.ndarray:
    return np.array(str(path).encode())


def test_card_describes_the_build(tiny_build: BuildResult, tiny_model_path: Path) -> None:
    card = read_card(tiny_model_path)
    model = tiny_model_path.read_bytes()

    assert set(card) == CARD_FIELDS
    assert card["name"] == "tiny"
    assert card["signatures"] == [
        "train",
        "infer",
        "save",
        "restore",
        "train_prox",
        "train_scaffold",
        "hyperparameters",
    ]
    assert card["settings"] == tiny_build.settings.describe()
    assert len(card["losses"]) == tiny_build.settings.epochs
    assert all(math.isfinite(loss) and loss > 0 for loss in card["losses"])
    assert card["losses"] == [round(loss, 6) for loss in tiny_build.losses]
    for key in ("tf_test_accuracy", "tflite_test_accuracy"):
        assert 0.2 < card[key] <= 1.0  # ten classes, chance is 0.1: even 40 SGD steps learn something
    assert card["test_images"] == 10_000
    assert card["tensorflow_version"] == tf.__version__
    assert card["size_bytes"] == len(model)
    assert card["sha256"] == hashlib.sha256(model).hexdigest()
    assert tiny_model_path.with_suffix(".png").stat().st_size > 0


def test_converted_model_matches_tensorflow(tiny_build: BuildResult) -> None:
    assert tiny_build.parity_max_abs_diff <= PARITY_TOLERANCE
    assert abs(tiny_build.tflite_test_accuracy - tiny_build.tf_test_accuracy) <= 0.002


def test_four_signatures(tiny_model_path: Path) -> None:
    """The tutorial's four, and the strategies' variants of ``train`` and the optimizer's settings."""
    weights = ["dense_1_bias", "dense_1_kernel", "dense_2_bias", "dense_2_kernel"]
    assert new_interpreter(tiny_model_path).get_signature_list() == {
        "train": {"inputs": ["x", "y"], "outputs": ["loss"]},
        "train_prox": {"inputs": [*(f"global_{w}" for w in weights), "mu", "x", "y"], "outputs": ["loss"]},
        "train_scaffold": {"inputs": [*(f"correction_{w}" for w in weights), "x", "y"], "outputs": ["loss"]},
        "hyperparameters": {"inputs": [], "outputs": ["learning_rate", "momentum", "weight_decay"]},
        "infer": {"inputs": ["x"], "outputs": ["logits", "output"]},
        "save": {"inputs": ["checkpoint_path"], "outputs": ["checkpoint_path"]},
        "restore": {
            "inputs": ["checkpoint_path"],
            "outputs": ["dense_1_bias", "dense_1_kernel", "dense_2_bias", "dense_2_kernel"],
        },
    }


def test_train_lowers_the_loss_on_one_batch(
    tiny_model_path: Path, train_batch: tuple[np.ndarray, np.ndarray]
) -> None:
    train = new_interpreter(tiny_model_path).get_signature_runner("train")
    x, y = train_batch

    losses = [float(train(x=x, y=y)["loss"]) for _ in range(10)]

    assert all(math.isfinite(loss) for loss in losses)
    assert all(later < earlier for earlier, later in itertools.pairwise(losses))


def test_infer_returns_probabilities_and_logits(tiny_model_path: Path, fashion_mnist: FashionMNIST) -> None:
    infer = new_interpreter(tiny_model_path).get_signature_runner("infer")

    result = infer(x=fashion_mnist.test_images[:7])

    output, logits = result["output"], result["logits"]
    assert output.shape == logits.shape == (7, 10)
    assert output.dtype == logits.dtype == np.float32
    assert np.allclose(output.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(output, tf.nn.softmax(logits).numpy(), atol=1e-6)


def test_save_then_restore_in_a_fresh_interpreter_is_bit_exact(
    tiny_build: BuildResult, tiny_model_path: Path, train_batch: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, y = train_batch
    trained = new_interpreter(tiny_model_path)
    for _ in range(3):
        trained.get_signature_runner("train")(x=x, y=y)
    logits_trained = trained.get_signature_runner("infer")(x=x)["logits"]
    checkpoint = tmp_path / "device.ckpt"

    saved = trained.get_signature_runner("save")(checkpoint_path=path_tensor(checkpoint))

    assert saved["checkpoint_path"] == str(checkpoint).encode()
    assert checkpoint.stat().st_size > 0

    fresh = new_interpreter(tiny_model_path)
    infer = fresh.get_signature_runner("infer")
    assert not np.array_equal(infer(x=x)["logits"], logits_trained)  # the file's own weights first

    restored = fresh.get_signature_runner("restore")(checkpoint_path=path_tensor(checkpoint))

    hidden = tiny_build.settings.hidden
    assert {name: tensor.shape for name, tensor in restored.items()} == {
        "dense_1_kernel": (784, hidden),
        "dense_1_bias": (hidden,),
        "dense_2_kernel": (hidden, 10),
        "dense_2_bias": (10,),
    }
    assert np.array_equal(infer(x=x)["logits"], logits_trained)


def test_restore_from_a_missing_file_raises(tiny_model_path: Path, tmp_path: Path) -> None:
    restore = new_interpreter(tiny_model_path).get_signature_runner("restore")
    with pytest.raises(RuntimeError, match="TensorSliceReader"):
        restore(checkpoint_path=path_tensor(tmp_path / "missing.ckpt"))


def test_embedded_model_reproduces_the_tutorial() -> None:
    card = read_card(EMBEDDED_MODEL)

    assert card["sha256"] == hashlib.sha256(EMBEDDED_MODEL.read_bytes()).hexdigest()
    assert {"arch": "mlp", **card["settings"]} == BuildSettings().describe()
    assert card["tf_test_accuracy"] >= 0.85
    assert card["tflite_test_accuracy"] >= 0.85
    assert card["parity_max_abs_diff"] <= PARITY_TOLERANCE
    off = {
        epoch: card["losses"][epoch - 1]
        for epoch, reference in TUTORIAL_PRE_TRAINING.items()
        if abs(card["losses"][epoch - 1] - reference) > 0.10 * reference
    }
    assert not off, f"losses more than 10% off the tutorial's at epochs {off}"


def test_cli_build_model(tmp_path: Path) -> None:
    output = tmp_path / "m.tflite"

    status = main(
        ["build-model", "--epochs", "1", "--train-limit", "500", "--hidden", "8", "--output", str(output)]
    )

    assert status == 0
    assert output.stat().st_size > 0
    card = read_card(output)
    assert card["settings"]["hidden"] == 8
    assert card["settings"]["train_limit"] == 500
    assert len(card["losses"]) == 1
    assert card["sha256"] == hashlib.sha256(output.read_bytes()).hexdigest()
    assert output.with_suffix(".png").stat().st_size > 0
