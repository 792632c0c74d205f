"""FedNova (Wang et al. 2020, "Tackling the Objective Inconsistency Problem in Heterogeneous Federated
Optimization"), as NIID-Bench implements it: participants train as FedAvg's (plain local SGD, with the
model's own momentum ``rho``), and the server normalizes each update by its local steps ``tau_i``:

    a_i = (tau_i - rho * (1 - rho**tau_i) / (1 - rho)) / (1 - rho)      (rho = 0: a_i = tau_i)
    d_i = (x - y_i) / a_i,   p_i = n_i / n
    x_new = x - (sum p_i a_i) * (sum p_i d_i)

With every ``tau_i`` equal this is FedAvg's mean. The updates are not kept: the collector sums
``p_i y_i / a_i``, ``p_i / a_i`` and ``p_i a_i`` (one model in float64), and ``sum p_i d_i`` is
``(x * sum p_i / a_i - sum p_i y_i / a_i)``. ``x_new`` is the client aggregate, so a server learning
rate other than 1 scales the step (NIID-Bench has none). ``rho`` is read from the model's
``hyperparameters`` signature. A stale update counts as trained from the current ``x`` with its
``n_i`` discounted by ``staleness_weight``, as in FedAvg's mean.
"""

from __future__ import annotations

import math

import numpy as np

from service.errors import InvalidRequest, InvalidTensor
from service.federated.aggregation import checked_update, is_averaged
from service.federated.checkpoints import Weights, same_layout
from service.federated.mean import staleness_weight
from service.federated.participants import Update
from service.federated.strategies.base import Collector, RoundContext, Strategy


def normalizer(steps: int, momentum: float) -> float:
    """``a_i``: the sum over local steps of how much each step's gradient moved the weights (in units
    of the learning rate) under SGD with momentum ``rho``; ``steps`` itself when ``rho`` is 0."""
    rho = momentum
    return (steps - rho * (1.0 - rho**steps) / (1.0 - rho)) / (1.0 - rho)


class NovaCollector:
    """FedNova's running sums over a round's updates; memory is about one model in float64."""

    def __init__(self, momentum: float) -> None:
        self.momentum = momentum
        self._sums: dict[str, np.ndarray] = {}
        self._kept: Weights = {}
        self._count = 0
        self._inverse = 0.0  # sum p_i / a_i (p_i unnormalized: n_i)
        self._effective = 0.0  # sum p_i a_i
        self._samples = 0.0  # sum p_i

    @property
    def count(self) -> int:
        return self._count

    def add(self, update: Update, rounds_late: int = 0) -> None:
        if update.weights is None:
            raise InvalidTensor(f"participant '{update.device}' sent no weights")
        samples, steps = update.samples, update.steps
        if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
            raise InvalidRequest(
                f"fednova normalizes by local steps: participant '{update.device}' took {steps!r}"
            )
        values = checked_update(update.weights, samples, self._kept if self._count else None)
        weight = int(samples) * staleness_weight(rounds_late)
        a = normalizer(int(steps), self.momentum)
        for name in sorted(values):
            value = values[name]
            if not self._count:
                self._kept[name] = np.array(value, copy=True)
            if is_averaged(value):
                contribution = np.multiply(value, weight / a, dtype=np.float64)
                if self._count:
                    self._sums[name] += contribution
                else:
                    self._sums[name] = contribution
        self._count += 1
        self._inverse += weight / a
        self._effective += weight * a
        self._samples += weight

    def result(self, global_weights: Weights) -> Weights:
        """``x - tau_eff * d`` per floating tensor; other tensors as the first update has them."""
        if not self._count:
            raise InvalidRequest("no update has been added: there is nothing to aggregate")
        problem = same_layout(global_weights, self._kept)
        if problem is not None:
            raise InvalidTensor(f"the updates do not fit the global weights: {problem}")
        tau_effective = self._effective / self._samples
        result: Weights = {}
        for name in sorted(self._kept):
            kept = self._kept[name]
            if name not in self._sums:
                result[name] = kept.copy()
                continue
            x = np.asarray(global_weights[name], np.float64)
            d = (x * self._inverse - self._sums[name]) / self._samples
            result[name] = (x - tau_effective * d).astype(kept.dtype)
        return result


class FedNova(Strategy):
    name = "fednova"
    title = "FedNova"
    signatures = ("train", "hyperparameters")

    def collector(self, context: RoundContext) -> Collector:
        rho = context.hyperparameters().get("momentum", 0.0)
        if not (math.isfinite(rho) and 0 <= rho < 1):
            raise InvalidRequest(f"fednova needs the model's local momentum in [0, 1), got {rho!r}")
        return NovaCollector(rho)

    def aggregate(self, collected: Collector, global_weights: Weights, context: RoundContext) -> Weights:
        assert isinstance(collected, NovaCollector)
        return collected.result(global_weights)
