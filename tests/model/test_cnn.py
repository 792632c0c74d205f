"""NIID-Bench's CNN through the build pipeline: parity, the four signatures in tf.lite.Interpreter, the
optimizer PyTorch's SGD defines (momentum, weight decay), momentum reset by ``restore``, the verifier."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from service.cli import main
from service.model.build import PARITY_TOLERANCE, SIGNATURES, BuildResult, BuildSettings, build
from service.model.cnn import LAYERS
from service.model.dataset import FashionMNIST, one_hot
from service.runtime.inspection import check_operators
from tests.interpreters import interpreter, weights_of

SETTINGS = BuildSettings(
    arch="cnn", epochs=1, batch_size=64, train_limit=3200, momentum=0.9, weight_decay=0.01
)


@pytest.fixture(scope="module")
def cnn(fashion_mnist: FashionMNIST) -> BuildResult:
    return build(fashion_mnist, SETTINGS)


@pytest.fixture(scope="module")
def batch(fashion_mnist: FashionMNIST) -> tuple[np.ndarray, np.ndarray]:
    return fashion_mnist.train_images[1000:1064], one_hot(fashion_mnist.train_labels[1000:1064], 10)


def reference_gradients(
    weights: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray
) -> dict[str, np.ndarray]:
    """The cross-entropy's gradients at ``weights``, from TensorFlow's own layers (not the module's)."""
    variables = {name: tf.Variable(value) for name, value in weights.items()}
    with tf.GradientTape() as tape:
        h = tf.reshape(tf.constant(x), [-1, 28, 28, 1])
        for layer in ("conv1", "conv2"):
            h = tf.nn.conv2d(h, variables[f"{layer}_kernel"], strides=1, padding="VALID")
            h = tf.nn.max_pool2d(
                tf.nn.relu(h + variables[f"{layer}_bias"]), ksize=2, strides=2, padding="VALID"
            )
        h = tf.keras.layers.Flatten()(h)
        for layer in ("fc1", "fc2"):
            h = tf.nn.relu(h @ variables[f"{layer}_kernel"] + variables[f"{layer}_bias"])
        logits = h @ variables["fc3_kernel"] + variables["fc3_bias"]
        loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=logits))
    grads = tape.gradient(loss, list(variables.values()))
    return {name: g.numpy() for name, g in zip(variables, grads, strict=True)}


def test_the_build_converts_within_parity_and_its_card_names_the_optimizer(cnn: BuildResult) -> None:
    assert cnn.parity_max_abs_diff <= PARITY_TOLERANCE
    card = cnn.card("cnn")
    assert cnn.settings.describe()["arch"] == "cnn" and "momentum" in cnn.settings.describe()
    assert card["optimizer"] == "SGD, momentum 0.9, weight decay 0.01"
    assert cnn.tflite_test_accuracy > 0.2  # 50 steps of batch 64: past chance (0.1), learning


def test_the_model_has_the_four_signatures_and_the_studys_layers(cnn: BuildResult, tmp_path: Path) -> None:
    made = interpreter(cnn.model)
    assert set(made.get_signature_list()) == {"train", "infer", "save", "restore", *SIGNATURES}
    settings = made.get_signature_runner("hyperparameters")()
    assert {k: float(v) for k, v in settings.items()} == pytest.approx(
        {"learning_rate": 0.01, "momentum": 0.9, "weight_decay": 0.01}
    )
    restored = weights_of(made, tmp_path / "w.ckpt")
    assert {name: value.shape for name, value in restored.items()} == {n: s for n, (s, _) in LAYERS.items()}


