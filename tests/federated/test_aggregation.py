"""Aggregation against sums worked out by hand: the weighted mean, FedAvg, FedAvgM and FedAdam."""

from __future__ import annotations

import gc
import math
import tracemalloc
import weakref

import numpy as np
import pytest

from service.errors import InvalidRequest, InvalidTensor, NotFinite
from service.federated.aggregation import ServerOptimizer, WeightedMean
from service.federated.checkpoints import Weights


def update(kernel: list[float], bias: float, step: int) -> Weights:
    return {
        "kernel": np.array(kernel, np.float32),
        "bias": np.array([bias], np.float32),
        "step": np.array(step, np.int64),
    }


def test_weighted_mean_of_three_updates() -> None:
    mean = WeightedMean()
    mean.add(update([1.0, 2.0], 8.0, step=7), samples=1)
    mean.add(update([3.0, 6.0], 0.0, step=9), samples=2)
    mean.add(update([5.0, 10.0], 4.0, step=11), samples=5)
    result = mean.result()
    assert (mean.count, mean.samples) == (3, 8)
    # kernel: (1*1 + 2*3 + 5*5) / 8 = 4, (1*2 + 2*6 + 5*10) / 8 = 8; bias: (8 + 0 + 20) / 8 = 3.5
    np.testing.assert_array_equal(result["kernel"], [4.0, 8.0])
    np.testing.assert_array_equal(result["bias"], [3.5])
    assert result["step"] == 7  # not averaged: the first update's
    assert {name: value.dtype for name, value in result.items()} == {
        "bias": np.float32,
        "kernel": np.float32,
        "step": np.int64,
    }
    assert list(result) == ["bias", "kernel", "step"]


def test_the_mean_of_identical_updates_is_exactly_that_update() -> None:
    """float64 sums: float32 values times small counts are exact, so nothing is lost to rounding."""
    weights = {"w": np.random.default_rng(0).standard_normal(10_000).astype(np.float32)}
    mean = WeightedMean()
    for samples in (3, 7, 11, 13, 17, 19, 23):
        mean.add(weights, samples)
    np.testing.assert_array_equal(mean.result()["w"], weights["w"])


def test_the_mean_keeps_no_reference_to_the_updates() -> None:
    first = update([1.0, 2.0], 1.0, step=3)
    second = update([3.0, 4.0], 3.0, step=5)
    mean = WeightedMean()
    mean.add(first, samples=1)
    mean.add(second, samples=1)
    expected = mean.result()
    refs = [weakref.ref(array) for array in (*first.values(), *second.values())]
    for array in (*first.values(), *second.values()):
        array[...] = 100  # changing an update after it was added changes nothing
    for name, value in mean.result().items():
        np.testing.assert_array_equal(value, expected[name])
    del first, second, array
    gc.collect()
    assert [ref() for ref in refs] == [None] * len(refs)


def test_the_mean_takes_the_memory_of_one_model_however_many_updates() -> None:
    rng = np.random.default_rng(1)
    mean = WeightedMean()
    tracemalloc.start()
    try:
        sizes = []
        for i in range(40):
            mean.add({"w": rng.standard_normal(50_000).astype(np.float32)}, samples=i + 1)
            sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    # One float64 sum is 400 KB; forty float32 updates kept would be 8 MB.
    assert sizes[-1] < 1_000_000
    assert sizes[-1] - sizes[1] < 50_000


def test_an_update_that_is_refused_leaves_the_mean_as_it_was() -> None:
    mean = WeightedMean()
    mean.add(update([1.0, 2.0], 1.0, step=3), samples=2)
    with pytest.raises(InvalidTensor, match=r"tensor 'kernel' has shape \[3\], not \[2\]"):
        mean.add(update([1.0, 2.0, 3.0], 1.0, step=3), samples=1)
    with pytest.raises(InvalidTensor, match="tensor 'bias' is missing"):
        mean.add({"kernel": np.zeros(2, np.float32), "step": np.array(1)}, samples=1)
    with pytest.raises(InvalidTensor, match="'kernel' is float64, not float32"):
        mean.add({**update([1.0, 2.0], 1.0, step=3), "kernel": np.zeros(2)}, samples=1)
    with pytest.raises(InvalidTensor, match="'bias' has non-finite values"):
        mean.add(update([50.0, 50.0], math.nan, step=3), samples=1)
    for samples in (0, -1, True, 1.5):
        with pytest.raises(InvalidRequest, match="samples"):
            mean.add(update([50.0, 50.0], 50.0, step=3), samples=samples)  # type: ignore[arg-type]
    assert (mean.count, mean.samples) == (1, 2)
    np.testing.assert_array_equal(mean.result()["kernel"], [1.0, 2.0])


