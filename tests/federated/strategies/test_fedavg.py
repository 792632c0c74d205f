"""FedAvg's server step worked out by hand, and what every strategy's step shares: its settings checked
(naming the field), no non-finite version made, and the same bits from the same inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.errors import InvalidRequest, NotFinite
from service.federated.aggregation import WeightedMean
from service.federated.checkpoints import Weights
from service.federated.strategies import make, server_defaults, strategy_class
from service.federated.strategies.base import ServerOptimizer, StrategySettings


def update(kernel: list[float], bias: float, step: int) -> Weights:
    return {
        "kernel": np.array(kernel, np.float32),
        "bias": np.array([bias], np.float32),
        "step": np.array(step, np.int64),
    }


def test_fedavg_moves_the_global_weights_towards_the_client_mean() -> None:
    rng = np.random.default_rng(2)
    global_weights = {"w": rng.standard_normal(1000).astype(np.float32), "step": np.array(4)}
    client_mean = {"w": rng.standard_normal(1000).astype(np.float32), "step": np.array(9)}
    new, state = make("fedavg").step(global_weights, client_mean, {})
    np.testing.assert_array_equal(new["w"], client_mean["w"])  # server_lr 1: plain FedAvg
    assert new["step"] == 9 and state == {}
    half, _ = make("fedavg", ServerOptimizer("fedavg", learning_rate=0.5)).step(
        {"w": np.array([1.0, 2.0], np.float32)}, {"w": np.array([3.0, -2.0], np.float32)}, {}
    )
    np.testing.assert_array_equal(half["w"], [2.0, 0.0])
    assert half["w"].dtype == np.float32


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("learning_rate", 0.0),
        ("learning_rate", -0.1),
        ("learning_rate", math.nan),
        ("learning_rate", math.inf),
        ("momentum", 1.0),
        ("momentum", -0.1),
        ("beta1", 1.0),
        ("beta1", -0.5),
        ("beta2", 1.5),
        ("beta2", math.nan),
        ("tau", 0.0),
        ("tau", -1e-3),
        ("tau", "0.1"),
        ("learning_rate", 1e38),  # a devices key's run would scale the shared model's weights by it
        ("learning_rate", 100.5),
        ("tau", 2.0),
        ("tau", 1e-12),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(field: str, value: object) -> None:
    optimizer = ServerOptimizer(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match=f"^{field} must"):
        optimizer.check()
    with pytest.raises(InvalidRequest, match=f"^{field} must"):
        make("fedavg", optimizer)
    unchecked = strategy_class("fedavg")(optimizer, StrategySettings())
    with pytest.raises(InvalidRequest, match=f"^{field} must"):
        unchecked.step({"w": np.zeros(1)}, {"w": np.ones(1)}, {})


def test_an_unknown_strategy_is_refused_naming_the_known_ones() -> None:
    for name in ("fedsgd", ""):
        with pytest.raises(InvalidRequest, match=r"unknown strategy .* choose one of fedavg, fedavgm"):
            make(name)
        with pytest.raises(InvalidRequest, match="unknown strategy"):
            server_defaults(name)


@pytest.mark.parametrize("kind", ["fedavg", "fedavgm"])
def test_a_step_whose_next_weights_are_not_finite_is_refused(kind: str) -> None:
    """Finite inputs, within every bound, can still overflow float32: no such version is made.
    (FedAdam's step is at most about ``learning_rate`` per weight, so it cannot.)"""
    start = update([1.0, 2.0], 0.5, 1)
    huge = update([3e38, 2.0], 0.5, 2)
    strategy = make(kind, ServerOptimizer(kind=kind, learning_rate=100.0))
    with pytest.raises(NotFinite, match="'kernel' holds NaN or infinity"):
        strategy.step(start, huge, {})
    fine, _ = strategy.step(start, update([1.5, 2.0], 0.5, 2), {})
    assert all(np.isfinite(value).all() for value in fine.values())


def test_fedavg_defaults_are_the_papers() -> None:
    assert server_defaults("fedavg") == ServerOptimizer("fedavg", learning_rate=1.0)
    assert make("fedavg").server.check().kind == "fedavg"
    assert ServerOptimizer(momentum=0.0, beta1=0.0, beta2=0.0).check()  # 0 is allowed


def test_the_same_inputs_in_the_same_order_give_the_same_bits() -> None:
    def rounds() -> list[bytes]:
        rng = np.random.default_rng(3)
        weights: Weights = {
            "a": rng.standard_normal((30, 20)).astype(np.float32),
            "b": rng.standard_normal(20),
        }
        out = []
        for kind in ("fedadam", "fedavgm", "fedavg", "fedadagrad", "fedyogi"):
            strategy = make(kind)
            state: Weights = {}
            for _ in range(3):
                mean = WeightedMean()
                for samples in (5, 1, 30):
                    noisy = {k: (v + rng.normal(size=v.shape)).astype(v.dtype) for k, v in weights.items()}
                    mean.add(noisy, samples)
                weights, state = strategy.step(weights, mean.result(), state)
                out += [v.tobytes() for v in (*weights.values(), *state.values())]
        return out

    assert rounds() == rounds()
