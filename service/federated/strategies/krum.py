"""Krum and multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent"), as Flower's ``Krum``: each update is scored by the sum of its squared distances (over
all floating weights) to its ``n - f - 2`` nearest others (at least 1), ``f`` being ``byzantine``; with
``krum_keep`` 0 the client aggregate is the best-scored update itself (Krum), with ``m`` > 0 the
sample-weighted mean of the ``m`` best (multi-Krum; stale ones discounted as in FedAvg's mean). Ties go
to the earlier participant. The server then steps as FedAvg's.

Krum's guarantee needs ``n > 2f + 2``; like Flower, a round with fewer scores by the nearest one.
"""

from __future__ import annotations

import numpy as np

from service.errors import InvalidRequest
from service.federated.checkpoints import Weights
from service.federated.mean import RoundMean
from service.federated.strategies.base import Collector, RoundContext
from service.federated.strategies.buffered import BufferedCollector, BufferedStrategy, buffered

MAX_COUNT = 1_000_000
"""The most ``byzantine`` or ``krum_keep`` may be (a round has at most this many participants)."""


def squared_distances(kept: BufferedCollector) -> np.ndarray:
    """``D[i, j] = ||w_i - w_j||**2`` over every floating tensor of updates ``i`` and ``j``."""
    n = kept.count
    distances = np.zeros((n, n))
    for name in sorted(kept.updates[0].weights):
        if not np.issubdtype(np.asarray(kept.updates[0].weights[name]).dtype, np.floating):
            continue
        for _, block in kept.blocks(name):
            for i in range(n):
                distances[i] += np.square(block - block[i]).sum(axis=1)
    return distances


def krum_scores(distances: np.ndarray, byzantine: int) -> np.ndarray:
    """Each update's sum of squared distances to its ``max(1, n - f - 2)`` nearest others."""
    n = distances.shape[0]
    nearest = max(1, n - byzantine - 2)
    return np.array([np.sort(np.delete(distances[i], i))[:nearest].sum() for i in range(n)])


def krum_choice(distances: np.ndarray, byzantine: int, keep: int) -> list[int]:
    """The updates Krum keeps, in participant order: the best-scored one (``keep`` 0), or the ``keep``
    best (all of them when there are fewer)."""
    order = np.argsort(krum_scores(distances, byzantine), kind="stable")
    return sorted(int(i) for i in order[: max(1, keep)])


class Krum(BufferedStrategy):
    name = "krum"
    title = "Krum"
    reads = ("byzantine", "krum_keep")

    def check(self) -> None:
        super().check()
        for field in ("byzantine", "krum_keep"):
            value = getattr(self.settings, field)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
                raise InvalidRequest(f"{field} must be an integer in [0, {MAX_COUNT}], got {value!r}")

    def aggregate(self, collected: Collector, global_weights: Weights, context: RoundContext) -> Weights:
        kept = buffered(collected)
        keep = self.settings.krum_keep
        chosen = krum_choice(squared_distances(kept), self.settings.byzantine, keep)
        if keep == 0:
            return {name: value.copy() for name, value in kept.updates[chosen[0]].weights.items()}
        mean = RoundMean()
        for i in chosen:
            update = kept.updates[i]
            mean.add(update.weights, update.samples, update.rounds_late)
        return mean.result()