def test_there_is_no_mean_of_nothing() -> None:
    with pytest.raises(InvalidRequest, match="no update"):
        WeightedMean().result()
    with pytest.raises(InvalidTensor, match="no tensors"):
        WeightedMean().add({}, samples=1)


def test_fedavg_moves_the_global_weights_towards_the_client_mean() -> None:
    rng = np.random.default_rng(2)
    global_weights = {"w": rng.standard_normal(1000).astype(np.float32), "step": np.array(4)}
    client_mean = {"w": rng.standard_normal(1000).astype(np.float32), "step": np.array(9)}
    new, state = ServerOptimizer.defaults("fedavg").step(global_weights, client_mean, {})
    np.testing.assert_array_equal(new["w"], client_mean["w"])  # server_lr 1: plain FedAvg
    assert new["step"] == 9 and state == {}
    half, _ = ServerOptimizer("fedavg", learning_rate=0.5).step(
        {"w": np.array([1.0, 2.0], np.float32)}, {"w": np.array([3.0, -2.0], np.float32)}, {}
    )
    np.testing.assert_array_equal(half["w"], [2.0, 0.0])
    assert half["w"].dtype == np.float32


def test_fedavgm_over_two_steps() -> None:
    optimizer = ServerOptimizer("fedavgm", learning_rate=0.5, momentum=0.5)
    g0 = {"w": np.array([1.0, 0.0], np.float32), "step": np.array(1, np.int32)}
    # Round 1: delta = [2, 4]; m = 0.5 * 0 + delta = [2, 4]; new = g0 + 0.5 * m = [2, 2].
    g1, s1 = optimizer.step(g0, {"w": np.array([3.0, 4.0], np.float32), "step": np.array(2, np.int32)}, {})
    np.testing.assert_array_equal(g1["w"], [2.0, 2.0])
    assert list(s1) == ["m/w"]
    np.testing.assert_array_equal(s1["m/w"], [2.0, 4.0])
    # Round 2: delta = [4, -2] - [2, 2] = [2, -4]; m = 0.5 * [2, 4] + [2, -4] = [3, -2]; new = [3.5, 1].
    g2, s2 = optimizer.step(g1, {"w": np.array([4.0, -2.0], np.float32), "step": np.array(3, np.int32)}, s1)
    np.testing.assert_array_equal(g2["w"], [3.5, 1.0])
    np.testing.assert_array_equal(s2["m/w"], [3.0, -2.0])
    assert g2["step"] == 3 and g2["step"].dtype == np.int32  # not stepped: the client mean's
    assert "m/step" not in s2


def test_fedadam_over_two_steps() -> None:
    lr, b1, b2, tau = 0.01, 0.9, 0.99, 1e-3
    optimizer = ServerOptimizer("fedadam", learning_rate=lr, beta1=b1, beta2=b2, tau=tau)
    x0, c1, c2 = 1.0, 3.0, 0.5
    g1, s1 = optimizer.step({"w": np.array([x0])}, {"w": np.array([c1])}, {})
    d1 = c1 - x0
    m1 = (1 - b1) * d1  # 0.2
    v1 = (1 - b2) * d1**2  # 0.04
    x1 = x0 + lr * m1 / (math.sqrt(v1) + tau)  # 1 + 0.01 * 0.2 / 0.201
    assert sorted(s1) == ["m/w", "v/w"]
    np.testing.assert_allclose([s1["m/w"][0], s1["v/w"][0], g1["w"][0]], [m1, v1, x1], rtol=1e-15)
    g2, s2 = optimizer.step(g1, {"w": np.array([c2])}, s1)
    d2 = c2 - x1
    m2 = b1 * m1 + (1 - b1) * d2
    v2 = b2 * v1 + (1 - b2) * d2**2
    x2 = x1 + lr * m2 / (math.sqrt(v2) + tau)
    np.testing.assert_allclose([s2["m/w"][0], s2["v/w"][0], g2["w"][0]], [m2, v2, x2], rtol=1e-15)
    assert d2 < 0 and x2 > x1  # the second delta points down, but the first's momentum still moves up


