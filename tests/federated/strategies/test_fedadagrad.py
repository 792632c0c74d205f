"""FedAdagrad's server step worked out by hand over two steps; Flower's defaults."""

from __future__ import annotations

import math

import numpy as np

from service.federated.strategies import make, server_defaults
from service.federated.strategies.base import ServerOptimizer


def test_fedadagrad_over_two_steps() -> None:
    """beta1 = 0 (the default): m is the delta itself; v sums the squared deltas and never shrinks."""
    lr, tau = 0.1, 1e-3
    strategy = make("fedadagrad")
    x0 = np.array([1.0, 0.0])
    # Step 1: delta = [2, 0]; m = [2, 0]; v = [4, 0]; x1 = x0 + 0.1 * [2 / (2 + 0.001), 0 / (0 + 0.001)].
    g1, s1 = strategy.step({"w": x0}, {"w": np.array([3.0, 0.0])}, {})
    x1 = [1.0 + lr * 2.0 / (2.0 + tau), 0.0]
    assert sorted(s1) == ["m/w", "v/w"]
    np.testing.assert_allclose(s1["m/w"], [2.0, 0.0], rtol=1e-15)
    np.testing.assert_allclose(s1["v/w"], [4.0, 0.0], rtol=1e-15)
    np.testing.assert_allclose(g1["w"], x1, rtol=1e-15)
    # Step 2: aggregate [0.5, 0.3]: delta = [0.5 - x1[0], 0.3]; v = [4 + d^2, 0.09].
    g2, s2 = strategy.step(g1, {"w": np.array([0.5, 0.3])}, s1)
    d2 = [0.5 - x1[0], 0.3]
    v2 = [4.0 + d2[0] ** 2, 0.09]
    x2 = [x1[i] + lr * d2[i] / (math.sqrt(v2[i]) + tau) for i in range(2)]
    np.testing.assert_allclose(s2["m/w"], d2, rtol=1e-15)
    np.testing.assert_allclose(s2["v/w"], v2, rtol=1e-15)
    np.testing.assert_allclose(g2["w"], x2, rtol=1e-15)
    # The first weight's step shrank (its v holds step 1's 4); the second's is about lr, v fresh.
    assert abs(x2[0] - x1[0]) < 0.05 < abs(x2[1] - x1[1])


def test_fedadagrad_with_server_momentum() -> None:
    lr, b1, tau = 0.1, 0.5, 1e-3
    strategy = make("fedadagrad", ServerOptimizer("fedadagrad", learning_rate=lr, beta1=b1, tau=tau))
    g1, s1 = strategy.step({"w": np.array([0.0])}, {"w": np.array([4.0])}, {})
    # m = 0.5 * 4 = 2; v = 16; x1 = 0.1 * 2 / (4 + 0.001)
    np.testing.assert_allclose([s1["m/w"][0], s1["v/w"][0]], [2.0, 16.0], rtol=1e-15)
    x1 = lr * 2.0 / (4.0 + tau)
    np.testing.assert_allclose(g1["w"], [x1], rtol=1e-15)
    g2, s2 = strategy.step(g1, {"w": np.array([x1 - 2.0])}, s1)
    # delta = -2: m = 0.5 * 2 + 0.5 * -2 = 0; v = 16 + 4 = 20; no move.
    np.testing.assert_allclose([s2["m/w"][0], s2["v/w"][0]], [0.0, 20.0], atol=1e-15)
    np.testing.assert_allclose(g2["w"], [x1], rtol=1e-15)


def test_fedadagrad_defaults_are_flowers() -> None:
    fedadagrad = server_defaults("fedadagrad")
    assert (fedadagrad.learning_rate, fedadagrad.beta1, fedadagrad.tau) == (0.1, 0.0, 1e-3)
    assert make("fedadagrad").server.check().kind == "fedadagrad"
