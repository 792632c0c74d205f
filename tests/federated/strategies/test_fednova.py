"""FedNova's normalized averaging worked out by hand: two updates of different local steps, with the
model's momentum 0 and 0.9; with equal steps it is FedAvg's mean, in a run over a built model too."""

from __future__ import annotations

import numpy as np
import pytest

from service.data.spec import PartitionSpec
from service.errors import InvalidRequest
from service.federated.checkpoints import Weights
from service.federated.federation import Federation
from service.federated.local import LocalTraining
from service.federated.spec import RoundSpec
from service.federated.strategies import make
from service.federated.strategies.fednova import NovaCollector, normalizer
from tests.federated.strategies.conftest import DATASET, MODEL
from tests.federated.strategies.helpers import run
from tests.federated.strategies.poisoned import context, update


def nova(global_weights: Weights, updates: list[tuple[Weights, int, int]], momentum: float) -> Weights:
    """The next global weights from (weights, samples, steps) updates."""
    strategy = make("fednova")
    round_context = context(momentum)
    collected = strategy.collector(round_context)
    for i, (weights, samples, steps) in enumerate(updates):
        collected.add(update(f"d{i}", weights, samples, steps))
    new, state = strategy.combine(global_weights, collected, {}, round_context)
    assert state == {}
    return new


def test_the_normalizer_sums_each_steps_momentum() -> None:
    assert normalizer(7, 0.0) == 7  # plain SGD: a_i = tau_i
    assert normalizer(1, 0.9) == pytest.approx(1.0, rel=1e-15)
    assert normalizer(2, 0.9) == pytest.approx(1.0 + 1.9, rel=1e-15)  # (2 - 0.9 * 0.19 / 0.1) / 0.1
    assert normalizer(3, 0.5) == pytest.approx(1.0 + 1.5 + 1.75, rel=1e-15)


def test_two_updates_of_different_steps_without_momentum() -> None:
    x = {"w": np.array([1.0, 2.0]), "step": np.array(4)}
    y1 = {"w": np.array([0.0, 2.0]), "step": np.array(5)}  # 1 sample, 1 step: a = 1, d = [1, 0]
    y2 = {"w": np.array([4.0, 0.0]), "step": np.array(6)}  # 3 samples, 3 steps: a = 3, d = [-1, 2/3]
    # p = [1/4, 3/4]: d = [1/4 - 3/4, 1/2] = [-0.5, 0.5]; tau_eff = 1/4 + 9/4 = 2.5;
    # x - 2.5 * d = [2.25, 0.75] (FedAvg's mean would be [3, 0.5]).
    new = nova(x, [(y1, 1, 1), (y2, 3, 3)], momentum=0.0)
    np.testing.assert_allclose(new["w"], [2.25, 0.75], rtol=1e-15)
    assert new["step"] == 5  # not a floating tensor: the first update's


def test_two_updates_of_different_steps_with_momentum() -> None:
    x = {"w": np.array([1.0])}
    y1 = {"w": np.array([0.0])}  # 1 step: a = 1 whatever rho: d = 1
    y2 = {"w": np.array([3.9])}  # 2 steps, rho 0.9: a = 2.9: d = -2.9 / 2.9 = -1
    # p = [1/2, 1/2]: d = 0, so x stays (tau_eff = 1.95 times nothing).
    np.testing.assert_allclose(nova(x, [(y1, 1, 1), (y2, 1, 2)], momentum=0.9)["w"], [1.0], atol=1e-15)
    # Without momentum a = 2 for y2: d2 = -1.45; d = (1 - 1.45) / 2 = -0.225; tau_eff = 1.5: 1 + 0.3375.
    np.testing.assert_allclose(nova(x, [(y1, 1, 1), (y2, 1, 2)], momentum=0.0)["w"], [1.3375], rtol=1e-15)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_with_equal_steps_it_is_fedavg(momentum: float) -> None:
    rng = np.random.default_rng(4)
    x = {"w": rng.standard_normal((8, 5)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)}
    updates = [
        ({k: (v + rng.normal(0, 0.1, v.shape)).astype(np.float32) for k, v in x.items()}, n, 7)
        for n in (3, 10, 1, 25)
    ]
    fedavg = make("fedavg")
    collected = fedavg.collector(context())
    for i, (weights, samples, _) in enumerate(updates):
        collected.add(update(f"d{i}", weights, samples), rounds_late=2 if i == 3 else 0)
    expected, _ = fedavg.combine(x, collected, {}, context())
    strategy = make("fednova")
    nova_collected = strategy.collector(context(momentum))
    for i, (weights, samples, steps) in enumerate(updates):
        nova_collected.add(update(f"d{i}", weights, samples, steps), rounds_late=2 if i == 3 else 0)
    new, _ = strategy.combine(x, nova_collected, {}, context(momentum))
    for name in x:
        assert new[name].dtype == np.float32
        np.testing.assert_allclose(new[name], expected[name], rtol=1e-5, atol=1e-6)


def test_updates_and_momenta_it_cannot_normalize_by_are_refused() -> None:
    collected = NovaCollector(0.9)
    with pytest.raises(InvalidRequest, match="participant 'd' took 0"):
        collected.add(update("d", {"w": np.zeros(1)}, steps=0))
    assert collected.count == 0
    for momentum in (1.0, -0.1, float("nan")):
        with pytest.raises(InvalidRequest, match="fednova needs the model's local momentum in"):
            make("fednova").collector(context(momentum))
    assert make("fednova").signatures == ("train", "hyperparameters")


def test_a_run_with_equal_local_steps_makes_fedavgs_version(strategy_federation: Federation) -> None:
    """Over the MLP (momentum 0): devices of 40 samples take 4 steps each, and FedNova's version is
    FedAvg's; with devices of 40 and 80 samples (4 and 8 steps) it is not."""
    federation = strategy_federation
    even, uneven = [f"nova-{i}" for i in range(3)], [f"nova-big-{i}" for i in range(2)]
    federation.fleet.create_many(even + uneven, model=MODEL)
    federation.assign(DATASET, even, PartitionSpec("iid", 3, 40, 10, seed=2))
    federation.assign(DATASET, uneven, PartitionSpec("iid", 2, 80, 10, seed=3))

    def version(aggregation: str, ids: list[str]) -> Weights:
        spec = RoundSpec(
            MODEL,
            tuple(ids),
            training=LocalTraining(1, 10),
            aggregation=aggregation,
            start_version=0,
            local_accuracy=False,
        )
        view = run(federation, spec)
        return federation.version_weights(MODEL, int(view["version"]))  # type: ignore[call-overload]

    fedavg, fednova = version("fedavg", even), version("fednova", even)
    for name in fedavg:
        np.testing.assert_allclose(fednova[name], fedavg[name], rtol=1e-5, atol=1e-6)
    mixed = [*even[:1], *uneven]
    fedavg, fednova = version("fedavg", mixed), version("fednova", mixed)
    assert max(float(np.max(np.abs(fednova[k] - fedavg[k]))) for k in fedavg) > 1e-4
