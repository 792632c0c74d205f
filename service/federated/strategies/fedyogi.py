"""FedYogi (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2):
``m = b1 * m + (1 - b1) * delta``; ``v = v - (1 - b2) * delta**2 * sign(v - delta**2)``;
``new = global + lr * m / (sqrt(v) + tau)``. ``v`` grows by at most ``(1 - b2) * delta**2`` a step
(Adam's jumps to it), so the step size adapts more slowly. No bias correction; ``m`` and ``v`` start at
zero, as Flower's.

Defaults as Flower's ``FedYogi``: ``lr`` (eta) 0.01, ``beta1`` 0.9, ``beta2`` 0.99, ``tau`` 1e-3.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from service.federated.strategies.base import Strategy


class FedYogi(Strategy):
    name = "fedyogi"
    title = "FedYogi"
    private = True
    server_reads = ("learning_rate", "beta1", "beta2", "tau")
    slots = ("m", "v")
    server_defaults = MappingProxyType({"learning_rate": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3})

    def rule(
        self, delta: np.ndarray, previous: dict[str, np.ndarray], number: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        s = self.server
        m = s.beta1 * previous["m"] + (1.0 - s.beta1) * delta
        squared = np.square(delta)
        v = previous["v"] - (1.0 - s.beta2) * squared * np.sign(previous["v"] - squared)
        return m / (np.sqrt(v) + s.tau), {"m": m, "v": v}
