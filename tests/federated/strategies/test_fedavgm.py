"""FedAvgM's server momentum worked out by hand over two steps."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import InvalidRequest
from service.federated.strategies import make, server_defaults
from service.federated.strategies.base import ServerOptimizer


def test_fedavgm_over_two_steps() -> None:
    strategy = make("fedavgm", ServerOptimizer("fedavgm", learning_rate=0.5, momentum=0.5))
    g0 = {"w": np.array([1.0, 0.0], np.float32), "step": np.array(1, np.int32)}
    # Round 1: delta = [2, 4]; m = 0.5 * 0 + delta = [2, 4]; new = g0 + 0.5 * m = [2, 2].
    g1, s1 = strategy.step(g0, {"w": np.array([3.0, 4.0], np.float32), "step": np.array(2, np.int32)}, {})
    np.testing.assert_array_equal(g1["w"], [2.0, 2.0])
    assert list(s1) == ["m/w"]
    np.testing.assert_array_equal(s1["m/w"], [2.0, 4.0])
    # Round 2: delta = [4, -2] - [2, 2] = [2, -4]; m = 0.5 * [2, 4] + [2, -4] = [3, -2]; new = [3.5, 1].
    g2, s2 = strategy.step(g1, {"w": np.array([4.0, -2.0], np.float32), "step": np.array(3, np.int32)}, s1)
    np.testing.assert_array_equal(g2["w"], [3.5, 1.0])
    np.testing.assert_array_equal(s2["m/w"], [3.0, -2.0])
    assert g2["step"] == 3 and g2["step"].dtype == np.int32  # not stepped: the client mean's
    assert "m/step" not in s2


def test_a_state_of_another_strategy_is_refused() -> None:
    weights = {"w": np.zeros(2, np.float32)}
    with pytest.raises(InvalidRequest, match="fedavgm state"):
        make("fedavgm").step(weights, weights, {"m/w": np.zeros(2), "v/w": np.zeros(2)})


def test_fedavgm_defaults_are_the_papers() -> None:
    fedavgm = server_defaults("fedavgm")
    assert (fedavgm.learning_rate, fedavgm.momentum) == (1.0, 0.9)
    assert make("fedavgm").server.check().kind == "fedavgm"
