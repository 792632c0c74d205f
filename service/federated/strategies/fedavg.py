"""FedAvg (McMahan et al. 2017): every participant trains from the global weights with the model's own
``train``; the server takes the sample-weighted mean of their weights (with a server learning rate
other than 1: ``global + lr * (mean - global)``)."""

from __future__ import annotations

from service.federated.strategies.base import Strategy


class FedAvg(Strategy):
    name = "fedavg"
    title = "FedAvg"
    private = True
