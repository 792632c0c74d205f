"""FedAdagrad (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2):
``m = b1 * m + (1 - b1) * delta``; ``v = v + delta**2``; ``new = global + lr * m / (sqrt(v) + tau)``.

Defaults as Flower's ``FedAdagrad``: ``lr`` (eta) 0.1 and ``beta1`` 0 (so ``m = delta``, Flower fixes
it there); ``tau`` 1e-3, Flower's current default (its legacy class had 1e-9, which makes the first step
``lr * sign(delta)`` for every weight, even those the participants barely moved).
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from service.federated.strategies.base import Strategy


class FedAdagrad(Strategy):
    name = "fedadagrad"
    title = "FedAdagrad"
    private = True
    server_reads = ("learning_rate", "beta1", "tau")
    slots = ("m", "v")
    server_defaults = MappingProxyType({"learning_rate": 0.1, "beta1": 0.0, "tau": 1e-3})

    def rule(
        self, delta: np.ndarray, previous: dict[str, np.ndarray], number: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        s = self.server
        m = s.beta1 * previous["m"] + (1.0 - s.beta1) * delta
        v = previous["v"] + np.square(delta)
        return m / (np.sqrt(v) + s.tau), {"m": m, "v": v}
