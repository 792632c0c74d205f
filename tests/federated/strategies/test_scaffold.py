"""SCAFFOLD: the model's ``train_scaffold`` step subtracts ``lr * (c - c_i)``; a participant keeps
``c_i+ = c_i - c + (x - y_i) / (K * lr)`` under its directory, for its run only; the server moves ``c`` by
the changes' sum over the run's devices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.data.spec import PartitionSpec
from service.errors import InvalidRequest
from service.federated.checkpoints import read_weights, write_weights
from service.federated.client_side import CONTROL_FILE, prepare, published_path
from service.federated.federation import Federation
from service.federated.local import LocalTraining
from service.federated.participants import Update
from service.federated.spec import RoundSpec
from service.federated.strategies import make
from service.federated.strategies.base import RoundContext
from service.federated.task import ClientTask
from service.model.build import BuildResult
from service.model.dataset import FashionMNIST, one_hot
from tests.federated.strategies.conftest import DATASET, MODEL
from tests.federated.strategies.helpers import run
from tests.interpreters import interpreter, weights_of


def test_train_scaffold_steps_then_subtracts_the_correction(
    strategy_model: BuildResult, fashion_mnist: FashionMNIST, tmp_path: Path
) -> None:
    x, y = fashion_mnist.train_images[:32], one_hot(fashion_mnist.train_labels[:32], 10)
    plain, corrected = interpreter(strategy_model.model), interpreter(strategy_model.model)
    start = weights_of(plain, tmp_path / "start")
    rng = np.random.default_rng(3)
    correction = {k: rng.normal(0, 1, v.shape).astype(np.float32) for k, v in start.items()}
    plain.get_signature_runner("train")(x=x, y=y)
    inputs = {f"correction_{k}": v for k, v in correction.items()}
    corrected.get_signature_runner("train_scaffold")(x=x, y=y, **inputs)
    after_plain, after = weights_of(plain, tmp_path / "a"), weights_of(corrected, tmp_path / "b")
    for name in start:
        expected = -strategy_model.settings.learning_rate * correction[name]
        np.testing.assert_allclose(after[name] - after_plain[name], expected, atol=2e-6)


def test_each_participant_keeps_its_control_variate_by_the_rule(
    strategy_federation: Federation, strategy_model: BuildResult
) -> None:
    """Round 1 of a run: c = c_i = 0, so c_i+ = (x - y_i) / (K * lr), kept under the run's ID."""
    federation = strategy_federation
    ids = [f"scaffold-{i}" for i in range(3)]
    federation.fleet.create_many(ids, model=MODEL)
    federation.assign(DATASET, ids, PartitionSpec("iid", 3, 40, 10, seed=4))
    spec = RoundSpec(
        MODEL,
        tuple(ids),
        training=LocalTraining(1, 10),
        aggregation="scaffold",
        start_version=0,
        local_accuracy=False,
    )
    view = run(federation, spec)
    x = federation.version_weights(MODEL, 0)
    steps = 4  # 40 samples, batches of 10
    rate = strategy_model.settings.learning_rate
    assert federation.hyperparameters(MODEL)["learning_rate"] == pytest.approx(rate)
    for device_id in ids:
        device = federation.fleet.get(device_id)
        outgoing = device.write_weights()
        y = read_weights(outgoing)
        outgoing.unlink()
        kept = read_weights(device.directory / CONTROL_FILE)
        assert {key.split("/", 1)[0] for key in kept} == {view["id"]}
        for name in x:
            expected = (x[name].astype(np.float64) - y[name]) / (steps * rate)
            np.testing.assert_allclose(kept[f"{view['id']}/{name}"], expected, rtol=1e-4, atol=1e-5)
        assert any(np.abs(v).max() > 0 for v in kept.values())
    published = list(published_path(federation.data_dir, f"{view['id']}-control-1").parent.glob("*.ckpt"))
    assert [p.name for p in published] == [f"{view['id']}-control-1.ckpt"]
    assert all(not np.any(v) for v in read_weights(published[0]).values())  # c starts at zero


def test_a_run_starts_from_zero_whatever_an_earlier_run_left(tmp_path: Path) -> None:
    server = {"w": np.ones(3, np.float32)}
    write_weights(tmp_path / CONTROL_FILE, {"aaaaaaaaaaaa/w": np.full(3, 5.0, np.float32)})
    for run_id in ("aaaaaaaaaaaa", "bbbbbbbbbbbb"):
        published = published_path(tmp_path, f"{run_id}-control-1")
        published.parent.mkdir(exist_ok=True)
        write_weights(published, server)
    fresh = prepare(
        ClientTask("train_scaffold", control="bbbbbbbbbbbb-control-1"), server, tmp_path, tmp_path
    )
    np.testing.assert_array_equal(fresh.inputs["correction_w"], np.ones(3))  # c - 0
    same_run = prepare(
        ClientTask("train_scaffold", control="aaaaaaaaaaaa-control-1"), server, tmp_path, tmp_path
    )
    np.testing.assert_array_equal(same_run.inputs["correction_w"], np.full(3, -4.0))  # c - c_i
    with pytest.raises(InvalidRequest, match="no round published"):
        prepare(ClientTask("train_scaffold", control="cccccccccccc-control-1"), server, tmp_path, tmp_path)
    with pytest.raises(InvalidRequest, match="not the name"):
        prepare(ClientTask("train_scaffold", control="../../etc/passwd"), server, tmp_path, tmp_path)


def test_the_server_moves_c_by_the_changes_over_the_population() -> None:
    strategy = make("scaffold")
    context = RoundContext(1, population=4, hyperparameters=dict, publish=lambda name, w: name)
    collected = strategy.collector(context)
    global_weights = {"w": np.array([0.0, 0.0], np.float32)}
    for device, (w, c, n) in enumerate((([1.0, 2.0], [4.0, 0.0], 1), ([3.0, 6.0], [0.0, 8.0], 3))):
        update = Update(
            f"d{device}",
            n,
            1,
            None,
            None,
            {"w": np.array(w, np.float32)},
            control={"w": np.array(c, np.float32)},
        )
        collected.add(update)
    state = {"c/w": np.array([1.0, 1.0])}
    weights, new_state = strategy.combine(global_weights, collected, state, context)
    np.testing.assert_array_equal(weights["w"], [2.5, 5.0])  # (1 * [1, 2] + 3 * [3, 6]) / 4
    np.testing.assert_array_equal(new_state["c/w"], [2.0, 3.0])  # [1, 1] + [4, 8] / 4
    with pytest.raises(Exception, match="control"):
        collected.add(Update("d9", 1, 1, None, None, {"w": np.zeros(2, np.float32)}))
