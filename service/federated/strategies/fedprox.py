"""FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks"): each participant trains
on its loss plus ``mu / 2 * ||w - global||**2``, through the model's ``train_prox`` signature (fed the
round's global weights and ``mu`` at every step: ``service.federated.client_side``); the server averages
as FedAvg does (NIID-Bench's server is FedAvg's)."""

from __future__ import annotations

import math

from service.errors import InvalidRequest
from service.federated.checkpoints import Weights
from service.federated.strategies.base import ClientTask, RoundContext, Strategy

MAX_MU = 1000.0


class FedProx(Strategy):
    name = "fedprox"
    title = "FedProx"
    private = True
    reads = ("proximal_mu",)
    signatures = ("train_prox",)

    def check(self) -> None:
        super().check()
        mu = self.settings.proximal_mu
        if (
            isinstance(mu, bool)
            or not isinstance(mu, int | float)
            or not (math.isfinite(mu) and 0 <= mu <= MAX_MU)
        ):
            raise InvalidRequest(f"proximal_mu must be a number in [0, {MAX_MU:g}], got {mu!r}")

    def task(self, global_weights: Weights, state: Weights, context: RoundContext) -> ClientTask:
        return ClientTask("train_prox", proximal_mu=float(self.settings.proximal_mu))
