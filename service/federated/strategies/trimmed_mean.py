"""FedTrimmedAvg (Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
Rates"), as Flower's ``FedTrimmedAvg``: per coordinate, the ``int(beta * n)`` lowest and as many highest
of the ``n`` participants' values are cut and the rest averaged, sample counts ignored (SciPy's
``trim_mean``); ``beta`` is ``trim_fraction`` (default 0.2, Flower's). The server then steps as FedAvg's.
"""

from __future__ import annotations

import math

import numpy as np

from service.errors import InvalidRequest
from service.federated.checkpoints import Weights
from service.federated.strategies.base import Collector, RoundContext
from service.federated.strategies.buffered import BufferedStrategy, coordinatewise


def trimmed_mean(block: np.ndarray, beta: float) -> np.ndarray:
    """The mean over axis 0 of what is left when ``int(beta * n)`` values are cut from each end."""
    n = block.shape[0]
    cut = int(beta * n)
    return np.sort(block, axis=0)[cut : n - cut].mean(axis=0)


class FedTrimmedAvg(BufferedStrategy):
    name = "trimmed_mean"
    title = "FedTrimmedAvg"
    reads = ("trim_fraction",)

    def check(self) -> None:
        super().check()
        beta = self.settings.trim_fraction
        if (
            isinstance(beta, bool)
            or not isinstance(beta, int | float)
            or not (math.isfinite(beta) and 0 <= beta < 0.5)
        ):
            raise InvalidRequest(f"trim_fraction must be a number in [0, 0.5), got {beta!r}")

    def aggregate(self, collected: Collector, global_weights: Weights, context: RoundContext) -> Weights:
        beta = float(self.settings.trim_fraction)
        return coordinatewise(collected, lambda block: trimmed_mean(block, beta))
