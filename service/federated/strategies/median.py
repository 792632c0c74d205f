"""FedMedian (Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
Rates"), as Flower's ``FedMedian``: the client aggregate is the coordinate-wise median of the
participants' weights, sample counts ignored (with an even number of updates, the mean of the two middle
values); the server then steps as FedAvg's (learning rate 1: the median itself).

A few participants sending anything at all move no coordinate past the honest ones' range.
"""

from __future__ import annotations

import numpy as np

from service.federated.checkpoints import Weights
from service.federated.strategies.base import Collector, RoundContext
from service.federated.strategies.buffered import BufferedStrategy, coordinatewise


class FedMedian(BufferedStrategy):
    name = "median"
    title = "FedMedian"

    def aggregate(self, collected: Collector, global_weights: Weights, context: RoundContext) -> Weights:
        return coordinatewise(collected, lambda block: np.median(block, axis=0))
