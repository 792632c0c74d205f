"""FedAvgM (Hsu et al. 2019): FedAvg with server momentum, ``m = momentum * m + delta``,
``new = global + lr * m``."""

from __future__ import annotations

import numpy as np

from service.federated.strategies.base import Strategy


class FedAvgM(Strategy):
    name = "fedavgm"
    title = "FedAvgM"
    private = True
    server_reads = ("learning_rate", "momentum")
    slots = ("m",)

    def rule(
        self, delta: np.ndarray, previous: dict[str, np.ndarray], number: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        m = self.server.momentum * previous["m"] + delta
        return m, {"m": m}
