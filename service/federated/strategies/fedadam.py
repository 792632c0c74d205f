"""FedAdam (Reddi et al. 2021, Algorithm 2): ``m = b1 * m + (1 - b1) * delta``;
``v = b2 * v + (1 - b2) * delta**2``; ``new = global + lr * m / (sqrt(v) + tau)``, without bias
correction, as in the paper (Flower adds one)."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from service.federated.strategies.base import Strategy


class FedAdam(Strategy):
    name = "fedadam"
    title = "FedAdam"
    private = True
    server_reads = ("learning_rate", "beta1", "beta2", "tau")
    slots = ("m", "v")
    server_defaults = MappingProxyType({"learning_rate": 0.01})

    def rule(
        self, delta: np.ndarray, previous: dict[str, np.ndarray], number: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        s = self.server
        m = s.beta1 * previous["m"] + (1.0 - s.beta1) * delta
        v = s.beta2 * previous["v"] + (1.0 - s.beta2) * np.square(delta)
        return m / (np.sqrt(v) + s.tau), {"m": m, "v": v}