def test_a_step_changes_none_of_its_inputs() -> None:
    global_weights = {"w": np.array([1.0, 2.0], np.float32)}
    client_mean = {"w": np.array([2.0, 4.0], np.float32)}
    state = {"m/w": np.array([0.5, 0.5]), "v/w": np.array([1.0, 1.0])}
    copies = [{k: v.copy() for k, v in d.items()} for d in (global_weights, client_mean, state)]
    ServerOptimizer.defaults("fedadam").step(global_weights, client_mean, state)
    for given, copy in zip((global_weights, client_mean, state), copies, strict=True):
        for name in copy:
            np.testing.assert_array_equal(given[name], copy[name])


def test_a_client_mean_or_a_state_that_does_not_fit_is_refused() -> None:
    optimizer = ServerOptimizer.defaults("fedadam")
    weights = {"w": np.zeros(2, np.float32)}
    with pytest.raises(InvalidTensor, match=r"'w' has shape \[3\], not \[2\]"):
        optimizer.step(weights, {"w": np.zeros(3, np.float32)}, {})
    with pytest.raises(InvalidRequest, match="no 'v/w'"):
        optimizer.step(weights, weights, {"m/w": np.zeros(2)})
    with pytest.raises(InvalidRequest, match="'m/other' is not"):
        optimizer.step(weights, weights, {"m/w": np.zeros(2), "v/w": np.zeros(2), "m/other": np.zeros(1)})
    with pytest.raises(InvalidRequest, match=r"'v/w' is float64 \[3\]"):
        optimizer.step(weights, weights, {"m/w": np.zeros(2), "v/w": np.zeros(3)})
    with pytest.raises(InvalidRequest, match="fedavgm state"):
        ServerOptimizer.defaults("fedavgm").step(weights, weights, {"m/w": np.zeros(2), "v/w": np.zeros(2)})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "fedsgd"),
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
        optimizer.step({"w": np.zeros(1)}, {"w": np.ones(1)}, {})


@pytest.mark.parametrize("kind", ["fedavg", "fedavgm"])
def test_a_step_whose_next_weights_are_not_finite_is_refused(kind: str) -> None:
    """Finite inputs, within every bound, can still overflow float32: no such version is made.
    (FedAdam's step is at most about ``learning_rate`` per weight, so it cannot.)"""
    start = update([1.0, 2.0], 0.5, 1)
    huge = update([3e38, 2.0], 0.5, 2)
    optimizer = ServerOptimizer(kind=kind, learning_rate=100.0)  # type: ignore[arg-type]
    with pytest.raises(NotFinite, match="'kernel' holds NaN or infinity"):
        optimizer.step(start, huge, {})
    fine, _ = optimizer.step(start, update([1.5, 2.0], 0.5, 2), {})
    assert all(np.isfinite(value).all() for value in fine.values())


def test_defaults_are_the_papers() -> None:
    assert ServerOptimizer.defaults("fedavg") == ServerOptimizer("fedavg", learning_rate=1.0)
    fedavgm = ServerOptimizer.defaults("fedavgm")
    assert (fedavgm.learning_rate, fedavgm.momentum) == (1.0, 0.9)
    fedadam = ServerOptimizer.defaults("fedadam")
    assert (fedadam.learning_rate, fedadam.beta1, fedadam.beta2, fedadam.tau) == (0.01, 0.9, 0.99, 1e-3)
    for kind in ("fedavg", "fedavgm", "fedadam"):
        assert ServerOptimizer.defaults(kind).check().kind == kind
    assert ServerOptimizer(momentum=0.0, beta1=0.0, beta2=0.0).check()  # 0 is allowed
    with pytest.raises(InvalidRequest, match=r"^kind must"):
        ServerOptimizer.defaults("fedyogi")


def test_the_same_inputs_in_the_same_order_give_the_same_bits() -> None:
    def rounds() -> list[bytes]:
        rng = np.random.default_rng(3)
        weights: Weights = {
            "a": rng.standard_normal((30, 20)).astype(np.float32),
            "b": rng.standard_normal(20),
        }
        state: Weights = {}
        out = []
        for kind in ("fedadam", "fedavgm", "fedavg"):
            optimizer = ServerOptimizer.defaults(kind)
            state = {}
            for _ in range(3):
                mean = WeightedMean()
                for samples in (5, 1, 30):
                    noisy = {k: (v + rng.normal(size=v.shape)).astype(v.dtype) for k, v in weights.items()}
                    mean.add(noisy, samples)
                weights, state = optimizer.step(weights, mean.result(), state)
                out += [v.tobytes() for v in (*weights.values(), *state.values())]
        return out

    assert rounds() == rounds()
