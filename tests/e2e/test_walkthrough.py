"""The README walkthrough and the tutorial's rules, against a real server over HTTP."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.client import FleetClient
from service.errors import NoCheckpoint
from service.server_process import ServerProcess

Batch = tuple[np.ndarray, np.ndarray]


def new_id() -> str:
    return f"dev-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("binary", [True, False], ids=["npz", "json"])
def test_walkthrough(server: ServerProcess, binary: bool, fashion_mnist, train_batch: Batch) -> None:
    """Create a device, train a few batches, save, restart, restore, infer."""
    with FleetClient(server.url, binary=binary) as client:
        device = client.create_device(new_id())["id"]
        images, labels = fashion_mnist.train_images, np.eye(10, dtype=np.float32)[fashion_mnist.train_labels]
        losses = [
            float(client.train(device, x=images[i : i + 100], y=labels[i : i + 100])["loss"])
            for i in range(0, 500, 100)
        ]
        assert all(np.isfinite(losses))
        client.save(device)
        after_save = client.infer(device, x=train_batch[0])
        client.train(device, x=train_batch[0], y=train_batch[1])  # progress that is never saved
        info = client.restart(device)
        assert info["resident"] is False and info["has_checkpoint"] is True
        client.restore(device)
        after_restore = client.infer(device, x=train_batch[0])
        np.testing.assert_array_equal(after_restore["logits"], after_save["logits"])
        np.testing.assert_allclose(after_restore["output"].sum(axis=1), 1.0, rtol=1e-5)
        info = client.device(device)
        assert info["train_steps"] == 6 and info["checkpoint_bytes"] > 0 and info["resident"] is True


def test_restart_alone_restores_the_checkpoint(client: FleetClient, train_batch: Batch) -> None:
    device = client.create_device()["id"]
    client.train(device, x=train_batch[0], y=train_batch[1])
    client.save(device)
    saved = client.infer(device, x=train_batch[0])["logits"]
    client.train(device, x=train_batch[0], y=train_batch[1])
    client.restart(device)
    np.testing.assert_array_equal(client.infer(device, x=train_batch[0])["logits"], saved)


def test_reset_gives_back_the_baseline(client: FleetClient, train_batch: Batch) -> None:
    baseline = client.infer(client.create_device()["id"], x=train_batch[0])["logits"]
    device = client.create_device()["id"]
    for _ in range(3):
        client.train(device, x=train_batch[0], y=train_batch[1])
    client.save(device)
    assert not np.array_equal(client.infer(device, x=train_batch[0])["logits"], baseline)
    info = client.reset(device)
    assert info["has_checkpoint"] is False and info["train_steps"] == 0
    np.testing.assert_array_equal(client.infer(device, x=train_batch[0])["logits"], baseline)
    with pytest.raises(NoCheckpoint):
        client.restore(device)


def test_devices_trained_differently_stay_independent(client: FleetClient, fashion_mnist) -> None:
    a, b = client.create_device()["id"], client.create_device()["id"]
    probe = fashion_mnist.test_images[:50]
    labels = np.eye(10, dtype=np.float32)[fashion_mnist.train_labels]
    shoes = np.isin(fashion_mnist.train_labels, [5, 7, 9])
    for _ in range(3):
        client.train(a, x=fashion_mnist.train_images[shoes][:100], y=labels[shoes][:100])
        client.train(b, x=fashion_mnist.train_images[~shoes][:100], y=labels[~shoes][:100])
    client.save(a)
    a_logits = client.infer(a, x=probe)["logits"]
    b_logits = client.infer(b, x=probe)["logits"]
    assert not np.array_equal(a_logits, b_logits)
    client.train(b, x=fashion_mnist.train_images[:100], y=labels[:100])
    client.restart(b)
    np.testing.assert_array_equal(client.infer(a, x=probe)["logits"], a_logits)
    assert client.device(b)["has_checkpoint"] is False


def test_concurrent_train_calls_on_one_device_all_count(server: ServerProcess, train_batch: Batch) -> None:
    with FleetClient(server.url) as client:
        device = client.create_device()["id"]

    def train_five(_: int) -> list[float]:
        with FleetClient(server.url) as own:
            return [float(own.train(device, x=train_batch[0], y=train_batch[1])["loss"]) for _ in range(5)]

    with ThreadPoolExecutor(8) as pool:
        losses = [loss for batch in pool.map(train_five, range(8)) for loss in batch]
    assert len(losses) == 40 and all(np.isfinite(losses))
    with FleetClient(server.url) as client:
        assert client.device(device)["train_steps"] == 40


def test_models_describe_signatures_from_the_interpreter(client: FleetClient) -> None:
    (model,) = [m for m in client.models() if m["name"] == "fashion_mnist"]
    signatures = {s["name"]: s for s in model["signatures"]}
    assert set(signatures) == {
        "train",
        "infer",
        "save",
        "restore",
        "train_prox",
        "train_scaffold",
        "hyperparameters",
    }
    assert signatures["train"]["inputs"] == [
        {"name": "x", "dtype": "float32", "shape": [-1, 28, 28]},
        {"name": "y", "dtype": "float32", "shape": [-1, 10]},
    ]
    assert signatures["train"]["outputs"] == [{"name": "loss", "dtype": "float32", "shape": []}]
    assert {o["name"] for o in signatures["infer"]["outputs"]} == {"output", "logits"}
    assert signatures["save"]["inputs"] == [{"name": "checkpoint_path", "dtype": "string", "shape": []}]
