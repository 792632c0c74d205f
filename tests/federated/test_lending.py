"""Interpreters lent to round participants that have none: the same weights as their own would give,
no residency churn, the device's files as they would be, unsaved weights spilled on give-back."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.data.spec import PartitionSpec
from service.federated.federation import Federation
from service.federated.local import LocalTraining
from service.federated.spec import RoundSpec
from service.fleet.record import SPILL
from tests.federated.conftest import DATASET

MODEL = "fashion_mnist"
TRAINING = LocalTraining(epochs=1, batch_size=20)
WAIT = 180.0
KEYS = ("mean_loss", "mean_local_accuracy", "samples", "finished")


def make(federation: Federation, prefix: str, count: int = 4) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(count)]
    federation.fleet.create_many(ids)
    federation.assign(DATASET, ids, PartitionSpec("iid", count, 40, 10, seed=1))
    return ids


def run(federation: Federation, ids: list[str], **spec: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"rounds": 2, "training": TRAINING, "seed": 7, "start_version": 0, **spec}
    started = federation.rounds.start(RoundSpec(MODEL, tuple(ids), **fields))
    view = federation.rounds.wait(str(started["id"]), WAIT)
    assert view["state"] == "succeeded", view
    return view


def test_saved_parts_borrow_and_match_own_interpreters(federation: Federation) -> None:
    lent_ids = own_ids = make(federation, "lent")
    activations = federation.fleet.residency.stats().activations
    saved = run(federation, lent_ids, device_weights="saved", local_accuracy=True)
    assert federation.fleet.residency.stats().activations == activations  # no interpreter of their own
    assert not any(federation.fleet.get(i).resident for i in lent_ids)
    trained = run(federation, own_ids, device_weights="trained", local_accuracy=True)
    assert all(federation.fleet.get(i).resident for i in own_ids)
    for a, b in zip(saved["rounds"], trained["rounds"], strict=True):
        assert [a[k] for k in KEYS] == [b[k] for k in KEYS]
    ours = federation.version_weights(MODEL, int(saved["version"]))
    theirs = federation.version_weights(MODEL, int(trained["version"]))
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name])
    for device_id in lent_ids:  # each saved its own checkpoint, which a new interpreter restores
        device = federation.fleet.get(device_id)
        assert device.checkpoint_path.is_file() and not (device.directory / SPILL).exists()
        assert device.read_record().train_steps == 8  # 2 runs x 2 rounds x 2 batches


def test_same_seed_same_weights_when_lent(federation: Federation) -> None:
    ids = make(federation, "again")
    first = run(federation, ids, device_weights="saved")
    second = run(federation, ids, device_weights="saved")
    a = federation.version_weights(MODEL, int(first["version"]))
    b = federation.version_weights(MODEL, int(second["version"]))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert [r["mean_loss"] for r in first["rounds"]] == [r["mean_loss"] for r in second["rounds"]]


def test_give_back_spills_unsaved_weights(federation: Federation) -> None:
    (device_id,) = make(federation, "spill", 1)
    device = federation.fleet.get(device_id)
    compiled = device.load()
    lent = federation.lending.take(compiled)
    assert device.adopt_weights(federation.versions.path(MODEL, 0), "version 0", lent)
    x = np.zeros((2, 28, 28), np.float32)
    y = np.eye(10, dtype=np.float32)[[1, 2]]
    device.run("train", {"x": x, "y": y}, source="round")
    expected = device.run("infer", {"x": x})
    device.give_back(lent)
    assert not device.resident and (device.directory / SPILL).is_file()
    again = device.run("infer", {"x": x})  # a new interpreter of its own restores the spill
    for name in expected:
        np.testing.assert_array_equal(again[name], expected[name])
    assert device.weights_changed
