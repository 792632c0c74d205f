"""A round's mean of its participants' weights, stale updates discounted (``RoundMean``,
``staleness_weight``)."""

from __future__ import annotations

import numpy as np

from service.federated.aggregation import WeightedMean, is_averaged
from service.federated.checkpoints import Weights


def staleness_weight(rounds_late: int) -> float:
    """The factor on a stale update's samples: FedAsync's polynomial staleness function
    ``(1 + k) ** -a`` with ``a = 0.5`` (Xie, Koyejo and Gupta, "Asynchronous Federated Optimization",
    2019), ``k`` the rounds it is late."""
    return (1.0 + rounds_late) ** -0.5


class RoundMean:
    """A round's mean: updates on time weighted by their samples, stale ones by their samples times
    ``staleness_weight``. One ``WeightedMean`` per lateness (at most ``MAX_STALENESS + 1`` models),
    combined at the end; with no stale update it is the on-time mean itself, bit for bit."""

    def __init__(self) -> None:
        self._by_late: dict[int, WeightedMean] = {}

    @property
    def count(self) -> int:
        return sum(mean.count for mean in self._by_late.values())

    def add(self, weights: Weights, samples: int, rounds_late: int = 0) -> None:
        self._by_late.setdefault(rounds_late, WeightedMean()).add(weights, samples)

    def result(self) -> Weights:
        groups = sorted((k, m) for k, m in self._by_late.items() if m.count)
        if len(groups) == 1:
            return groups[0][1].result()
        parts = [(mean.result(), mean.samples * staleness_weight(k)) for k, mean in groups]
        total = sum(weight for _, weight in parts)
        combined: Weights = {}
        for name, value in parts[0][0].items():  # other tensors: the first update's, as in WeightedMean
            if is_averaged(value):
                summed = sum(np.asarray(result[name], np.float64) * weight for result, weight in parts)
                combined[name] = (np.asarray(summed) / total).astype(value.dtype)
            else:
                combined[name] = value
        return combined
