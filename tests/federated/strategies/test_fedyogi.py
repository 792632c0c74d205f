"""FedYogi's server step worked out by hand over two steps (v rising, then falling by less than
Adam's); Flower's defaults."""

from __future__ import annotations

import math

import numpy as np

from service.federated.strategies import make, server_defaults


def test_fedyogi_over_two_steps() -> None:
    lr, b1, b2, tau = 0.01, 0.9, 0.99, 1e-3
    strategy = make("fedyogi")
    x0, c1, c2 = 1.0, 3.0, 1.1
    g1, s1 = strategy.step({"w": np.array([x0])}, {"w": np.array([c1])}, {})
    d1 = c1 - x0  # 2
    m1 = (1 - b1) * d1  # 0.2
    v1 = 0.0 - (1 - b2) * d1**2 * -1.0  # sign(0 - 4) = -1: v rises to 0.04
    x1 = x0 + lr * m1 / (math.sqrt(v1) + tau)
    assert sorted(s1) == ["m/w", "v/w"]
    np.testing.assert_allclose([s1["m/w"][0], s1["v/w"][0], g1["w"][0]], [m1, v1, x1], rtol=1e-15)
    g2, s2 = strategy.step(g1, {"w": np.array([c2])}, s1)
    d2 = c2 - x1  # about 0.09: d2**2 < v1
    m2 = b1 * m1 + (1 - b1) * d2
    v2 = v1 - (1 - b2) * d2**2 * 1.0  # sign(0.04 - 0.0081) = +1: v falls by (1 - b2) * d2**2
    x2 = x1 + lr * m2 / (math.sqrt(v2) + tau)
    np.testing.assert_allclose([s2["m/w"][0], s2["v/w"][0], g2["w"][0]], [m2, v2, x2], rtol=1e-15)
    adam_v2 = b2 * v1 + (1 - b2) * d2**2
    assert adam_v2 < v2 < v1  # Yogi's v keeps more of the first step's size than Adam's


def test_fedyogi_defaults_are_flowers() -> None:
    fedyogi = server_defaults("fedyogi")
    assert (fedyogi.learning_rate, fedyogi.beta1, fedyogi.beta2, fedyogi.tau) == (0.01, 0.9, 0.99, 1e-3)
    assert make("fedyogi").server.check().kind == "fedyogi"
