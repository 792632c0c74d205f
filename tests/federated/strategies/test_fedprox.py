"""FedProx: the model's ``train_prox`` step adds the proximal term's gradient, and rounds with a large
``mu`` keep participants nearer the global weights than FedAvg's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.data.spec import PartitionSpec
from service.errors import InvalidRequest
from service.federated.federation import Federation
from service.federated.local import LocalTraining
from service.federated.spec import RoundSpec
from service.federated.strategies import make
from service.federated.strategies.base import StrategySettings
from service.model.build import BuildResult
from service.model.dataset import FashionMNIST, one_hot
from tests.federated.strategies.conftest import DATASET, MODEL
from tests.federated.strategies.helpers import run
from tests.interpreters import interpreter, weights_of


def test_train_prox_adds_mu_times_the_distance_to_the_global_weights(
    strategy_model: BuildResult, fashion_mnist: FashionMNIST, tmp_path: Path
) -> None:
    """w' = w - lr * (grad + mu * (w - global)): against ``train`` from the same weights, the step
    differs by exactly lr * mu * (global - w); the loss answered is the plain one."""
    x, y = fashion_mnist.train_images[:32], one_hot(fashion_mnist.train_labels[:32], 10)
    plain, prox = interpreter(strategy_model.model), interpreter(strategy_model.model)
    start = weights_of(plain, tmp_path / "start")
    offset = {
        k: np.random.default_rng(1).normal(0, 0.1, v.shape).astype(np.float32) for k, v in start.items()
    }
    mu = 2.0
    plain_loss = plain.get_signature_runner("train")(x=x, y=y)["loss"]
    inputs = {f"global_{k}": start[k] + offset[k] for k in start}
    prox_loss = prox.get_signature_runner("train_prox")(x=x, y=y, mu=np.float32(mu), **inputs)["loss"]
    assert prox_loss == pytest.approx(float(plain_loss), rel=1e-6)
    after_plain, after_prox = weights_of(plain, tmp_path / "a"), weights_of(prox, tmp_path / "b")
    for name in start:
        expected = strategy_model.settings.learning_rate * mu * offset[name]
        np.testing.assert_allclose(after_prox[name] - after_plain[name], expected, atol=2e-6)


def test_a_large_mu_keeps_the_round_near_the_global_weights(strategy_federation: Federation) -> None:
    federation = strategy_federation
    ids = [f"prox-{i}" for i in range(3)]
    federation.fleet.create_many(ids, model=MODEL)
    federation.assign(DATASET, ids, PartitionSpec("iid", 3, 40, 10, seed=2))
    start = federation.version_weights(MODEL, 0)

    def moved(aggregation: str, mu: float) -> float:
        spec = RoundSpec(
            MODEL,
            tuple(ids),
            training=LocalTraining(2, 10),
            aggregation=aggregation,
            options=StrategySettings(proximal_mu=mu),
            start_version=0,
            local_accuracy=False,
        )
        view = run(federation, spec)
        assert view["spec"]["aggregation"] == aggregation  # type: ignore[index]
        new = federation.version_weights(MODEL, int(view["version"]))  # type: ignore[call-overload]
        return float(np.sqrt(sum(np.sum((new[k] - start[k]) ** 2) for k in start)))

    fedavg, near, zero = moved("fedavg", 0.0), moved("fedprox", 50.0), moved("fedprox", 0.0)
    assert zero == pytest.approx(fedavg, rel=1e-6)  # mu = 0 is FedAvg
    assert near < 0.6 * fedavg


def test_mu_is_checked() -> None:
    for bad in (-1.0, float("nan"), 1e9):
        with pytest.raises(InvalidRequest, match="proximal_mu"):
            make("fedprox", settings=StrategySettings(proximal_mu=bad))
