"""Federated strategies as plug-ins, one module each over ``base.Strategy``; this is their registry.

To add one: write ``service/federated/strategies/<name>.py`` with a ``Strategy`` subclass (its ``name``
and ``title``, and what it changes: ``task``, ``collector``, ``aggregate``, ``rule`` or ``combine``),
its test in ``tests/federated/strategies/test_<name>.py``, and list the class in ``STRATEGIES`` below.
The rounds API, ``fleet simulate`` and the dashboard take every name listed here.
"""

from __future__ import annotations

from dataclasses import replace

from service.errors import InvalidRequest
from service.federated.strategies.base import ServerOptimizer, Strategy, StrategySettings
from service.federated.strategies.fedadagrad import FedAdagrad
from service.federated.strategies.fedadam import FedAdam
from service.federated.strategies.fedavg import FedAvg
from service.federated.strategies.fedavgm import FedAvgM
from service.federated.strategies.fedbuff import FedBuff
from service.federated.strategies.fednova import FedNova
from service.federated.strategies.fedprox import FedProx
from service.federated.strategies.fedyogi import FedYogi
from service.federated.strategies.krum import Krum
from service.federated.strategies.median import FedMedian
from service.federated.strategies.scaffold import Scaffold
from service.federated.strategies.trimmed_mean import FedTrimmedAvg

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        FedAvg,
        FedAvgM,
        FedAdam,
        FedAdagrad,
        FedYogi,
        FedProx,
        Scaffold,
        FedNova,
        FedMedian,
        FedTrimmedAvg,
        Krum,
        FedBuff,
    )
}
NAMES: tuple[str, ...] = tuple(STRATEGIES)


def strategy_class(name: str) -> type[Strategy]:
    found = STRATEGIES.get(name)
    if found is None:
        raise InvalidRequest(f"unknown strategy {name!r}; choose one of {', '.join(NAMES)}")
    return found


def server_defaults(name: str) -> ServerOptimizer:
    """The server optimizer's settings strategy ``name`` starts from."""
    return replace(ServerOptimizer(kind=name), **dict(strategy_class(name).server_defaults))  # type: ignore[arg-type]


def make(
    name: str, server: ServerOptimizer | None = None, settings: StrategySettings | None = None
) -> Strategy:
    """Strategy ``name`` with ``server`` (None: its defaults) and ``settings``, checked."""
    strategy = strategy_class(name)(server or server_defaults(name), settings or StrategySettings())
    strategy.check()
    return strategy