def test_train_steps_follow_sgd_with_momentum_and_weight_decay(
    cnn: BuildResult, batch: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, y = batch
    made = interpreter(cnn.model)
    w0 = weights_of(made, tmp_path / "w0.ckpt")  # restore: the momentum starts at zero
    train = made.get_signature_runner("train")
    train(x=x, y=y)
    w1 = weights_of(made, tmp_path / "w1.ckpt")
    lr, momentum, decay = SETTINGS.learning_rate, SETTINGS.momentum, SETTINGS.weight_decay
    g0 = reference_gradients(w0, x, y)
    v1 = {n: g0[n] + decay * w0[n] for n in w0}
    for name in w0:
        np.testing.assert_allclose(w1[name], w0[name] - lr * v1[name], rtol=1e-4, atol=1e-6)
    # weights_of restored w1, which zeroed the momentum: train twice from a fresh copy instead
    again = interpreter(cnn.model)
    again.get_signature_runner("restore")(checkpoint_path=np.array(str(tmp_path / "w0.ckpt").encode()))
    for _ in range(2):
        again.get_signature_runner("train")(x=x, y=y)
    w2 = weights_of(again, tmp_path / "w2.ckpt")
    g1 = reference_gradients(w1, x, y)
    for name in w0:
        expected = w1[name] - lr * (momentum * v1[name] + g1[name] + decay * w1[name])
        np.testing.assert_allclose(w2[name], expected, rtol=1e-3, atol=1e-5)


def test_restore_resets_the_momentum_so_any_interpreter_trains_a_checkpoint_alike(
    cnn: BuildResult, batch: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, y = batch
    checkpoint = np.array(str(tmp_path / "device.ckpt").encode())
    used = interpreter(cnn.model)
    for _ in range(3):  # builds up momentum
        used.get_signature_runner("train")(x=x, y=y)
    used.get_signature_runner("save")(checkpoint_path=checkpoint)
    used.get_signature_runner("restore")(checkpoint_path=checkpoint)
    fresh = interpreter(cnn.model)
    fresh.get_signature_runner("restore")(checkpoint_path=checkpoint)
    for made in (used, fresh):
        made.get_signature_runner("train")(x=x, y=y)
    after_used, after_fresh = (weights_of(m, tmp_path / f"{i}.ckpt") for i, m in enumerate((used, fresh)))
    for name in after_used:
        assert np.array_equal(after_used[name], after_fresh[name]), name


def test_the_service_accepts_the_model(cnn: BuildResult) -> None:
    check_operators("cnn", cnn.model)  # the structural checks and the verifier every added model passes


def test_cli_builds_the_cnn(tmp_path: Path) -> None:
    """``fleet model build`` (the issue's name for ``fleet build-model``, which test_build runs)."""
    output = tmp_path / "cnn.tflite"
    status = main(
        ["model", "build", "--arch", "cnn", "--epochs", "1", "--train-limit", "128", "--output", str(output)]
    )
    assert status == 0 and output.stat().st_size > 0
    assert '"arch": "cnn"' in output.with_suffix(".json").read_text()


def test_a_fleet_serves_the_cnn_uploaded_over_http(
    cnn: BuildResult, batch: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    from service.api import create_app
    from service.config import Settings
    from tests.local import local_client

    x, y = batch
    body = io.BytesIO()
    np.savez(body, x=x, y=y)
    npz = {"content-type": "application/x-npz", "accept": "application/x-npz"}
    with local_client(create_app(Settings(data_dir=tmp_path / "data", allow_model_upload=True))) as client:
        assert client.put("/v1/models/cnn", content=cnn.model).status_code in (200, 201)
        assert client.post("/v1/devices", json={"id": "phone", "model": "cnn"}).status_code == 201
        losses = [
            float(
                np.load(
                    io.BytesIO(
                        client.post("/v1/devices/phone/train", content=body.getvalue(), headers=npz).content
                    )
                )["loss"]
            )
            for _ in range(3)
        ]
        assert losses[-1] < losses[0]
        assert client.post("/v1/devices/phone/save").status_code == 200
        assert client.post("/v1/devices/phone/restore").status_code == 200
        assert client.get("/v1/devices/phone").json()["train_steps"] == 3
