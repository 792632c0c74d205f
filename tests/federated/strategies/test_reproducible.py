"""Every strategy, run twice with the same seed over the same devices and data, gives identical metrics
and identical global weights (issue 25: reproducible runs)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.data.spec import PartitionSpec
from service.federated.federation import Federation
from service.federated.local import LocalTraining
from service.federated.spec import Evaluation, RoundSpec
from service.federated.strategies import STRATEGIES
from tests.federated.strategies.conftest import DATASET, MODEL
from tests.federated.strategies.helpers import run

SYNCHRONOUS = sorted(name for name, cls in STRATEGIES.items() if not getattr(cls, "asynchronous", False))
METRICS = ("participants", "finished", "samples", "mean_loss", "global_accuracy", "mean_local_accuracy")


@pytest.fixture(scope="module")
def devices(strategy_federation: Federation) -> list[str]:
    ids = [f"twin-{i}" for i in range(5)]
    strategy_federation.fleet.create_many(ids, model=MODEL)
    strategy_federation.assign(DATASET, ids, PartitionSpec("dirichlet", 5, 40, 10, alpha=0.3, seed=6))
    return ids


@pytest.mark.parametrize("strategy", SYNCHRONOUS)
def test_two_runs_with_one_seed_give_identical_metrics(
    strategy_federation: Federation, devices: list[str], strategy: str
) -> None:
    spec = RoundSpec(
        MODEL,
        tuple(devices),
        rounds=2,
        participants=4,
        training=LocalTraining(1, 16),
        aggregation=strategy,
        seed=11,
        start_version=0,
        evaluation=Evaluation(DATASET),
    )

    def once() -> tuple[list[list[Any]], dict[str, np.ndarray]]:
        view = run(strategy_federation, spec)
        rounds: list[dict[str, Any]] = view["rounds"]  # type: ignore[assignment]
        weights = strategy_federation.version_weights(MODEL, int(view["version"]))  # type: ignore[call-overload]
        return [[r[k] for k in METRICS] for r in rounds], weights

    (first, first_weights), (second, second_weights) = once(), once()
    assert first == second
    assert first_weights.keys() == second_weights.keys()
    for name, value in first_weights.items():
        np.testing.assert_array_equal(value, second_weights[name])
