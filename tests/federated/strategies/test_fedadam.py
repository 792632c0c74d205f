"""FedAdam's adaptive server step worked out by hand over two steps; what a step refuses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.errors import InvalidRequest, InvalidTensor
from service.federated.strategies import make, server_defaults
from service.federated.strategies.base import ServerOptimizer


def test_fedadam_over_two_steps() -> None:
    lr, b1, b2, tau = 0.01, 0.9, 0.99, 1e-3
    strategy = make("fedadam", ServerOptimizer("fedadam", learning_rate=lr, beta1=b1, beta2=b2, tau=tau))
    x0, c1, c2 = 1.0, 3.0, 0.5
    g1, s1 = strategy.step({"w": np.array([x0])}, {"w": np.array([c1])}, {})
    d1 = c1 - x0
    m1 = (1 - b1) * d1  # 0.2
    v1 = (1 - b2) * d1**2  # 0.04
    x1 = x0 + lr * m1 / (math.sqrt(v1) + tau)  # 1 + 0.01 * 0.2 / 0.201
    assert sorted(s1) == ["m/w", "v/w"]
    np.testing.assert_allclose([s1["m/w"][0], s1["v/w"][0], g1["w"][0]], [m1, v1, x1], rtol=1e-15)
    g2, s2 = strategy.step(g1, {"w": np.array([c2])}, s1)
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
    make("fedadam").step(global_weights, client_mean, state)
    for given, copy in zip((global_weights, client_mean, state), copies, strict=True):
        for name in copy:
            np.testing.assert_array_equal(given[name], copy[name])


def test_a_client_mean_or_a_state_that_does_not_fit_is_refused() -> None:
    strategy = make("fedadam")
    weights = {"w": np.zeros(2, np.float32)}
    with pytest.raises(InvalidTensor, match=r"'w' has shape \[3\], not \[2\]"):
        strategy.step(weights, {"w": np.zeros(3, np.float32)}, {})
    with pytest.raises(InvalidRequest, match="no 'v/w'"):
        strategy.step(weights, weights, {"m/w": np.zeros(2)})
    with pytest.raises(InvalidRequest, match="'m/other' is not"):
        strategy.step(weights, weights, {"m/w": np.zeros(2), "v/w": np.zeros(2), "m/other": np.zeros(1)})
    with pytest.raises(InvalidRequest, match=r"'v/w' is float64 \[3\]"):
        strategy.step(weights, weights, {"m/w": np.zeros(2), "v/w": np.zeros(3)})


def test_fedadam_defaults_are_the_papers() -> None:
    fedadam = server_defaults("fedadam")
    assert (fedadam.learning_rate, fedadam.beta1, fedadam.beta2, fedadam.tau) == (0.01, 0.9, 0.99, 1e-3)
    assert make("fedadam").server.check().kind == "fedadam"
